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

:func:`curvature_batch` restricts a loss and its outputs to the first rows of the
batch, for Gauss-Newton products on a curvature mini-batch (Martens 2010; Byrd, Chin,
Neveitt, Nocedal 2011).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import pytensor
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedInputError, NullTypeGradError
from pytensor.graph.basic import Variable
from pytensor.graph.replace import clone_replace, graph_replace
from pytensor.tensor.variable import TensorVariable

from sgn_theano.compat import pullback, pushforward
from sgn_theano.errors import SGNInputError
from sgn_theano.validation import (
    batched,
    check_computed_from,
    check_loss,
    check_matching_blocks,
)

__all__ = [
    "HESSIAN_PRODUCT_TAG",
    "HESSIAN_ROOT_TAG",
    "attach_hessian_product",
    "attach_hessian_root",
    "batch_rows",
    "curvature_batch",
    "curvature_rows",
    "first_rows",
    "gauss_newton_operator",
    "gauss_newton_product",
    "jacobian_vector_product",
    "loss_hessian_operator",
    "loss_hessian_product",
    "loss_hessian_root",
    "retagged",
    "vector_jacobian_product",
]

#: Name of the tag attribute under which a loss built by :mod:`sgn_theano.losses`
#: carries its closed-form output Hessian product: a pair ``(outputs, product)`` with
#: ``product(u) = H_L u`` for that exact ``outputs`` variable.
HESSIAN_PRODUCT_TAG = "output_hessian_product"
#: Likewise, a square root of the per-row output Hessians: ``(outputs, root)`` with
#: ``root(e)`` shaped like ``outputs``, row :math:`i` equal to :math:`R_i e_i` where
#: :math:`R_i R_i^\top = H_i`, the Hessian of row :math:`i`'s loss (the mean loss's
#: times the rows), so that :math:`E[\text{root}(e)_i \text{root}(e)_i^\top] = H_i`
#: for a Rademacher :math:`e` (K-FAC's output factor:
#: :mod:`sgn_theano.preconditioning.kronecker_factored`).
HESSIAN_ROOT_TAG = "output_hessian_root"


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


def attach_hessian_root(
    loss: TensorVariable,
    outputs: TensorVariable,
    root: Callable[[TensorVariable], TensorVariable],
) -> TensorVariable:
    """Record a closed-form square root of the per-row output Hessians on ``loss``
    (:data:`HESSIAN_ROOT_TAG`), used by :func:`loss_hessian_root` for this very
    ``outputs`` only."""
    setattr(loss.tag, HESSIAN_ROOT_TAG, (outputs, root))
    return loss


def loss_hessian_root(loss: TensorVariable, outputs: TensorVariable
                      ) -> Callable[[TensorVariable], TensorVariable] | None:
    """The square root recorded on ``loss`` for ``outputs`` (:data:`HESSIAN_ROOT_TAG`),
    or ``None``: a loss written by hand has none."""
    recorded = getattr(loss.tag, HESSIAN_ROOT_TAG, None)
    return recorded[1] if recorded is not None and recorded[0] is outputs else None


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
    return _pushforward(outputs, params, tangents)


def _pushforward(outputs, params: list, tangents: list) -> TensorVariable:
    try:
        return pushforward(outputs, params, tangents)
    except DisconnectedInputError as error:
        raise SGNInputError(f"`outputs` do not depend on every parameter: {error}") from None


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
    return _pullback(outputs, params, cotangents)


def _pullback(outputs, params: list, cotangents) -> list[TensorVariable]:
    try:
        return list(pullback(outputs, params, cotangents))
    except DisconnectedInputError as error:
        raise SGNInputError(f"`outputs` do not depend on every parameter: {error}") from None


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
    check_computed_from(loss, outputs)
    return _output_hessian_product(loss, outputs, vectors)


