"""The SGN step graph, stage by stage.

Each stage is a small function on symbolic variables, testable on its own:
:func:`right_hand_side` (:math:`b = -g`, or the bias-corrected gradient average),
:func:`search_direction` (CG on :math:`(G + \\rho I) d = b` by
:func:`gauss_newton_direction`, with the options' tolerance, warm start and
preconditioner),
:func:`choose_step_size` (Armijo backtracking, or the fixed step),
:func:`trust_ratio` (actual over predicted change), :func:`rejection_status` (the
first failed check, as a :class:`Rejection`) and :func:`next_damping`.
:func:`build_step` chains them into the outputs (:class:`StepOutputs`) and updates
of one compiled :class:`sgn_theano.SGN` step; the class docstring gives the math.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.replace import graph_replace
from pytensor.tensor.variable import TensorVariable

from sgn_theano.block_layout import Blocks, Operator, with_static_shapes
from sgn_theano.cg import CGResult, conjugate_gradient, dot
from sgn_theano.compat import isfinite
from sgn_theano.curvature import gauss_newton_operator
from sgn_theano.data_parallel import DataParallel
from sgn_theano.damping import (
    INCREASE_FACTOR,
    damping_floor,
    model_decrease_ratio,
    scheduled_damping,
    trust_region_damping,
)
from sgn_theano.line_search import armijo_backtracking
from sgn_theano.preconditioning.layer_detection import LayerMap
from sgn_theano.preconditioning.registry import PreconditionerInputs, build_preconditioner
from sgn_theano.sgn_config import SGNConfig
from sgn_theano.sgn_state import SGNState
from sgn_theano.running_averages import bias_corrected_average

__all__ = [
    "Rejection",
    "StepInfo",
    "StepOutputs",
    "StepSize",
    "accepted_step_updates",
    "build_step",
    "choose_step_size",
    "curvature_operator",
    "found_curvature",
    "gauss_newton_direction",
    "loss_and_gradients",
    "model_momentum_update",
    "next_damping",
    "rejection_status",
    "right_hand_side",
    "search_direction",
    "step_status",
    "trust_ratio",
]



class Rejection(enum.IntEnum):
    """Why a step was rejected (``ACCEPTED`` when it was not), in the order checked."""

    ACCEPTED = 0
    NON_FINITE_GRADIENT = 1
    NO_POSITIVE_CURVATURE = 2
    UNUSABLE_DIRECTION = 3
    NO_SUFFICIENT_DECREASE = 4
    NON_FINITE_LOSS_AFTER = 5
    RATIO_BELOW_THRESHOLD = 6

    @property
    def reason(self) -> str:
        """The reason in words, as :attr:`StepInfo.reason` gives it."""
        return _REASONS[self]


_REASONS = {
    Rejection.ACCEPTED: "",
    Rejection.NON_FINITE_GRADIENT: "non-finite loss or gradient",
    Rejection.NO_POSITIVE_CURVATURE: (
        "the damped Gauss-Newton matrix has no positive curvature along the right-hand "
        "side, so CG took no step: `loss` is not convex in `outputs` there (the "
        "Gauss-Newton matrix needs a loss convex in the outputs; a Student-t likelihood or "
        "a scale learned with the mean is not)"),
    Rejection.UNUSABLE_DIRECTION: "non-finite search direction, or not a descent direction",
    Rejection.NO_SUFFICIENT_DECREASE: "line search found no sufficient decrease",
    Rejection.NON_FINITE_LOSS_AFTER: "non-finite loss after the step",
    Rejection.RATIO_BELOW_THRESHOLD: "trust-region ratio below the rejection threshold",
}


class StepOutputs(NamedTuple):
    """What the compiled step returns, one field a symbolic scalar."""

    loss: TensorVariable  # L(theta) on the batch
    loss_after: TensorVariable  # L(theta + alpha d); nan where not evaluated
    damping: TensorVariable  # rho used for this step's direction
    ratio: TensorVariable  # r; nan where not evaluated or not what decided the step
    step_size: TensorVariable  # alpha
    cg_iterations: TensorVariable  # dtype=int64
    cg_residual_norm: TensorVariable  # ||b - (G + rho I) d||
    line_search_tries: TensorVariable  # dtype=int64
    status: TensorVariable  # dtype=int8: a Rejection code

    def packed(self, dtype: str) -> TensorVariable:
        """Every field in one vector of ``dtype`` (the model's), in field order: what the
        compiled step returns, so that its diagnostics reach the host in one transfer (a
        JAX-mode step on a GPU otherwise waits for the device once per field). The
        counts and the status are small integers, exact in float32."""
        return pt.stack([pt.cast(value, dtype) for value in self])


class StepInfo(NamedTuple):
    """Diagnostics of one :meth:`sgn_theano.SGN.step`."""

    loss: float  # L(theta) on the batch, before the step
    loss_after: float  # L(theta + alpha d) at the step size taken; nan if not evaluated
    damping: float  # rho used to solve for this step's direction
    ratio: float  # trust-region ratio r; nan if the loss after the step was not evaluated
    step_size: float  # alpha taken (the last one tried if the step was rejected)
    cg_iterations: int  # CG iterations that updated the direction
    cg_residual_norm: float  # ||-g - (G + rho I) d|| at the end of CG
    line_search_tries: int  # loss evaluations in the line search; 0 without one
    accepted: bool  # whether the parameters moved
    reason: str  # why the step was rejected; "" when accepted

    @classmethod
    def from_outputs(cls, values: StepOutputs | np.ndarray) -> StepInfo:
        """The diagnostics from the values of a compiled step's :class:`StepOutputs`, or
        from their :meth:`StepOutputs.packed` vector (a numpy array)."""
        fields = (values if isinstance(values, StepOutputs) else StepOutputs._make(values)
                  )._asdict()
        rejection = Rejection(int(fields.pop("status")))
        converted = {name: (int if name in ("cg_iterations", "line_search_tries") else float)(
            value) for name, value in fields.items()}
        return cls(**converted, accepted=rejection is Rejection.ACCEPTED,
                   reason=rejection.reason)


class StepSize(NamedTuple):
    """What :func:`choose_step_size` returns; every field is symbolic."""

    step_size: TensorVariable  # alpha
    loss_after: TensorVariable  # L(theta + alpha d); nan where not evaluated
    tries: TensorVariable  # dtype=int64: loss evaluations of the line search
    success: TensorVariable  # dtype=bool: whether the line search found a decrease


def curvature_operator(loss: TensorVariable, outputs: TensorVariable, params: Sequence,
                       parallel: DataParallel | None = None) -> Operator:
    """``v -> G v`` (:func:`sgn_theano.curvature.gauss_newton_operator`: the arguments
    were checked at :class:`sgn_theano.SGN`'s door), with ``parallel`` summed over the
    processes of a data-parallel step
    (:meth:`~sgn_theano.data_parallel.DataParallel.curvature_sum`)."""
    gauss_newton = gauss_newton_operator(loss, outputs, params)
    if parallel is None:
        return gauss_newton
    return lambda vectors: parallel.curvature_sum(gauss_newton(vectors))


def gauss_newton_direction(
    product: Operator,
    rhs: Blocks,
    damping: TensorVariable,
    *,
    max_cg_iters: int,
    cg_tol: float | TensorVariable = 0.0,
    x0: Blocks | None = None,
    preconditioner: Operator | None = None,
    progress_tol: float = 0.0,
    early_exit: bool = True,
) -> CGResult:
    """Solve :math:`(G + \\rho I) d = b` by conjugate gradient, symbolically.

    Parameters
    ----------
    product : callable
        ``v -> G v`` on blocks shaped like the parameters
        (:func:`curvature_operator`, :func:`sgn_theano.curvature.gauss_newton_operator`).
    rhs : list of TensorVariable
        :math:`b`, shaped like the parameters (``-g`` for the SGN direction), best with
        static shapes (:func:`sgn_theano.block_layout.with_static_shapes`): CG's flat
        vector is then cut at constant offsets.
    damping : scalar TensorVariable
        :math:`\\rho \\ge 0`.
    max_cg_iters, cg_tol, x0, preconditioner, progress_tol, early_exit
        As ``max_iters``, ``tol``, ``x0``, ``preconditioner``, ``progress_tol`` and
        ``early_exit`` of :func:`sgn_theano.cg.conjugate_gradient`.
    """

    def damped_product(vectors: Blocks) -> Blocks:
        return [gv + damping * vector for gv, vector in zip(product(vectors), vectors)]

    return conjugate_gradient(
        damped_product, rhs, max_iters=max_cg_iters, tol=cg_tol, x0=x0,
        preconditioner=preconditioner, progress_tol=progress_tol, early_exit=early_exit,
    )


def right_hand_side(gradients: Blocks, gradient_finite: TensorVariable, state: SGNState,
                    config: SGNConfig) -> tuple[Blocks, OrderedDict]:
    """:math:`b = -g`, or with momentum :math:`\\beta` the bias-corrected average
    :math:`b = -m_t / (1 - \\beta^t)`, :math:`m_t = \\beta m_{t-1} + (1 - \\beta) g`.

    Returns ``(b, updates)``: the updates of the momentum buffers and count, which keep
    their values when ``gradient_finite`` is false.
    """
    if not state.momentum:
        return [-g for g in gradients], OrderedDict()
    averages, updates = bias_corrected_average(state.momentum, state.momentum_count, gradients,
                                               config.momentum, gradient_finite)
    return [-average for average in averages], updates


def search_direction(product: Operator, rhs: Blocks, state: SGNState, config: SGNConfig,
                     early_exit: bool, preconditioner: Operator | None = None) -> CGResult:
    """CG on :math:`(G + \\rho I) d = b`, ``product`` giving :math:`G v`, with the
    options of ``config``: the tolerance relative to :math:`\\lVert b \\rVert`, the warm
    start from the last accepted direction, and ``preconditioner``
    (:func:`sgn_theano.preconditioning.registry.build_preconditioner`'s)."""
    rho, dtype = state.damping, state.damping.dtype
    x0 = None
    if state.direction:
        decay = pt.constant(config.warm_start, dtype=dtype)
        x0 = [decay * previous for previous in state.direction]
    tolerance = pt.constant(config.cg_tol, dtype=dtype) * pt.sqrt(dot(rhs, rhs))
    return gauss_newton_direction(
        product, with_static_shapes(rhs, state.params), rho, max_cg_iters=config.max_cg_iters,
        cg_tol=tolerance, x0=x0, preconditioner=preconditioner,
        progress_tol=config.cg_progress_tol, early_exit=early_exit,
    )


def model_momentum_update(direction: Blocks, gradients: Blocks, damped_curvature: TensorVariable,
                          product: Operator, state: SGNState,
                          ) -> tuple[Blocks, TensorVariable]:
    """K-FAC's momentum (Martens and Grosse 2015): the update
    :math:`\\delta = \\alpha d + \\mu \\delta_{t-1}` that minimizes the quadratic model
    :math:`g^\\top \\delta + \\tfrac12 \\delta^\\top (G + \\rho I) \\delta` on the span of
    the direction :math:`d` and the previous update :math:`\\delta_{t-1}`.

    With :math:`A = G + \\rho I` (``product`` gives :math:`G v`; ``damped_curvature`` is
    :math:`d^\\top A d`), :math:`(\\alpha, \\mu)` solves

    .. math::

        \\begin{pmatrix} d^\\top A d & d^\\top A \\delta_{t-1} \\\\
        d^\\top A \\delta_{t-1} & \\delta_{t-1}^\\top A \\delta_{t-1} \\end{pmatrix}
        \\begin{pmatrix} \\alpha \\\\ \\mu \\end{pmatrix}
        = -\\begin{pmatrix} g^\\top d \\\\ g^\\top \\delta_{t-1} \\end{pmatrix},

    or, where that matrix is singular to working precision (the first step, or
    :math:`\\delta_{t-1} \\parallel d`), :math:`\\mu = 0`,
    :math:`\\alpha = -g^\\top d / d^\\top A d`. Costs one :math:`G v`.

    Returns
    -------
    update : list of TensorVariable
        :math:`\\delta`, shaped like ``direction``.
    damped_curvature : scalar TensorVariable
        :math:`\\delta^\\top A \\delta`.
    """
    previous, rho = state.previous_update, state.damping
    a_previous = [gv + rho * p for gv, p in zip(product(previous), previous)]
    a11, a12, a22 = damped_curvature, dot(direction, a_previous), dot(previous, a_previous)
    b1, b2 = -dot(gradients, direction), -dot(gradients, previous)
    determinant = a11 * a22 - a12 * a12
    dtype = a11.dtype
    solvable = determinant > pt.constant(np.finfo(dtype).eps ** 0.5, dtype) * a11 * a22
    safe = pt.switch(solvable, determinant, 1)
    alpha = pt.switch(solvable, (b1 * a22 - b2 * a12) / safe, b1 / a11)
    mu = pt.switch(solvable, (a11 * b2 - a12 * b1) / safe, pt.constant(0, dtype))
    update = [alpha * d + mu * p for d, p in zip(direction, previous)]
    curvature = alpha * alpha * a11 + 2 * alpha * mu * a12 + mu * mu * a22
    return update, curvature


def choose_step_size(loss: TensorVariable, params: Sequence, direction: Blocks,
                     slope: TensorVariable, config: SGNConfig, early_exit: bool, *,
                     loss_now: TensorVariable | None = None,
                     total: Callable[[TensorVariable], TensorVariable] | None = None,
                     ) -> StepSize:
    """Armijo backtracking from ``config.learning_rate`` with ``config.line_search``;
    otherwise that step size, with the loss after it evaluated for the trust region.

    In a data-parallel step ``loss`` is this process's shard's, ``total`` sums a value
    of it over the processes and ``loss_now`` is the sum at the current parameters;
    by default the loss is the whole batch's.
    """
    dtype = loss.dtype
    total = total or (lambda value: value)
    loss_now = loss if loss_now is None else loss_now

    def loss_at(step_size):
        moved = {p: p + step_size * d for p, d in zip(params, direction)}
        return total(graph_replace(loss, replace=moved))

    learning_rate = pt.constant(config.learning_rate, dtype=dtype)
    if config.line_search:
        search = armijo_backtracking(loss_at, loss_now, slope, initial_step=learning_rate,
                                     early_exit=early_exit)
        return StepSize(search.step_size, search.loss, search.tries, search.success)
    loss_after = (loss_at(learning_rate) if config.trust_region
                  else pt.constant(np.nan, dtype=dtype))
    return StepSize(learning_rate, loss_after, pt.constant(0, "int64"),
                    pt.as_tensor_variable(np.array(True)))


def trust_ratio(change: TensorVariable, step_size: TensorVariable, slope: TensorVariable,
                damped_curvature: TensorVariable,
                config: SGNConfig) -> tuple[TensorVariable, TensorVariable]:
    """The ratio :math:`r` of the actual ``change`` of the loss to the model's
    prediction :math:`\\alpha g^\\top d + \\tfrac12 \\alpha^2 d^\\top (G + \\rho I) d`,
    and whether :math:`r \\ge` ``config.rejection_threshold`` (false for a nan
    :math:`r`: a model that predicts no decrease)."""
    predicted = step_size * slope + step_size**2 * damped_curvature / 2
    ratio = model_decrease_ratio(change, predicted)
    return ratio, ratio >= pt.constant(config.rejection_threshold, dtype=ratio.dtype)


def found_curvature(solution: CGResult, rhs: Blocks) -> TensorVariable:
    """False where CG's curvature guard stopped it before its first step on a nonzero
    right-hand side :math:`b`: :math:`b^\\top (G + \\rho I) b \\le 0`, no positive
    curvature along :math:`b`, which a loss convex in the outputs cannot give."""
    stopped_at_once = pt.eq(solution.iterations, 0) & pt.eq(dot(solution.x, solution.x), 0)
    return ~(stopped_at_once & pt.gt(dot(rhs, rhs), 0))


def rejection_status(checks: Sequence[tuple[Rejection, TensorVariable]]) -> TensorVariable:
    """The :class:`Rejection` code of the first check in ``checks`` that fails (a
    boolean scalar that is false), or ``ACCEPTED`` (an int8 scalar)."""
    status = pt.constant(Rejection.ACCEPTED.value, dtype="int8")
    for rejection, passed in reversed(checks):
        status = pt.switch(passed, status, pt.constant(rejection.value, dtype="int8"))
    return status


def next_damping(rho: TensorVariable, ratio: TensorVariable, accepted: TensorVariable,
                 state: SGNState, config: SGNConfig,
                 curvature_rows: TensorVariable | None = None) -> TensorVariable:
    """The damping of the next step: the trust-region rule on ``ratio``, floored by
    :func:`sgn_theano.damping.damping_floor` for ``curvature_rows`` rows (``None``:
    ``config.min_damping``), or the schedule's next value, raised to at least
    :math:`3\\rho/2` after a rejected step."""
    if config.trust_region:
        floor = config.min_damping if curvature_rows is None else damping_floor(
            config.min_damping, pt.cast(curvature_rows, rho.dtype), config.min_damping_rows)
        return trust_region_damping(rho, ratio, min_damping=floor,
                                    max_damping=config.max_damping)
    scheduled = pt.cast(scheduled_damping(
        state.step_count + 1, initial=config.damping, final=config.min_damping,
        steps=config.damping_decay_steps or 1, schedule=config.damping_schedule,
    ), rho.dtype)
    ceiling = pt.constant(max(config.max_damping, config.damping), dtype=rho.dtype)
    raised = pt.minimum(
        pt.maximum(scheduled, pt.constant(INCREASE_FACTOR, dtype=rho.dtype) * rho),
        ceiling)
    return pt.switch(accepted, scheduled, raised)


def accepted_step_updates(state: SGNState, status: TensorVariable, step_size: TensorVariable,
                          update_direction: Blocks, cg_direction: Blocks) -> OrderedDict:
    """The updates of the parameters, the warm start's and the momentum's buffers and the
    step count: :math:`\\theta + \\alpha \\delta` and the new buffers where ``status``
    is ``ACCEPTED``, the old values otherwise."""
    accepted = pt.eq(status, Rejection.ACCEPTED.value)
    updates = OrderedDict()
    for param, d in zip(state.params, update_direction):
        updates[param] = pt.switch(accepted, param + step_size * d, param)
    for previous, d in zip(state.direction, cg_direction):
        updates[previous] = pt.switch(accepted, d, previous)
    for previous, d in zip(state.previous_update, update_direction):
        updates[previous] = pt.switch(accepted, step_size * d, previous)
    # Counted through `status`, so the count runs after everything the batch feeds: an
    # error raised while the step runs (a label out of range) cannot leave it incremented,
    # even in backends that update shared variables in place early.
    updates[state.step_count] = state.step_count + pt.cast(pt.ge(status, 0), "int64")
    return updates


def loss_and_gradients(loss: TensorVariable, params: Sequence, parallel: DataParallel | None
                       ) -> tuple[TensorVariable, Blocks]:
    """The loss and gradient of the whole batch: ``loss`` and its gradient, or with
    ``parallel`` their sums over the processes from this shard's mean ``loss``
    (:meth:`~sgn_theano.data_parallel.DataParallel.loss_and_gradients`)."""
    if parallel is None:
        return loss, pytensor.grad(loss, params)
    return parallel.loss_and_gradients(loss, params)


def step_status(loss: TensorVariable, gradient_finite: TensorVariable, solution: CGResult,
                rhs: Blocks, direction: Blocks, damped_curvature: TensorVariable,
                slope: TensorVariable, size: StepSize, config: SGNConfig,
                ) -> tuple[TensorVariable, TensorVariable]:
    """The step's :class:`Rejection` code (:func:`rejection_status` of the checks in
    order) and its ratio :math:`r`, reported where it was computed and decided nothing
    else (the step accepted, or rejected by it), nan elsewhere."""
    checks = [
        (Rejection.NON_FINITE_GRADIENT, gradient_finite),
        (Rejection.NO_POSITIVE_CURVATURE, found_curvature(solution, rhs)),
        (Rejection.UNUSABLE_DIRECTION, isfinite(dot(direction, direction))
         & isfinite(damped_curvature) & (slope < 0)),
        (Rejection.NO_SUFFICIENT_DECREASE, size.success),
    ]
    nan = pt.constant(np.nan, dtype=loss.dtype)
    ratio = nan
    if config.evaluates_loss_after:
        ratio, ratio_ok = trust_ratio(size.loss_after - loss, size.step_size, slope,
                                      damped_curvature, config)
        checks += [(Rejection.NON_FINITE_LOSS_AFTER, isfinite(size.loss_after)),
                   (Rejection.RATIO_BELOW_THRESHOLD, ratio_ok)]
    status = rejection_status(checks)
    decided_by_ratio = (pt.eq(status, Rejection.ACCEPTED.value)
                        | pt.ge(status, Rejection.RATIO_BELOW_THRESHOLD.value))
    return status, pt.switch(decided_by_ratio, ratio, nan)


def build_step(loss: TensorVariable, outputs: TensorVariable, state: SGNState,
               config: SGNConfig, early_exit: bool,
               curvature: tuple[TensorVariable, TensorVariable] | None = None,
               parallel: DataParallel | None = None, probe=None,
               layers: LayerMap | None = None) -> tuple[StepOutputs, OrderedDict]:
    """The outputs and updates of one SGN step: the stages of this module in order, on
    one curvature operator built here.

    ``curvature`` is the ``(loss, outputs)`` pair of a curvature mini-batch
    (:func:`sgn_theano.curvature.curvature_batch`): the Gauss-Newton products, and so
    the curvature term of :func:`trust_ratio`, use it; the gradient, the loss and the
    line search use the whole batch. ``None`` uses the whole batch throughout.

    With ``parallel`` (:class:`sgn_theano.data_parallel.DataParallel`), ``loss`` is
    the mean over this process's shard of the batch, and the loss, the gradient, every
    :math:`G v` and every loss of the line search are summed over the processes
    (weighted by shard size); everything computed from them is then the same on every
    process, which takes the step one process would take on the whole batch.

    ``probe`` is the Rademacher probe a named preconditioner takes
    (:mod:`sgn_theano.preconditioning.registry`): Hutchinson's :math:`v`, blocks shaped
    like the parameters, or K-FAC's :math:`\\epsilon`, shaped like the curvature
    outputs; ``layers`` are K-FAC's layers, found in the curvature outputs' graph.
    """
    params, rho = state.params, state.damping
    curvature_loss, curvature_outputs = curvature or (loss, outputs)
    batch_loss, gradients = loss_and_gradients(loss, params, parallel)
    gradient_finite = isfinite(batch_loss) & isfinite(dot(gradients, gradients))
    rhs, updates = right_hand_side(gradients, gradient_finite, state, config)
    product = curvature_operator(curvature_loss, curvature_outputs, params, parallel)
    preconditioner, preconditioner_updates = build_preconditioner(PreconditionerInputs(
        params, gradients, gradient_finite, rhs, product, rho, state, config, probe=probe,
        curvature=(curvature_loss, curvature_outputs), layers=layers,
        total=None if parallel is None else parallel.curvature_sum))
    updates.update(preconditioner_updates)
    solution = search_direction(product, rhs, state, config, early_exit, preconditioner)
    direction = solution.x
    damped_curvature = dot(direction, rhs) - dot(direction, solution.residual)
    if config.model_momentum:
        direction, damped_curvature = model_momentum_update(direction, gradients,
                                                            damped_curvature, product, state)
    slope = dot(gradients, direction)
    size = choose_step_size(loss, params, direction, slope, config, early_exit,
                            loss_now=batch_loss,
                            total=None if parallel is None else parallel.total)
    status, ratio = step_status(batch_loss, gradient_finite, solution, rhs, direction,
                                damped_curvature, slope, size, config)
    curvature_rows = (curvature_outputs.shape[0] if parallel is None
                      else parallel.curvature_rows)
    updates[rho] = next_damping(rho, ratio, pt.eq(status, Rejection.ACCEPTED.value), state,
                                config, curvature_rows)
    updates.update(accepted_step_updates(state, status, size.step_size, direction, solution.x))
    step_outputs = StepOutputs(
        loss=batch_loss, loss_after=size.loss_after, damping=rho, ratio=ratio,
        step_size=size.step_size, cg_iterations=solution.iterations,
        cg_residual_norm=solution.residual_norm, line_search_tries=size.tries, status=status)
    return step_outputs, updates
