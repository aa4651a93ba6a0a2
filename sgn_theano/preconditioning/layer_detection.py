"""Find the layers of a user's graph whose curvature K-FAC factors (dense and im2col).

K-FAC (:mod:`sgn_theano.preconditioning.kronecker_factored`) needs, for a weight, the
matrix product it enters: :math:`s = a W` with :math:`a` the layer's input rows and
:math:`s` its pre-activations, and the bias added to :math:`s` if there is one. This
module reads them off the symbolic graph of ``outputs``, whichever way it was written:

* ``a @ W``, ``pt.dot(a, W)``, ``a @ W.T`` (a transposed weight of shape
  ``(d_out, d_in)``), then ``+ b`` broadcast over the rows, alone or in a sum of
  products (``x W + h U + b``: the bias joins the first weight's layer);
* the library's im2col convolution (:func:`sgn_theano.models.layers.conv2d`): the
  patches ``(B, H', W', k k C)`` times the filters reshaped to ``(k k C, F)``, which
  PyTensor's ``tensordot`` writes as one product of 2-D views; the patches at every
  position are rows of :math:`a` (Grosse and Martens 2016), and the bias is added to
  the 4-D result.

Products inside ``scan`` loops are found by
:mod:`sgn_theano.preconditioning.loop_layers`, with these helpers, and passed in as
``found``. A parameter used more than once, or in no known pattern, gets a diagonal
block; so does a bias whose weight is not found. :meth:`LayerMap.describe` says which parameter
got which block.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.tensor.blockwise import Blockwise
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.math import Dot
from pytensor.tensor.shape import Reshape, Shape, Shape_i
from pytensor.tensor.variable import TensorVariable
from pytensor.scalar import Add

__all__ = ["KroneckerLayer", "LayerMap", "bias_of", "find_layers", "graph_clients", "only_client",
           "product_of"]

#: How a weight is viewed as the ``(d_in, d_out)`` matrix of its product.
View = Literal["plain", "transposed", "reshaped"]


@dataclasses.dataclass(frozen=True)
class KroneckerLayer:
    """One product :math:`s = a\\, \\operatorname{view}(W) (+ b)` found in the graph."""

    weight: Variable  # the parameter W
    bias: Variable | None  # the parameter b added to s, shape (d_out,), or None
    inputs: TensorVariable  # a, shape (rows, d_in): one row per example (and position)
    preactivations: TensorVariable  # a @ view(W) in the graph, shape (..., d_out), before b
    view: View  # W itself, W.T, or W reshaped to (prod(shape[:-1]), shape[-1])
    shape: tuple[int, int]  # (d_in, d_out)
    in_loop: bool = False  # used at every step of a scan: rows of every step (loop_layers)

    @property
    def factor_shapes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Shapes of the input factor :math:`A` (with a row for the bias) and of the
        output factor :math:`S`."""
        rows = self.shape[0] + (self.bias is not None)
        return (rows, rows), (self.shape[1], self.shape[1])

    def as_matrix(self, block: TensorVariable) -> TensorVariable:
        """A block shaped like the weight, as the ``(d_in, d_out)`` matrix it enters."""
        if self.view == "transposed":
            return block.T
        if self.view == "reshaped":
            return block.reshape(self.shape)
        return block

    def as_weight(self, matrix: TensorVariable) -> TensorVariable:
        """The inverse of :meth:`as_matrix`."""
        if self.view == "transposed":
            return matrix.T
        if self.view == "reshaped":
            return matrix.reshape(tuple(self.weight.get_value(borrow=True).shape))
        return matrix


@dataclasses.dataclass(frozen=True)
class LayerMap:
    """The Kronecker-factored layers of a graph, and the parameters left diagonal."""

    layers: list[KroneckerLayer]
    diagonal: list[Variable]  # parameters with a diagonal block, in `params` order

    def describe(self, params: Sequence[Variable]) -> list[str]:
        """One line per parameter: its name and the block it got."""
        lines = []
        for index, param in enumerate(params):
            name = param.name or f"params[{index}]"
            block = "diagonal (gradient squares)"
            for number, layer in enumerate(self.layers):
                if param is layer.weight or param is layer.bias:
                    role = "weight" if param is layer.weight else "bias"
                    shared = ", shared across the steps of a scan" if layer.in_loop else ""
                    block = (f"Kronecker layer {number} ({role}; d_in={layer.shape[0]}, "
                             f"d_out={layer.shape[1]}, view={layer.view}{shared})")
            lines.append(f"{name}: {block}")
        return lines


def find_layers(outputs: TensorVariable, params: Sequence[Variable],
                found: Sequence[KroneckerLayer] = ()) -> LayerMap:
    """The dense and im2col layers of ``outputs``' graph, by their parameters.

    Parameters
    ----------
    outputs : TensorVariable
        The network outputs (for SGN, those of the curvature rows).
    params : list of shared variables
        The parameters; a weight must be a shared variable with a value, so that its
        shape is known.
    found : list of KroneckerLayer
        Layers found already (inside loops:
        :func:`sgn_theano.preconditioning.loop_layers.layers_in_loops`); their
        parameters are theirs.

    Returns
    -------
    LayerMap
        One :class:`KroneckerLayer` per weight used once in a matrix product (in
        ``params`` order), and every other parameter as a diagonal block.
    """
    clients = graph_clients([outputs])
    shapes = {param: tuple(param.get_value(borrow=True).shape) for param in params
              if hasattr(param, "get_value")}
    layers = list(found)
    claimed = {param for layer in found for param in (layer.weight, layer.bias)
               if param is not None}
    for param in params:
        layer = product_of(param, shapes.get(param), clients) if param not in claimed else None
        if layer is None:
            continue
        bias = bias_of(layer.preactivations, layer.shape[1], clients,
                       {p: shape for p, shape in shapes.items() if p not in claimed})
        if bias is not None:
            layer = dataclasses.replace(layer, bias=bias)
            claimed.add(bias)
        layers.append(layer)
        claimed.add(param)
    order = {id(param): index for index, param in enumerate(params)}
    layers.sort(key=lambda layer: order[id(layer.weight)])
    return LayerMap(layers, [param for param in params if param not in claimed])