def loss_hessian_operator(loss: TensorVariable, outputs: TensorVariable
                          ) -> Callable[[TensorVariable], TensorVariable]:
    """``u -> H_L u`` as :func:`loss_hessian_product`, with no argument checked (for
    builders that checked ``loss`` and ``outputs`` once already)."""
    return lambda vectors: _output_hessian_product(loss, outputs, vectors)


def _output_hessian_product(loss, outputs, vectors) -> TensorVariable:
    recorded = getattr(loss.tag, HESSIAN_PRODUCT_TAG, None)
    if recorded is not None and recorded[0] is outputs:
        return recorded[1](vectors)
    try:
        loss_gradient = pytensor.grad(loss, outputs)
        return pytensor.grad(pt.sum(loss_gradient * vectors), outputs,
                             consider_constant=[vectors])
    except (NullTypeGradError, NotImplementedError) as error:
        raise SGNInputError(
            "SGN needs the Hessian of `loss` with respect to `outputs`, and PyTensor cannot "
            f"differentiate `loss` twice there: {error}. Write the loss with "
            "differentiable ops, or pass as `outputs` a variable past which it is.") from None


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
    params, vectors = _as_list(params), _as_list(vectors)
    check_loss(loss)
    check_computed_from(loss, outputs)
    check_matching_blocks("vectors", params, vectors, "parameters")
    return gauss_newton_operator(loss, outputs, params)(vectors)


def gauss_newton_operator(
    loss: TensorVariable, outputs: TensorVariable, params: Sequence[TensorVariable]
) -> Callable[[Sequence[TensorVariable]], list[TensorVariable]]:
    """``v -> G v`` as :func:`gauss_newton_product`, with no argument checked.

    For builders that checked ``loss``, ``outputs`` and ``params`` once already
    (:class:`sgn_theano.SGN` does, in :mod:`sgn_theano.validation`) and build many
    products from them: every call builds one more product graph.
    """
    params = _as_list(params)

    def product(vectors: Sequence[TensorVariable]) -> list[TensorVariable]:
        output_tangent = _pushforward(outputs, params, list(vectors))
        return _pullback(outputs, params,
                         _output_hessian_product(loss, outputs, output_tangent))
    return product


def curvature_rows(fraction: float, batch_size):
    """Rows of a curvature mini-batch: :math:`\\max(1, \\lceil f B \\rceil)`.

    ``f B`` within :math:`10^{-6}` of an integer counts as that integer, so that 0.3 of
    10 rows is 3 rows although ``0.3 * 10`` is ``3.0000000000000004`` in floating point.
    ``batch_size`` may be an integer or a symbolic integer scalar; the result is of its
    kind.
    """
    scaled = fraction * batch_size - 1e-6
    if isinstance(batch_size, Variable):
        return pt.maximum(1, pt.cast(pt.ceil(scaled), "int64"))
    return max(1, math.ceil(scaled))


def batch_rows(arrays: Sequence, fraction: float) -> tuple[int, int]:
    """The rows of a checked batch (the first axis of its :func:`~sgn_theano.validation.
    batched` arrays), and of its curvature mini-batch (:func:`curvature_rows`)."""
    rows = len(batched(arrays)[0])
    return rows, curvature_rows(fraction, rows)


def first_rows(inputs: Sequence[TensorVariable],
               fraction: float) -> dict[TensorVariable, TensorVariable]:
    """``{input: input[:m]}`` for every input with a batch axis (``ndim >= 1``), with
    :math:`m` = :func:`curvature_rows` of ``fraction`` and the batch size, the first axis
    of the first such input: the replacements of :func:`curvature_batch` for a graph
    that cuts its batch itself. (The JAX backend needs static slice bounds, so there the
    inputs need a static batch size; :class:`sgn_theano.SGN` cuts the arrays instead.)
    """
    with_rows = batched(inputs)
    if not with_rows:
        return {}
    rows = curvature_rows(fraction, with_rows[0].shape[0])
    return {variable: variable[:rows] for variable in with_rows}


