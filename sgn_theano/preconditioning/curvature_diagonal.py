"""Estimates of the curvature's diagonal, averaged over steps, for preconditioning CG.

A diagonal preconditioner :math:`M = (\\hat D + \\rho)^{-a}` (Martens 2010) is only as
good as its :math:`\\hat D`. Two estimators are built here, each a list of blocks
shaped like the parameters:

* :func:`gradient_squares`: :math:`g \\odot g`, the mini-batch gradient squared, whose
  average is Adam's second moment: the cheapest, no curvature product;
* :func:`hutchinson_diagonal`: :math:`v \\odot (G v)` with a Rademacher probe
  :math:`v` (:math:`v_j = \\pm 1` with equal odds), an unbiased estimate of
  :math:`\\operatorname{diag}(G)` for any loss, since
  :math:`E[v_j (G v)_j] = \\sum_k G_{jk} E[v_j v_k] = G_{jj}`; it costs one more
  :math:`G v` (Bekas, Kokiopoulou, Saad 2007; Yao et al. 2021, AdaHessian).

An estimate is noisy; :class:`sgn_theano.SGN` keeps its bias-corrected exponential
average (:func:`sgn_theano.running_averages.bias_corrected_average`) in shared buffers that are
part of the step's state. The probes come from :func:`rademacher_probe`, a function of the step
count alone, so a resumed run and every process of a data-parallel one draw the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pytensor.tensor.variable import TensorVariable

from sgn_theano.block_layout import Blocks, Operator

__all__ = ["PROBE_KEY", "gradient_squares", "hutchinson_diagonal",
           "rademacher_probe"]


#: The key of the probes' random stream (with the step count).
PROBE_KEY = 0x5C9


def gradient_squares(gradients: Sequence[TensorVariable]) -> Blocks:
    """:math:`g \\odot g`, block by block: averaged, Adam's second moment."""
    return [g * g for g in gradients]


def hutchinson_diagonal(product: Operator, probe: Sequence[TensorVariable],
                        ) -> Blocks:
    """Hutchinson's estimate :math:`v \\odot (G v)` of :math:`\\operatorname{diag}(G)`.

    Parameters
    ----------
    product : callable
        ``blocks -> blocks``, the product :math:`G v` (e.g. a closure over
        :func:`sgn_theano.curvature.gauss_newton_product`).
    probe : list of TensorVariable
        :math:`v`, shaped like the parameters, entries :math:`\\pm 1` drawn
        independently with equal odds (:func:`rademacher_probe`).

    Returns
    -------
    list of TensorVariable
        :math:`v \\odot G v`, shaped like ``probe``; its expectation over :math:`v` is
        :math:`\\operatorname{diag}(G)`.
    """
    probe = list(probe)
    return [v * gv for v, gv in zip(probe, product(probe))]


def rademacher_probe(size: int, step: int, dtype: str) -> np.ndarray:
    """The probe of step ``step``: ``size`` entries :math:`\\pm 1` of ``dtype``.

    Drawn from NumPy's PCG64 seeded by ``(PROBE_KEY, step)``: the same on every
    machine and process, and after a resume.
    """
    bits = np.random.default_rng((PROBE_KEY, int(step))).integers(0, 2, size, dtype=np.int8)
    return (2 * bits - 1).astype(dtype)
