"""Losses convex in the network outputs, averaged over the batch.

Each loss records its closed-form output Hessian product ``u -> H_L u`` on the
returned variable (see :func:`sgn_theano.curvature.attach_hessian_product`), which
:func:`sgn_theano.curvature.loss_hessian_product` uses instead of differentiating
twice. ``B`` is the batch size (the first axis of ``outputs``).
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.raise_op import CheckAndRaise
from pytensor.tensor.variable import TensorVariable

from sgn_theano.curvature import attach_hessian_product, attach_hessian_root
from sgn_theano.errors import SGNInputError, SGNInputTypeError

__all__ = ["binary_cross_entropy", "softmax_cross_entropy", "squared_error"]

LABELS_OUT_OF_RANGE = ("A label is out of range: `softmax_cross_entropy` needs integer labels "
                       "in [0, C), C the number of logit columns.")


def _batch_size(outputs: TensorVariable) -> TensorVariable:
    return pt.cast(outputs.shape[0], outputs.dtype)


def _require_ndim(name: str, variable: TensorVariable, ndim: int):
    if variable.type.ndim != ndim:
        raise SGNInputError(f"`{name}` must have {ndim} dimensions, got {variable.type.ndim}.")


def softmax_cross_entropy(logits: TensorVariable, labels: TensorVariable) -> TensorVariable:
    """Mean softmax cross-entropy of integer class labels.

    .. math::

        L = -\\frac{1}{B} \\sum_b \\log \\operatorname{softmax}(z_b)_{y_b}, \\qquad
        H_L u = \\frac{1}{B} \\left(p \\odot u - p \\, (p^\\top u)\\right)_b,
        \\quad p = \\operatorname{softmax}(z).

    Parameters
    ----------
    logits : TensorVariable
        ``z``, shape ``(B, C)``.
    labels : TensorVariable
        Integer labels in ``[0, C)``, shape ``(B,)``; a label outside raises
        :class:`~sgn_theano.errors.SGNInputError` (a ``ValueError``) when the compiled
        function runs in C or NUMBA (before any update applies). JAX cannot raise inside
        a compiled function: there the loss of a batch with such a label is NaN, and
        :class:`~sgn_theano.optimizer.SGN` raises the same error after the step it
        rejects (:mod:`sgn_theano.compilation.jax_shapes`).
    """
    _require_ndim("logits", logits, 2)
    _require_ndim("labels", labels, 1)
    if not labels.dtype.startswith(("int", "uint")):
        raise SGNInputTypeError(f"`labels` must be integers, got dtype {labels.dtype}.")
    in_range = pt.all((labels >= 0) & (labels < logits.shape[1]))
    labels = CheckAndRaise(SGNInputError, LABELS_OUT_OF_RANGE)(labels, in_range)
    log_probabilities = pt.special.log_softmax(logits, axis=1)
    # int64 bounds: PyTensor's JAX backend hands int8 constants to jnp.arange, which
    # overflows for batches over 127 under numpy 2.
    zero, one = pt.constant(0, dtype="int64"), pt.constant(1, dtype="int64")
    rows = pt.arange(zero, pt.cast(labels.shape[0], "int64"), one)
    picked = log_probabilities[rows, labels]
    # NaN for a label out of range where the check cannot raise (JAX); 0 elsewhere.
    loss = -pt.mean(picked) + pt.switch(in_range, 0, np.nan).astype(logits.dtype)
    probabilities = pt.exp(log_probabilities)
    batch = _batch_size(logits)

    def hessian_product(u):
        weighted = probabilities * u
        return (weighted - probabilities * weighted.sum(axis=1, keepdims=True)) / batch

    def hessian_root(e):
        # R e = sqrt(p) e - p (sqrt(p) . e): R R^T = diag(p) - p p^T, as sum(p) = 1
        scaled = pt.sqrt(probabilities) * e
        return scaled - probabilities * scaled.sum(axis=1, keepdims=True)

    attach_hessian_root(loss, logits, hessian_root)
    return attach_hessian_product(loss, logits, hessian_product)


def squared_error(outputs: TensorVariable, targets: TensorVariable) -> TensorVariable:
    """Half the squared error, summed over output dimensions and averaged over the batch.

    .. math::

        L = \\frac{1}{2B} \\sum_b \\lVert z_b - t_b \\rVert^2, \\qquad H_L u = u / B.

    Parameters
    ----------
    outputs : TensorVariable
        ``z``, shape ``(B, ...)``.
    targets : TensorVariable
        ``t``, shaped like ``outputs``.
    """
    _require_ndim("targets", targets, outputs.type.ndim)
    batch = _batch_size(outputs)
    half = pt.constant(0.5, dtype=outputs.dtype)
    loss = half * pt.sum(pt.sqr(outputs - targets)) / batch
    attach_hessian_root(loss, outputs, lambda e: e)
    return attach_hessian_product(loss, outputs, lambda u: u / batch)


def binary_cross_entropy(logits: TensorVariable, targets: TensorVariable) -> TensorVariable:
    """Binary cross-entropy on logits, summed over outputs and averaged over the batch.

    .. math::

        L = \\frac{1}{B} \\sum \\left(\\operatorname{softplus}(z) - t z\\right), \\qquad
        H_L u = \\frac{1}{B} \\sigma(z) (1 - \\sigma(z)) \\odot u.

    Parameters
    ----------
    logits : TensorVariable
        ``z``, shape ``(B, ...)``.
    targets : TensorVariable
        ``t`` in ``[0, 1]``, shaped like ``logits``.
    """
    _require_ndim("targets", targets, logits.type.ndim)
    batch = _batch_size(logits)
    loss = pt.sum(pt.softplus(logits) - targets * logits) / batch
    probabilities = pt.sigmoid(logits)
    one = pt.constant(1.0, dtype=logits.dtype)
    attach_hessian_root(loss, logits, lambda e: pt.sqrt(probabilities * (one - probabilities)) * e)
    return attach_hessian_product(
        loss, logits, lambda u: probabilities * (one - probabilities) * u / batch
    )
