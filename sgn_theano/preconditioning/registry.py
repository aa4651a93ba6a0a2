"""The preconditioners :class:`sgn_theano.SGN` knows by name, and what each needs.

Each name maps to a :class:`Preconditioner`: how to build its product in the step's
graph from a :class:`PreconditionerInputs`, and what the optimizer must provide for it:
a Rademacher probe drawn on the host (shaped like the parameters or like the outputs),
averaged buffers in the step's state, and a refresh between steps. A new
preconditioner is one module and one entry in :data:`PRECONDITIONERS`.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import pytensor.tensor as pt
from pytensor.tensor.variable import TensorVariable

from sgn_theano.block_layout import Blocks, Operator
from sgn_theano.compat import isfinite
from sgn_theano.curvature import loss_hessian_operator, loss_hessian_root
from sgn_theano.preconditioning.curvature_diagonal import gradient_squares, hutchinson_diagonal
from sgn_theano.preconditioning.diagonal import curvature_preconditioner
from sgn_theano.preconditioning.kronecker_factored import (
    KroneckerPreconditioner,
    factor_statistics,
)
from sgn_theano.preconditioning.layer_detection import LayerMap
from sgn_theano.running_averages import bias_corrected_average

__all__ = ["PRECONDITIONERS", "Preconditioner", "PreconditionerInputs",
           "build_preconditioner"]

Built = tuple[Operator, OrderedDict]


class PreconditionerInputs(NamedTuple):
    """What a preconditioner may read from the step being built; every variable is
    symbolic."""

    params: list  # the shared parameters, the order of every list of blocks
    gradients: Blocks  # g on the whole batch (summed over processes)
    gradient_finite: TensorVariable  # dtype=bool: L and g are finite
    rhs: Blocks  # b, CG's right-hand side
    product: Operator  # v -> G v on the curvature rows (summed)
    damping: TensorVariable  # rho of this step
    state: Any  # sgn_theano.sgn_state.SGNState
    config: Any  # sgn_theano.sgn_config.SGNConfig
    probe: Any = None  # Rademacher: blocks like `params`, or a tensor like the outputs
    curvature: tuple | None = None  # (loss, outputs) of the curvature rows
    layers: LayerMap | None = None  # the Kronecker-factored layers (kfac)
    total: Operator | None = None  # sums statistics over processes


@dataclasses.dataclass(frozen=True)
class Preconditioner:
    """One named preconditioner: its builder and its needs."""

    build: Callable[[PreconditionerInputs], Built]
    probe: Literal["parameters", "outputs"] | None = None  # the host-drawn probe it takes
    averages_diagonal: bool = False  # keeps an averaged diagonal in the state
    kronecker_factored: bool = False  # keeps Kronecker factors and their inverses


def _floor(inputs: PreconditionerInputs) -> TensorVariable:
    epsilon = inputs.config.preconditioner_epsilon
    return inputs.damping if epsilon is None else pt.constant(epsilon, inputs.damping.dtype)


def _averaged(inputs: PreconditionerInputs, estimate: Blocks) -> tuple[Blocks, OrderedDict]:
    """``estimate`` averaged into the state's diagonal buffers (kept where finite)."""
    keep = inputs.gradient_finite & isfinite(sum(pt.sum(block) for block in estimate))
    state = inputs.state
    return bias_corrected_average(state.diagonal, state.diagonal_count, estimate,
                                  inputs.config.preconditioner_decay, keep)


def _diagonal(inputs: PreconditionerInputs, diagonal: Blocks) -> Operator:
    return curvature_preconditioner(diagonal, _floor(inputs),
                                    exponent=inputs.config.preconditioner_exponent)


def _jacobi(inputs: PreconditionerInputs) -> Built:
    return _diagonal(inputs, [b * b for b in inputs.rhs]), OrderedDict()


def _gradient_squares(inputs: PreconditionerInputs) -> Built:
    diagonal, updates = _averaged(inputs, gradient_squares(inputs.gradients))
    return _diagonal(inputs, diagonal), updates


def _hutchinson(inputs: PreconditionerInputs) -> Built:
    diagonal, updates = _averaged(inputs, hutchinson_diagonal(inputs.product, inputs.probe))
    return _diagonal(inputs, diagonal), updates


def _kronecker_factored(inputs: PreconditionerInputs) -> Built:
    """K-FAC on the layers found, averaged gradient squares on the other parameters."""
    state, layers = inputs.state, inputs.layers
    updates, weights = OrderedDict(), {}
    if layers.diagonal:
        position = {param: index for index, param in enumerate(inputs.params)}
        diagonal, updates = _averaged(inputs, gradient_squares(
            [inputs.gradients[position[param]] for param in layers.diagonal]))
        weights = dict(zip(layers.diagonal, _diagonal(inputs, diagonal).inverse_diagonal))
    if layers.layers:
        loss, outputs = inputs.curvature
        statistics = factor_statistics(layers.layers, outputs, inputs.probe,
                                       loss_hessian_operator(loss, outputs),
                                       loss_hessian_root(loss, outputs))
        if inputs.total is not None:
            statistics = inputs.total(statistics)
        # A NaN or inf entry in a factor's rows reaches its diagonal (a Gram matrix's
        # off-diagonal entries are bounded by its diagonal's): the traces tell, at a
        # fraction of the cost of summing every entry of the (785, 785) factors.
        keep = inputs.gradient_finite & isfinite(sum(pt.trace(s) for s in statistics))
        _, factor_updates = bias_corrected_average(state.factors, state.factor_count,
                                                   statistics, inputs.config.kfac_decay, keep)
        updates.update(factor_updates)
    return KroneckerPreconditioner(inputs.params, layers.layers, state.factor_inverses,
                                   weights), updates


#: The preconditioners :class:`sgn_theano.SGN` knows by name.
PRECONDITIONERS = {
    "jacobi": Preconditioner(_jacobi),
    "gradient_squares": Preconditioner(_gradient_squares, averages_diagonal=True),
    "hutchinson": Preconditioner(_hutchinson, probe="parameters", averages_diagonal=True),
    "kfac": Preconditioner(_kronecker_factored, probe="outputs", kronecker_factored=True),
}


def build_preconditioner(inputs: PreconditionerInputs) -> tuple[Callable | None, OrderedDict]:
    """The product :math:`M r` for ``inputs.config.preconditioner`` (a name of
    :data:`PRECONDITIONERS`, a callable, used as given, or ``None``), and the updates of
    the state it averages."""
    chosen = inputs.config.preconditioner
    if chosen is None or callable(chosen):
        return chosen, OrderedDict()
    return PRECONDITIONERS[chosen].build(inputs)