def curvature_batch(
    loss: TensorVariable,
    outputs: TensorVariable,
    rows: Mapping[TensorVariable, TensorVariable],
) -> tuple[TensorVariable, TensorVariable]:
    """``loss`` and ``outputs`` rebuilt on a curvature mini-batch.

    ``rows`` maps each batch input to the variable holding the curvature rows (the first
    :math:`m` rows of the batch, from :func:`first_rows` or fed separately), so the
    returned loss is the mean loss over those rows, and its Gauss-Newton matrix
    :math:`G_m = J_m^\\top H_{L_m} J_m` is that of the sub-batch. A closed-form
    output Hessian recorded on ``loss`` (:mod:`sgn_theano.losses`) is rebuilt on the
    new outputs. In a compiled step the rows' forward pass is computed once and shared
    by every product. The rows are a sample of the batch only if the batch is in random
    order (as :func:`sgn_theano.data.minibatches` gives it); the model must treat rows
    independently (no batch statistics), and the loss must take its batch size from its
    inputs' shapes, not from a constant.

    Parameters
    ----------
    loss : TensorVariable
        Scalar mean loss over the batch, built from ``outputs``.
    outputs : TensorVariable
        Network outputs, shape ``(B, ...)``.
    rows : dict
        ``{batch input: curvature rows}``, each value shaped like its key but with
        :math:`m` rows; empty returns ``loss`` and ``outputs`` themselves.

    Returns
    -------
    (TensorVariable, TensorVariable)
        The loss (a scalar) and the outputs (shape ``(m, ...)``) of the curvature rows.
    """
    if not rows:
        return loss, outputs
    # Rebuilt without strict types, so an input with a static batch size may be replaced
    # by rows of another length (a strict rebuild would assert the old static shape).
    sub_loss, sub_outputs = clone_replace([loss, outputs], replace=dict(rows),
                                          rebuild_strict=False)
    return retagged(loss, outputs, sub_loss, sub_outputs)


def retagged(loss: TensorVariable, outputs: TensorVariable, new_loss: TensorVariable,
             new_outputs: TensorVariable) -> tuple[TensorVariable, TensorVariable]:
    """``(new_loss, new_outputs)``, a rebuild of ``loss`` and ``outputs`` (on other rows,
    other loops), with the closed forms recorded on ``loss`` for ``outputs``
    (:data:`HESSIAN_PRODUCT_TAG`, :data:`HESSIAN_ROOT_TAG`) recorded on ``new_loss`` for
    ``new_outputs``: a closed form is a function of the outputs alone."""
    for tag in (HESSIAN_PRODUCT_TAG, HESSIAN_ROOT_TAG):
        recorded = getattr(loss.tag, tag, None)
        if recorded is not None and recorded[0] is outputs:
            setattr(new_loss.tag, tag, (new_outputs, _rebuilt_on(recorded[1], outputs,
                                                                 new_outputs)))
    return new_loss, new_outputs


def _rebuilt_on(closed_form: Callable, outputs: TensorVariable, sub_outputs: TensorVariable
                ) -> Callable[[TensorVariable], TensorVariable]:
    """``closed_form`` (a function of ``outputs``) rebuilt on ``sub_outputs``.

    The closed form is rebuilt once per type of ``u``, on a stand-in for ``u``, and
    ``u`` is then put in place of the stand-in without copying the graph behind it.
    That graph may hold ``outputs`` too (a CG direction made from the whole batch's
    gradient), which must stay; and it holds every earlier CG iteration, so a copy per
    product would grow the step's graph geometrically with the iterations (and a
    ``scan`` in it with them: gigabytes at three iterations of a recurrent network).
    """
    rebuilt: dict = {}

    def on_rows(u):
        if u.type not in rebuilt:
            stand_in = u.type()
            rebuilt[u.type] = stand_in, clone_replace(
                closed_form(stand_in), replace={outputs: sub_outputs}, rebuild_strict=False)
        stand_in, product = rebuilt[u.type]
        return graph_replace(product, replace={stand_in: u}, strict=False)
    return on_rows
