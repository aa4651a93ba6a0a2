"""K-FAC layers inside ``scan`` loops: weights shared across the steps of a recurrence.

A recurrent network written with ``pytensor.scan`` uses its weights inside the loop's
inner function, once per step: :math:`s_t = x_t W + h_{t-1} U + b`, with ``W``, ``U``
and ``b`` passed to the loop as non-sequences (or found there by ``scan`` when the inner
function reads them from its closure). K-FAC's "expand" rule for shared weights
(Eschenhagen et al., NeurIPS 2023; Martens, Ba and Johnson, ICLR 2018, for RNNs) treats
every step as one more row of the factors, as a convolution's positions are:

.. math::

    A = \\frac{1}{m T} \\sum_{i, t} a_{i,t} a_{i,t}^\\top, \\qquad
    S = \\frac1m \\sum_{i, t} x_{i,t} x_{i,t}^\\top,

over the :math:`m` curvature rows and :math:`T` steps, with :math:`a_{i,t}` the
product's input at step :math:`t` (``x_t`` for ``W``, ``h_{t-1}`` for ``U``) and
:math:`x_{i,t}` the backward pass's vector at its pre-activation :math:`s_{i,t}`
(:func:`sgn_theano.preconditioning.kronecker_factored.factor_statistics`).

Neither is visible outside the loop, so the loop is rebuilt once, on the curvature
rows' graph: every product of such a weight gets a zero sequence added to it,
:math:`s_t = a_t W + \\epsilon_t`, whose gradient is :math:`x_{\\cdot,t}` at every
step, and returns its inputs :math:`a_t` as one more output. The rebuilt loop computes
what the user's does (plus those outputs), once per step, shared by the Gauss-Newton
products and the factors. Loops with ``while`` conditions, gradient-style (mit-mot)
states or untraced states are left as they are: their weights keep a diagonal block.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytensor
import pytensor.tensor as pt
from pytensor.graph.basic import Apply, Variable
from pytensor.graph.replace import clone_replace, graph_replace
from pytensor.scan.op import Scan
from pytensor.tensor.variable import TensorVariable

from sgn_theano.curvature import retagged
from sgn_theano.preconditioning.layer_detection import (
    KroneckerLayer,
    bias_of,
    graph_clients,
    only_client,
    product_of,
)

__all__ = ["layers_in_loops"]


def layers_in_loops(loss: TensorVariable, outputs: TensorVariable, params: Sequence[Variable]
                    ) -> tuple[tuple[TensorVariable, TensorVariable], list[KroneckerLayer]]:
    """The K-FAC layers of weights shared across the steps of ``scan`` loops, and
    ``loss`` and ``outputs`` rebuilt on loops that expose them.

    Parameters
    ----------
    loss : TensorVariable
        Scalar mean loss built from ``outputs`` (for SGN, the curvature rows').
    outputs : TensorVariable
        Network outputs, shape ``(m, ...)``.
    params : list of shared variables
        The parameters; those a loop takes (as non-sequences, or read from its inner
        function's closure) are looked for inside it.

    Returns
    -------
    ((loss, outputs), layers)
        ``loss`` and ``outputs`` on the rebuilt loops (the same variables when no loop
        has such a weight), with any closed-form output Hessian recorded on ``loss``
        carried over; and one :class:`KroneckerLayer` per weight used in exactly one
        matrix product inside exactly one loop, its ``inputs`` the ``(T m, d_in)``
        rows :math:`a_{i,t}` and its ``preactivations`` the ``(T, m, d_out)`` zero
        sequence :math:`\\epsilon` added to the product.
    """
    clients = graph_clients([outputs])
    replacements, layers = {}, []
    loops = {use[0]: None for param in params for use in clients.get(param, [])}
    for node in loops:  # in the parameters' order
        if isinstance(node.op, Scan) and _rebuildable(node):
            rebuilt = _exposed_loop(node, params, clients)
            if rebuilt is not None:
                replacements.update(rebuilt[0])
                layers += rebuilt[1]
    if not replacements:
        return (loss, outputs), []
    new_loss, new_outputs = graph_replace([loss, outputs], replacements, strict=False)
    return retagged(loss, outputs, new_loss, new_outputs), layers


def _rebuildable(node: Apply) -> bool:
    """A loop of sequences, mit-sot, sit-sot and nit-sot states and non-sequences only,
    with no ``while`` condition: what :func:`pytensor.scan` rebuilds from its parts."""
    op, info = node.op, node.op.info
    state_taps = sum(len(taps) for taps in info.mit_sot_in_slices) + len(info.sit_sot_in_slices)
    return (not info.as_while and not info.mit_mot_in_slices
            and len(op.inner_inputs) == info.n_seqs + state_taps + info.n_non_seqs
            and len(op.inner_outputs) == (len(info.mit_sot_in_slices)
                                          + len(info.sit_sot_in_slices) + info.n_nit_sot))


@dataclasses.dataclass(frozen=True)
class _InnerLayer:
    """A product ``a_t @ view(W) (+ b)`` found in a loop's inner graph."""

    weight: Variable  # the outer parameter
    bias: Variable | None  # the outer bias parameter, or None
    product: KroneckerLayer  # as found in the inner graph (inner variables)


def _exposed_loop(node: Apply, params, clients) -> tuple[dict, list[KroneckerLayer]] | None:
    """``({old loop output: new loop output}, layers)`` for the loop ``node`` rebuilt
    with its shared weights' products exposed, or ``None`` if it has none."""
    op = node.op
    outer_non_seqs = op.outer_non_seqs(node.inputs)
    inner_non_seqs = op.inner_non_seqs(op.inner_inputs)
    inner_of = {}
    for outer, inner in zip(outer_non_seqs, inner_non_seqs):
        if outer in params and only_client(outer, clients) is not None:
            inner_of[outer] = inner
    if not inner_of:
        return None
    inner_clients = graph_clients(op.inner_outputs)
    outer_of = {inner: outer for outer, inner in inner_of.items()}
    shapes = {inner: tuple(outer.get_value(borrow=True).shape)
              for outer, inner in inner_of.items()}
    found, claimed = [], set()
    for outer, inner in inner_of.items():
        product = product_of(inner, shapes[inner], inner_clients)
        if product is None:
            continue
        bias = bias_of(product.preactivations, product.shape[1], inner_clients, shapes)
        bias = bias if bias is not None and bias not in claimed else None
        claimed.update(variable for variable in (inner, bias) if variable is not None)
        found.append(_InnerLayer(outer, None if bias is None else outer_of[bias], product))
    if not found:
        return None
    return _rebuilt(node, found)


def _rebuilt(node: Apply, found: list[_InnerLayer]) -> tuple[dict, list[KroneckerLayer]]:
    """The loop rebuilt by :func:`pytensor.scan` with a zero sequence added to each
    found product and each product's inputs returned as one more output."""
    op, info = node.op, node.op.info
    n_steps = node.inputs[0]
    inner_inputs = op.inner_inputs
    inner_seqs = op.inner_seqs(inner_inputs)
    inner_states = op.inner_mitsot(inner_inputs) + op.inner_sitsot(inner_inputs)
    inner_non_seqs = op.inner_non_seqs(inner_inputs)
    outer_states = op.outer_mitsot(node.inputs) + op.outer_sitsot(node.inputs)
    state_taps = list(info.mit_sot_in_slices) + list(info.sit_sot_in_slices)
    # The first step's values of the inner inputs, for the zero sequences' shapes.
    first_step = dict(zip(inner_seqs, [seq[0] for seq in op.outer_seqs(node.inputs)]))
    first_step.update(zip(inner_non_seqs, op.outer_non_seqs(node.inputs)))
    position = 0
    for outer, taps in zip(outer_states, state_taps):
        for tap in taps:
            first_step[inner_states[position]] = outer[tap - min(taps)]
            position += 1
    zero_sequences, perturbations = [], []
    for layer in found:
        preactivations = layer.product.preactivations
        perturbation = preactivations.type()
        # Shaped like the product at the first step, rebuilt from the loop's outer inputs
        # (not from the inner types, whose static shapes may be the whole batch's).
        first = clone_replace(preactivations, replace=first_step, rebuild_strict=False)
        zero_sequences.append(pt.zeros((n_steps, *first.shape), dtype=preactivations.dtype))
        perturbations.append((preactivations, perturbation))
    exposed = clone_replace(
        op.inner_outputs + [layer.product.inputs for layer in found],
        replace={preactivations: preactivations + perturbation
                 for preactivations, perturbation in perturbations})
    placeholders = inner_seqs + [perturbation for _, perturbation in perturbations] \
        + inner_states + inner_non_seqs

    def step(*arguments):
        return clone_replace(exposed, replace=dict(zip(placeholders, arguments)))

    outputs_info = [dict(initial=outer[:-min(taps)], taps=list(taps)) if taps != (-1,)
                    else outer[0] for outer, taps in zip(outer_states, state_taps)]
    outputs_info += [None] * (info.n_nit_sot + len(found))
    results = pytensor.scan(step, sequences=op.outer_seqs(node.inputs) + zero_sequences,
                            outputs_info=outputs_info,
                            non_sequences=op.outer_non_seqs(node.inputs),
                            n_steps=n_steps, strict=True, return_updates=False,
                            truncate_gradient=op.truncate_gradient)
    results = results if isinstance(results, list) else [results]
    new_node = results[-1].owner
    replacements = dict(zip(node.outputs, new_node.outputs))
    layers = []
    for layer, zeros, rows in zip(found, zero_sequences, results[-len(found):]):
        product = layer.product
        layers.append(KroneckerLayer(layer.weight, layer.bias,
                                     rows.reshape((-1, product.shape[0])), zeros,
                                     product.view, product.shape, in_loop=True))
    return replacements, layers
