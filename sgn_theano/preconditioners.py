"""Preconditioners for conjugate gradient on :math:`(G + \\rho I) d = b`.

A preconditioner is a callable ``list -> list``: the product :math:`M r` with
:math:`M` symmetric positive definite, an approximation of :math:`(G + \\rho I)^{-1}`
(see :func:`sgn_theano.cg.conjugate_gradient`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytensor.tensor as pt
from pytensor.tensor.variable import TensorVariable

from sgn_theano.validation import check_float

__all__ = ["JACOBI_EXPONENT", "diagonal_preconditioner"]

Blocks = list[TensorVariable]

#: Martens' (2010) exponent of the diagonal preconditioner.
JACOBI_EXPONENT = 0.75


def diagonal_preconditioner(
    scale: Sequence[TensorVariable],
    damping: TensorVariable,
    *,
    exponent: float = JACOBI_EXPONENT,
) -> Callable[[Blocks], Blocks]:
    """Jacobi-style diagonal preconditioner :math:`M = (m^2 + \\rho)^{-a}`.

    .. math::

        (M r)_j = \\frac{r_j}{(m_j^2 + \\rho)^{a}}

    with :math:`m` a per-parameter gradient scale. The SGN authors take :math:`m` as
    the gradient average (the mini-batch gradient, or its momentum average); Martens
    (2010) uses the sum of squared per-example gradients in place of :math:`m^2`, with
    :math:`a = 3/4`. :math:`\\rho > 0` keeps :math:`M` positive definite.

    Parameters
    ----------
    scale : list of TensorVariable
        :math:`m`, shaped like the parameters.
    damping : scalar TensorVariable
        :math:`\\rho`.
    exponent : float
        :math:`a \\in [0, 1]`; 0 gives the identity.

    Returns
    -------
    callable
        ``r -> [r_i * (m_i^2 + rho)^-a]``.
    """
    exponent = check_float("exponent", exponent, low=0.0, high=1.0)
    inverse_diagonal = [
        pt.cast((m * m + damping) ** -exponent, m.dtype) for m in scale
    ]

    def precondition(residual: Blocks) -> Blocks:
        return [r * weight for r, weight in zip(residual, inverse_diagonal)]

    return precondition
