"""Preconditioners for conjugate gradient on :math:`(G + \\rho I) d = b`.

A preconditioner is a callable ``list -> list``: the product :math:`M r` with
:math:`M` symmetric positive definite, an approximation of :math:`(G + \\rho I)^{-1}`
(see :func:`sgn_theano.cg.conjugate_gradient`). CG works on the blocks' flat vector;
:func:`flat_preconditioner` gives the product there, for a diagonal preconditioner as one
elementwise product with a diagonal computed once, outside the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytensor.tensor as pt
from pytensor.tensor.variable import TensorVariable

from sgn_theano.block_layout import BlockLayout, Blocks, Operator
from sgn_theano.validation import check_float

__all__ = ["JACOBI_EXPONENT", "DiagonalPreconditioner", "curvature_preconditioner",
           "diagonal_preconditioner", "flat_preconditioner"]


#: Martens' (2010) exponent of the diagonal preconditioner.
JACOBI_EXPONENT = 0.75


class DiagonalPreconditioner:
    """The product :math:`M r` with a diagonal :math:`M`, stored as blocks.

    Calling it on blocks multiplies each by its diagonal; :func:`flat_preconditioner`
    multiplies the flat vector by the diagonal's flat vector.
    """

    def __init__(self, inverse_diagonal: Sequence[TensorVariable]):
        #: The diagonal of :math:`M`, shaped like the blocks it multiplies.
        self.inverse_diagonal = list(inverse_diagonal)

    def __call__(self, residual: Blocks) -> Blocks:
        return [r * weight for r, weight in zip(residual, self.inverse_diagonal)]


def flat_preconditioner(
    preconditioner: Operator | None, layout: BlockLayout
) -> Callable[[TensorVariable], TensorVariable]:
    """``preconditioner`` as a product on ``layout``'s flat vector: the identity for
    ``None``; one elementwise product for a :class:`DiagonalPreconditioner`; otherwise
    the callable on the blocks, its result flattened."""
    if preconditioner is None:
        return lambda r: r
    if isinstance(preconditioner, DiagonalPreconditioner):
        weights = layout.flatten(preconditioner.inverse_diagonal)
        return lambda r: r * weights
    return lambda r: layout.flatten(preconditioner(layout.split(r)))


def diagonal_preconditioner(
    scale: Sequence[TensorVariable],
    damping: TensorVariable,
    *,
    exponent: float = JACOBI_EXPONENT,
) -> DiagonalPreconditioner:
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
    DiagonalPreconditioner
        ``r -> [r_i * (m_i^2 + rho)^-a]``.
    """
    return curvature_preconditioner([m * m for m in scale], damping, exponent=exponent)


def curvature_preconditioner(
    diagonal: Sequence[TensorVariable],
    damping: TensorVariable,
    *,
    exponent: float = JACOBI_EXPONENT,
) -> DiagonalPreconditioner:
    """Diagonal preconditioner from a curvature diagonal, :math:`M = (D + \\rho)^{-a}`.

    .. math::

        (M r)_j = \\frac{r_j}{(D_j + \\rho)^{a}}

    with :math:`D` an estimate of :math:`\\operatorname{diag}(G)` (or of the
    gradient's second moment; :mod:`sgn_theano.preconditioning.curvature_diagonal`). :math:`a = 1` is
    Jacobi's preconditioner for :math:`G + \\rho I`; Martens (2010) takes
    :math:`a = 3/4`, which trusts a noisy :math:`D` less.

    Parameters
    ----------
    diagonal : list of TensorVariable
        :math:`D`, shaped like the parameters; negative entries (a noisy estimate's)
        count as 0, so :math:`M` is positive definite.
    damping : scalar TensorVariable
        :math:`\\rho > 0`, which keeps :math:`M` positive definite.
    exponent : float
        :math:`a \\in [0, 1]`; 0 gives the identity.

    Returns
    -------
    DiagonalPreconditioner
        ``r -> [r_i * (max(D_i, 0) + rho)^-a]``.
    """
    exponent = check_float("exponent", exponent, low=0.0, high=1.0)
    return DiagonalPreconditioner(
        [pt.cast(inverse_power(pt.maximum(d, 0) + damping, exponent), d.dtype)
         for d in diagonal])


def inverse_power(x: TensorVariable, exponent: float) -> TensorVariable:
    """:math:`x^{-a}`, by square roots for :math:`a \\in \\{1/4, 1/2, 3/4, 1\\}` (about ten
    times cheaper than ``pow`` per element), by ``pow`` otherwise."""
    root = pt.sqrt(x)
    powers = {0.25: lambda: pt.sqrt(root), 0.5: lambda: root,
              0.75: lambda: root * pt.sqrt(root), 1.0: lambda: x}
    if exponent in powers:
        return 1 / powers[exponent]()
    return x ** -exponent