def graph_clients(outputs: Sequence[Variable]) -> dict[Variable, list[tuple[Apply, int]]]:
    """``{variable: [(node, input index), ...]}`` over the graph of ``outputs``."""
    clients: dict[Variable, list[tuple[Apply, int]]] = {}
    stack, seen = list(outputs), set()
    while stack:
        variable = stack.pop()
        node = variable.owner
        if node is None or node in seen:
            continue
        seen.add(node)
        for index, value in enumerate(node.inputs):
            clients.setdefault(value, []).append((node, index))
            stack.append(value)
    return clients


def only_client(variable: Variable, clients) -> tuple[Apply, int] | None:
    """The one node that uses ``variable``'s values (reading its shape is no use)."""
    uses = [use for use in clients.get(variable, [])
            if not isinstance(use[0].op, (Shape, Shape_i))]
    return uses[0] if len(uses) == 1 else None


def _is_product(node: Apply) -> bool:
    op = node.op
    return isinstance(op, Dot) or isinstance(op, Blockwise) and isinstance(op.core_op, Dot)


def product_of(param: Variable, shape: tuple | None, clients) -> KroneckerLayer | None:
    """The product ``a @ view(param)`` that is the only use of ``param`` (a weight of
    ``shape``; ``None``: not a weight), if any."""
    if shape is None or len(shape) < 2:
        return None
    use = only_client(param, clients)
    view: View = "plain"
    if use is not None and isinstance(use[0].op, Reshape) and len(shape) > 2:
        target = _constant_shape(use[0].inputs[1])
        reshaped = (math.prod(shape[:-1]), shape[-1])
        if target is None or tuple(np.where(target == -1, reshaped, target)) != reshaped:
            return None
        view, use = "reshaped", only_client(use[0].outputs[0], clients)
    elif use is not None and isinstance(use[0].op, DimShuffle) and len(shape) == 2:
        if tuple(use[0].op.new_order) != (1, 0):
            return None
        view, use = "transposed", only_client(use[0].outputs[0], clients)
    if use is None or not _is_product(use[0]) or use[1] != 1 or len(shape) > 2 and view == "plain":
        return None
    node = use[0]
    inputs, product = node.inputs[0], node.outputs[0]
    matrix_shape = (math.prod(shape[:-1]), shape[-1]) if view != "transposed" else shape[::-1]
    if inputs.type.ndim > 2:  # a batched product: every leading axis is rows
        inputs = inputs.reshape((-1, matrix_shape[0]))
    elif inputs.type.ndim < 2:
        return None
    return KroneckerLayer(param, None, inputs, product, view, matrix_shape)


def _constant_shape(shape: Variable) -> np.ndarray | None:
    """The value of a reshape's target shape if it is a constant, else ``None``."""
    if isinstance(shape, Constant):
        return np.asarray(shape.data)
    try:
        return np.asarray(pt.get_underlying_scalar_constant_value(shape))[None]
    except Exception:  # noqa: BLE001 - any symbolic shape counts as unknown
        parts = getattr(shape.owner, "inputs", None) if shape.owner is not None else None
        if parts and all(isinstance(part, Constant) for part in parts):
            return np.array([int(part.data) for part in parts])
        return None


def bias_of(product: TensorVariable, width: int, clients, shapes: dict) -> Variable | None:
    """A variable ``b`` of ``shapes`` (``{variable: shape}``, the candidates), of shape
    ``(width,)``, added broadcast over every leading axis to ``product`` or to a reshape
    of it, alone or in a chain of sums (``x W + h U + b``) that is the product's only
    use; ``b`` is used there only."""
    use = only_client(product, clients)
    if use is not None and isinstance(use[0].op, Reshape):
        use = only_client(use[0].outputs[0], clients)
    while use is not None and isinstance(use[0].op, Elemwise) and isinstance(
            use[0].op.scalar_op, Add):
        node = use[0]
        for index, other in enumerate(node.inputs):
            if index != use[1] and _is_broadcast_bias(other, width, clients, shapes):
                return other.owner.inputs[0]
        use = only_client(node.outputs[0], clients)
    return None


def _is_broadcast_bias(term: Variable, width: int, clients, shapes: dict) -> bool:
    """``term`` is ``b`` of ``shapes`` with shape ``(width,)``, broadcast over leading
    axes by a ``DimShuffle``, and that is ``b``'s only use."""
    node = term.owner
    if node is None or not isinstance(node.op, DimShuffle):
        return False
    order, bias = tuple(node.op.new_order), node.inputs[0]
    return (bool(order) and order[-1] == 0 and all(axis == "x" for axis in order[:-1])
            and shapes.get(bias) == (width,) and only_client(bias, clients) is not None)
