"""Symbolic curvature products for the generalized Gauss-Newton matrix.

For network outputs :math:`z = f(x; \\theta)` and a loss :math:`L(z, y)` that is
convex in :math:`z`, the generalized Gauss-Newton (GGN) matrix is

.. math::

    G = J^\\top H_L J, \\qquad J = \\frac{\\partial z}{\\partial \\theta},
    \\qquad H_L = \\frac{\\partial^2 L}{\\partial z^2}.

``G`` is never formed. Its product with a vector ``v`` (a list shaped like the
parameters) is built from three named parts, each usable on its own:

1. :func:`jacobian_vector_product`: ``J v`` (forward mode, PyTensor's ``pushforward``),
   shaped like ``outputs``;
2. :func:`loss_hessian_product`: ``H_L u``, shaped like ``outputs``;
3. :func:`vector_jacobian_product`: ``J^T u`` (reverse mode, ``pullback``), a list
   shaped like the parameters.

All products refer to the same forward graph, so when several of them are compiled
into one function PyTensor's merge rewrite computes the forward pass once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytensor
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedInputError, pullback, pushforward
from pytensor.tensor.variable import TensorVariable

from sgn_theano.validation import check_computed_from, check_loss, check_matching_blocks

__all__ = [
    "HESSIAN_PRODUCT_TAG",
    "attach_hessian_product",
    "gauss_newton_product",
    "jacobian_vector_product",
    "loss_hessian_product",
    "vector_jacobian_product",
]

#: Name of the tag attribute under which a loss built by :mod:`sgn_theano.losses`
#: carries its closed-form output Hessian product: a pair ``(outputs, product)`` with
#: ``product(u) = H_L u`` for that exact ``outputs`` variable.
HESSIAN_PRODUCT_TAG = "output_hessian_product"


def attach_hessian_product(
    loss: TensorVariable,
    outputs: TensorVariable,
    product: Callable[[TensorVariable], TensorVariable],
) -> TensorVariable:
    """Record a closed-form ``u -> H_L u`` on ``loss`` for :func:`loss_hessian_product`.

    The record is only used when :func:`loss_hessian_product` is asked for the Hessian
    with respect to this very ``outputs`` variable; any other request falls back to
    automatic differentiation, so a wrong pairing can never give a wrong product.
    """
    setattr(loss.tag, HESSIAN_PRODUCT_TAG, (outputs, product))
    return loss


def _as_list(variables) -> list:
    if isinstance(variables, (list, tuple)):
        return list(variables)
    return [variables]


def jacobian_vector_product(
    outputs: TensorVariable,
    params: Sequence[TensorVariable],
    tangents: Sequence[TensorVariable],
) -> TensorVariable:
    """Forward-mode product :math:`J v = \\sum_i \\partial z / \\partial \\theta_i \\, v_i`.

    Parameters
    ----------
    outputs : TensorVariable
        Network outputs ``z``, shape ``(B, ...)``.
    params : list of TensorVariable
        Parameters :math:`\\theta_i` (usually shared variables).
    tangents : list of TensorVariable
        :math:`v_i`, one per parameter and shaped like it.

    Returns
    -------
    TensorVariable
        ``J v``, shaped like ``outputs``.
    """
    params, tangents = _as_list(params), _as_list(tangents)
    check_matching_blocks("tangents", params, tangents, "parameters")
    try:
        return pushforward(outputs, params, tangents)
    except DisconnectedInputError as error:
        raise ValueError(f"`outputs` do not depend on every parameter: {error}") from None


def vector_jacobian_product(
    outputs: TensorVariable,
    params: Sequence[TensorVariable],
    cotangents: TensorVariable,
) -> list[TensorVariable]:
    """Reverse-mode product :math:`J^\\top u`.

    Parameters
    ----------
    outputs : TensorVariable
        Network outputs ``z``, shape ``(B, ...)``.
    params : list of TensorVariable
        Parameters :math:`\\theta_i`.
    cotangents : TensorVariable
        ``u``, shaped like ``outputs``.

    Returns
    -------
    list of TensorVariable
        :math:`(J^\\top u)_i`, one per parameter and shaped like it.
    """
    params = _as_list(params)
    check_matching_blocks("cotangents", [outputs], [cotangents], "outputs")
    try:
        return list(pullback(outputs, params, cotangents))
    except DisconnectedInputError as error:
        raise ValueError(f"`outputs` do not depend on every parameter: {error}") from None


def loss_hessian_product(
    loss: TensorVariable, outputs: TensorVariable, vectors: TensorVariable
) -> TensorVariable:
    """Product of the loss Hessian with respect to the outputs, :math:`H_L u`.

    Uses the closed form recorded by :mod:`sgn_theano.losses` when ``loss`` was built
    there from this ``outputs`` variable; otherwise differentiates twice,
    :math:`H_L u = \\nabla_z (\\nabla_z L \\cdot u)`, which costs a few output-sized
    operations (``u`` is treated as a constant).

    Parameters
    ----------
    loss : TensorVariable
        Scalar loss built from ``outputs``.
    outputs : TensorVariable
        Network outputs ``z``, shape ``(B, ...)``.
    vectors : TensorVariable
        ``u``, shaped like ``outputs``.

    Returns
    -------
    TensorVariable
        ``H_L u``, shaped like ``outputs``.
    """
    check_matching_blocks("vectors", [outputs], [vectors], "outputs")
    check_loss(loss)
    recorded = getattr(loss.tag, HESSIAN_PRODUCT_TAG, None)
    if recorded is not None and recorded[0] is outputs:
        return recorded[1](vectors)
    check_computed_from(loss, outputs)
    loss_gradient = pytensor.grad(loss, outputs)
    return pytensor.grad(pt.sum(loss_gradient * vectors), outputs, consider_constant=[vectors])


def gauss_newton_product(
    loss: TensorVariable,
    outputs: TensorVariable,
    params: Sequence[TensorVariable],
    vectors: Sequence[TensorVariable],
) -> list[TensorVariable]:
    """Generalized Gauss-Newton product :math:`G v = J^\\top H_L J v`.

    Parameters
    ----------
    loss : TensorVariable
        Scalar loss built from ``outputs``, convex in them.
    outputs : TensorVariable
        Where the Gauss-Newton split is made (logits, linear regression output),
        shape ``(B, ...)``.
    params : list of TensorVariable
        Parameters :math:`\\theta_i`.
    vectors : list of TensorVariable
        :math:`v_i`, one per parameter and shaped like it.

    Returns
    -------
    list of TensorVariable
        :math:`(G v)_i`, one per parameter and shaped like it.
    """
    output_tangent = jacobian_vector_product(outputs, params, vectors)
    return vector_jacobian_product(
        outputs, params, loss_hessian_product(loss, outputs, output_tangent)
    )
