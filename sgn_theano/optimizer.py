"""The stochastic generalized Gauss-Newton (SGN) optimizer.

Gargiani, Zanelli, Diehl, Hutter (2020), "On the promise of the stochastic generalized
Gauss-Newton method for training DNNs", arXiv:2006.02409.

On each mini-batch, with :math:`g` the gradient, :math:`G = J^\\top H_L J` the
generalized Gauss-Newton matrix (:mod:`sgn_theano.curvature`) and :math:`\\rho` the
damping, SGN approximately solves

.. math::

    (G + \\rho I) \\, d = -g

with at most ``max_cg_iters`` conjugate-gradient iterations (:mod:`sgn_theano.cg`) and
moves :math:`\\theta \\leftarrow \\theta + \\alpha d`. Two entry points share one
implementation (:func:`gauss_newton_direction`):

* :func:`sgn`, Lasagne-style updates with fixed damping and step size;
* :class:`SGN`, the full method, compiled into one function per step: trust-region
  damping, Armijo line search, momentum, warm start, step rejection.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.replace import graph_replace
from pytensor.tensor.variable import TensorVariable

from sgn_theano import validation
from sgn_theano.cg import CGResult, conjugate_gradient, dot
from sgn_theano.curvature import gauss_newton_product
from sgn_theano.damping import (
    LOWER_RATIO,
    SCHEDULES,
    model_decrease_ratio,
    scheduled_damping,
    trust_region_damping,
)
from sgn_theano.line_search import armijo_backtracking
from sgn_theano.modes import loops_can_exit_early
from sgn_theano.preconditioners import diagonal_preconditioner
from sgn_theano.updates import shared_zeros_like

__all__ = ["SGN", "StepInfo", "gauss_newton_direction", "sgn"]

Blocks = list[TensorVariable]

#: Why a step was rejected, indexed by the status code computed in the step graph.
REJECTION_REASONS = (
    "",
    "non-finite loss or gradient",
    "non-finite search direction, or not a descent direction",
    "line search found no sufficient decrease",
    "non-finite loss after the step",
    "trust-region ratio below the rejection threshold",
)

#: Factor raising the damping after a rejected step when the trust region is off.
REJECTION_DAMPING_FACTOR = 1.5


class StepInfo(NamedTuple):
    """Diagnostics of one :meth:`SGN.step`."""

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


def gauss_newton_direction(
    loss: TensorVariable,
    params: Sequence[TensorVariable],
    outputs: TensorVariable,
    rhs: Sequence[TensorVariable],
    damping: TensorVariable,
    *,
    max_cg_iters: int,
    cg_tol: float | TensorVariable = 0.0,
    x0: Sequence[TensorVariable] | None = None,
    preconditioner: Callable[[Blocks], Blocks] | None = None,
    progress_tol: float = 0.0,
    early_exit: bool = True,
) -> CGResult:
    """Solve :math:`(G + \\rho I) d = b` by conjugate gradient, symbolically.

    Parameters
    ----------
    loss, params, outputs
        As in :func:`sgn_theano.curvature.gauss_newton_product`.
    rhs : list of TensorVariable
        :math:`b`, shaped like ``params`` (``-g`` for the SGN direction).
    damping : scalar TensorVariable
        :math:`\\rho \\ge 0`.
    max_cg_iters, cg_tol, x0, preconditioner, progress_tol, early_exit
        As ``max_iters``, ``tol``, ``x0``, ``preconditioner``, ``progress_tol`` and
        ``early_exit`` of :func:`sgn_theano.cg.conjugate_gradient`.
    """

    def damped_product(vectors: Blocks) -> Blocks:
        products = gauss_newton_product(loss, outputs, params, vectors)
        return [product + damping * vector for product, vector in zip(products, vectors)]

    return conjugate_gradient(
        damped_product, rhs, max_iters=max_cg_iters, tol=cg_tol, x0=x0,
        preconditioner=preconditioner, progress_tol=progress_tol, early_exit=early_exit,
    )


def sgn(
    loss: TensorVariable,
    params: Sequence,
    outputs: TensorVariable,
    *,
    max_cg_iters: int = 3,
    damping: float | TensorVariable = 1e-3,
    learning_rate: float | TensorVariable = 1.0,
    early_exit: bool = True,
) -> OrderedDict:
    """SGN updates with fixed damping and step size, Lasagne style.

    ``param := param + learning_rate * d`` with ``d`` from ``max_cg_iters`` CG
    iterations on :math:`(G + \\rho I) d = -g` started at zero. ``damping`` and
    ``learning_rate`` may be floats or symbolic scalars (e.g. shared variables, to
    change them later without recompiling).

    Parameters
    ----------
    loss : TensorVariable
        Scalar mean loss built from ``outputs``.
    params : list of shared variables
        The parameters to update.
    outputs : TensorVariable
        Where the Gauss-Newton split is made (the logits for classification).
    max_cg_iters : int
        CG iterations per step, ``>= 1``.
    damping : float or scalar TensorVariable
        :math:`\\rho \\ge 0`.
    learning_rate : float or scalar TensorVariable
        :math:`\\alpha > 0`.
    early_exit : bool
        False for PyTensor's JAX backend (see :func:`sgn_theano.cg.conjugate_gradient`).

    Returns
    -------
    OrderedDict
        ``{param: updated expression}`` for ``pytensor.function(..., updates=...)``.

    Examples
    --------
    >>> updates = sgn(loss, params, logits, max_cg_iters=5)     # doctest: +SKIP
    >>> train = pytensor.function([x, y], loss, updates=updates)  # doctest: +SKIP
    """
    params = validation.check_params(params)
    dtype = validation.check_graph(validation.check_loss(loss), outputs, params)
    max_cg_iters = validation.check_integer("max_cg_iters", max_cg_iters, low=1)
    rho = validation.scalar_hyperparameter("damping", damping, dtype, low=0.0)
    alpha = validation.scalar_hyperparameter("learning_rate", learning_rate, dtype, low=0.0,
                                             low_open=True)
    gradients = pytensor.grad(loss, params)
    solution = gauss_newton_direction(
        loss, params, outputs, [-gradient for gradient in gradients], rho,
        max_cg_iters=max_cg_iters, early_exit=early_exit,
    )
    return OrderedDict(
        (param, param + alpha * direction) for param, direction in zip(params, solution.x)
    )


class SGN:
    """Stochastic generalized Gauss-Newton optimizer with step control.

    One call of :meth:`step` runs one compiled function on one mini-batch:

    1. loss :math:`L` and gradient :math:`g`; with momentum :math:`\\beta`, the
       right-hand side is the bias-corrected average
       :math:`m_t = \\beta m_{t-1} + (1 - \\beta) g`, :math:`b = -m_t / (1 - \\beta^t)`,
       otherwise :math:`b = -g`;
    2. at most ``max_cg_iters`` CG iterations on :math:`(G + \\rho I) d = b`
       (:func:`sgn_theano.cg.conjugate_gradient`), from the warm start
       :math:`d_0 = \\text{warm\\_start} \\cdot d_{\\text{previous}}`, stopping early
       once :math:`\\lVert r \\rVert \\le \\text{cg\\_tol} \\lVert b \\rVert`, on too
       little relative progress on the quadratic model (``cg_progress_tol``, Martens'
       rule), or on a direction without positive curvature; with
       ``preconditioner="jacobi"``, CG is preconditioned by
       :math:`M = (b^2 + \\rho)^{-3/4}` elementwise
       (:func:`sgn_theano.preconditioners.diagonal_preconditioner`);
    3. with ``line_search``, Armijo backtracking on the same batch from
       :math:`\\alpha_0` = ``learning_rate``: the largest
       :math:`\\alpha = \\alpha_0 2^{-i}`, :math:`i < 10`, with
       :math:`L(\\theta + \\alpha d) \\le L + 10^{-4} \\alpha g^\\top d`;
    4. when the loss after the step is evaluated (``line_search`` or
       ``trust_region``), the ratio of actual to predicted change
       :math:`r = (L(\\theta + \\alpha d) - L) / (\\alpha g^\\top d +
       \\tfrac12 \\alpha^2 d^\\top (G + \\rho I) d)`;
    5. the next damping: with ``trust_region``, :math:`\\rho \\leftarrow 3\\rho/2` if
       :math:`r < 1/4`, :math:`2\\rho/3` if :math:`r > 3/4`, clipped to
       ``[min_damping, max_damping]``; otherwise the ``damping_schedule`` value
       :math:`\\rho_{t+1}` (:func:`sgn_theano.damping.scheduled_damping`), or
       :math:`\\max(\\rho_{t+1}, 3\\rho/2)` after a rejected step;
    6. :math:`\\theta \\leftarrow \\theta + \\alpha d` unless the step is rejected, which
       leaves the parameters byte-identical and says why in :attr:`StepInfo.reason`:
       a non-finite loss or gradient; a non-finite direction or one that is not a
       descent direction (:math:`g^\\top d \\ge 0`); a failed line search; a non-finite
       loss after the step; or :math:`r` below ``rejection_threshold`` (or undefined,
       when the model predicts no decrease).

    Parameters
    ----------
    loss : TensorVariable
        Scalar mean loss over the batch, built from ``outputs``.
    params : list of shared variables
        Parameters to optimize, updated in place by :meth:`step`.
    outputs : TensorVariable
        Where the Gauss-Newton split is made (logits, linear regression output).
    inputs : list of TensorVariable
        The free symbolic inputs of ``loss`` (e.g. ``[x, y]``), in the order
        :meth:`step` takes the batch arrays.
    max_cg_iters : int
        Largest number of CG iterations per step, ``>= 1``.
    cg_tol : float
        Relative residual tolerance of CG, ``>= 0``.
    cg_progress_tol : float
        :math:`\\epsilon \\ge 0` of Martens' relative-progress rule (acts after more
        than 10 iterations); 0 turns it off.
    damping : float
        Initial :math:`\\rho` (``>= 0``; within ``[min_damping, max_damping]`` with
        ``trust_region`` or a decaying schedule).
    min_damping, max_damping : float
        Bounds of :math:`\\rho` under the trust-region rule; ``min_damping`` is also
        where a schedule decays to. The default floor 0.1 is measured: with a floor of
        1e-6, 10-20 CG iterations nearly solve each batch's model and over-fit that
        batch (Fashion-MNIST test accuracy stuck near 80% with k = 20); 0.1 fixes that
        and leaves k = 3 as good as before. Lower it for small, smooth full-batch
        problems that need long steps (README, "Robustness").
    trust_region : bool
        Adapt :math:`\\rho` by the trust-region rule.
    damping_schedule : {"constant", "linear", "cosine"}
        Damping when ``trust_region`` is off: constant, or decaying from ``damping``
        to ``min_damping`` over ``damping_decay_steps`` steps.
    damping_decay_steps : int, optional
        Length of a linear or cosine decay, ``>= 1``.
    line_search : bool
        Armijo backtracking from ``learning_rate``.
    learning_rate : float
        Step size :math:`\\alpha`, or the first one tried by the line search.
    rejection_threshold : float
        Steps with :math:`r` below it are rejected, in ``[0, 1/4)``; 0 rejects steps
        that increase the loss. Acts when :math:`r` is computed (``trust_region`` or
        ``line_search``).
    momentum : float
        :math:`\\beta \\in [0, 1)`, the gradient averaging of the right-hand side.
    preconditioner : "jacobi" or callable, optional
        ``"jacobi"`` for the diagonal preconditioner above, or a callable
        ``list -> list``: a symbolic product with an SPD approximation of
        :math:`(G + \\rho I)^{-1}`, handed to :func:`sgn_theano.cg.conjugate_gradient`.
    warm_start : float
        Decay :math:`\\in [0, 1]` applied to the previous accepted direction to start
        CG (Martens uses 0.95); 0 (the default) starts from zero. Off by default: it
        costs one more :math:`G v` per step and, measured on Fashion-MNIST (batch 1000,
        a fresh batch each step), did not pay for it.
    mode : str or pytensor Mode, optional
        Compile mode: a name of :data:`sgn_theano.modes.MODES` (``"C"``, ``"NUMBA"``,
        ``"JAX"``...) or any PyTensor mode. Default: ``"C"`` linked to OpenBLAS where
        it is found (the fastest to compile, as fast to run), else ``"NUMBA"``.
    """

    def __init__(
        self,
        loss: TensorVariable,
        params: Sequence,
        outputs: TensorVariable,
        inputs: Sequence[TensorVariable],
        *,
        max_cg_iters: int = 3,
        cg_tol: float = 1e-6,
        cg_progress_tol: float = 5e-4,
        damping: float = 0.1,
        min_damping: float = 0.1,
        max_damping: float = 1e6,
        trust_region: bool = True,
        damping_schedule: str = "constant",
        damping_decay_steps: int | None = None,
        line_search: bool = True,
        learning_rate: float = 1.0,
        rejection_threshold: float = 0.0,
        momentum: float = 0.0,
        preconditioner: str | Callable[[Blocks], Blocks] | None = None,
        warm_start: float = 0.0,
        mode=None,
    ):
        self.params = validation.check_params(params)
        self.inputs = validation.check_inputs(inputs, validation.check_loss(loss))
        self.dtype = validation.check_graph(loss, outputs, self.params)
        self.config = self._check_config(
            max_cg_iters=max_cg_iters, cg_tol=cg_tol, cg_progress_tol=cg_progress_tol,
            damping=damping, min_damping=min_damping, max_damping=max_damping,
            trust_region=trust_region, damping_schedule=damping_schedule,
            damping_decay_steps=damping_decay_steps, line_search=line_search,
            learning_rate=learning_rate, rejection_threshold=rejection_threshold,
            momentum=momentum, warm_start=warm_start, preconditioner=preconditioner,
        )
        mode = validation.check_mode(mode)
        self._early_exit = loops_can_exit_early(mode)
        self._state = self._create_state()
        outputs_list, updates = self._build_step(loss, outputs, preconditioner)
        self._step = pytensor.function(
            self.inputs, outputs_list, updates=updates, mode=mode, on_unused_input="ignore"
        )

    # -- construction ---------------------------------------------------------
    @staticmethod
    def _check_config(**config) -> dict:
        check = validation.check_float
        config["max_cg_iters"] = validation.check_integer(
            "max_cg_iters", config["max_cg_iters"], low=1)
        config["cg_tol"] = check("cg_tol", config["cg_tol"], low=0.0)
        config["cg_progress_tol"] = check("cg_progress_tol", config["cg_progress_tol"],
                                          low=0.0)
        config["learning_rate"] = check("learning_rate", config["learning_rate"], low=0.0,
                                        low_open=True)
        config["rejection_threshold"] = check(
            "rejection_threshold", config["rejection_threshold"], low=0.0, high=LOWER_RATIO,
            high_open=True)
        config["momentum"] = check("momentum", config["momentum"], low=0.0, high=1.0,
                                   high_open=True)
        config["warm_start"] = check("warm_start", config["warm_start"], low=0.0, high=1.0)
        preconditioner = config["preconditioner"]
        if callable(preconditioner):
            config["preconditioner"] = "custom"
        elif not (preconditioner is None or isinstance(preconditioner, str)
                  and preconditioner == "jacobi"):
            raise TypeError("`preconditioner` must be 'jacobi', a callable list -> list, or "
                            f"None, got {preconditioner!r}.")
        for flag in ("trust_region", "line_search"):
            if not isinstance(config[flag], bool):
                raise TypeError(f"`{flag}` must be True or False, got {config[flag]!r}.")
        config["min_damping"] = check("min_damping", config["min_damping"], low=0.0,
                                      low_open=True)
        config["max_damping"] = check("max_damping", config["max_damping"], low=0.0,
                                      low_open=True)
        if config["min_damping"] > config["max_damping"]:
            raise ValueError(f"`min_damping` ({config['min_damping']}) exceeds `max_damping` "
                             f"({config['max_damping']}).")
        schedule, decay_steps = config["damping_schedule"], config["damping_decay_steps"]
        if schedule not in SCHEDULES:
            raise ValueError(f"`damping_schedule` must be one of {SCHEDULES}, got "
                             f"{schedule!r}.")
        decaying = schedule != "constant"
        if decaying and config["trust_region"]:
            raise ValueError(f"`damping_schedule={schedule!r}` needs `trust_region=False` "
                             "(the trust region adapts the damping itself).")
        if decaying:
            config["damping_decay_steps"] = validation.check_integer(
                "damping_decay_steps", decay_steps, low=1)
        elif decay_steps is not None:
            raise ValueError("`damping_decay_steps` applies to the 'linear' and 'cosine' "
                             "damping schedules only.")
        if config["trust_region"] or decaying:
            config["damping"] = check(
                "damping", config["damping"], low=config["min_damping"],
                high=config["max_damping"])
        else:
            config["damping"] = check("damping", config["damping"], low=0.0)
        return config

    def _create_state(self) -> dict[str, list]:
        """Every shared variable the step reads or writes, by role."""
        state = {
            "params": self.params,
            "damping": [pytensor.shared(np.asarray(self.config["damping"], self.dtype),
                                        name="damping")],
            "step_count": [pytensor.shared(np.int64(0), name="step_count")],
        }
        if self.config["momentum"] > 0:
            state["momentum"] = [shared_zeros_like(p, "momentum") for p in self.params]
            state["momentum_count"] = [pytensor.shared(np.int64(0), name="momentum_count")]
        if self.config["warm_start"] > 0:
            state["direction"] = [shared_zeros_like(p, "direction") for p in self.params]
        return state

    def _constant(self, value: float) -> TensorVariable:
        return pt.constant(value, dtype=self.dtype)

    def _build_step(self, loss, outputs, preconditioner):
        config, state, params = self.config, self._state, self.params
        (rho,) = state["damping"]
        gradients = pytensor.grad(loss, params)
        gradient_finite = pt.isfinite(loss) & pt.isfinite(dot(gradients, gradients))
        updates = OrderedDict()

        if config["momentum"] > 0:
            beta = self._constant(config["momentum"])
            (count,) = state["momentum_count"]
            new_count = count + 1
            averages = [beta * m + (1 - beta) * g for m, g in zip(state["momentum"], gradients)]
            correction = 1 - beta ** pt.cast(new_count, self.dtype)
            rhs = [-average / correction for average in averages]
            for m, average in zip(state["momentum"], averages):
                updates[m] = pt.switch(gradient_finite, average, m)
            updates[count] = pt.switch(gradient_finite, new_count, count)
        else:
            rhs = [-g for g in gradients]

        x0 = None
        if config["warm_start"] > 0:
            decay = self._constant(config["warm_start"])
            x0 = [decay * previous for previous in state["direction"]]
        if preconditioner == "jacobi":
            preconditioner = diagonal_preconditioner(rhs, rho)
        tolerance = self._constant(config["cg_tol"]) * pt.sqrt(dot(rhs, rhs))
        solution = gauss_newton_direction(
            loss, params, outputs, rhs, rho, max_cg_iters=config["max_cg_iters"],
            cg_tol=tolerance, x0=x0, preconditioner=preconditioner,
            progress_tol=config["cg_progress_tol"], early_exit=self._early_exit,
        )
        direction = solution.x
        slope = dot(gradients, direction)
        damped_curvature = dot(direction, rhs) - dot(direction, solution.residual)
        direction_usable = (pt.isfinite(dot(direction, direction))
                            & pt.isfinite(damped_curvature) & (slope < 0))

        def loss_at(step_size):
            moved = {p: p + step_size * d for p, d in zip(params, direction)}
            return graph_replace(loss, replace=moved)

        learning_rate = self._constant(config["learning_rate"])
        nan = self._constant(np.nan)
        true = pt.as_tensor_variable(np.array(True))
        if config["line_search"]:
            search = armijo_backtracking(loss_at, loss, slope, initial_step=learning_rate,
                                         early_exit=self._early_exit)
            step_size, loss_after, tries, search_ok = (
                search.step_size, search.loss, search.tries, search.success)
        else:
            step_size, tries, search_ok = learning_rate, pt.constant(0, "int64"), true
            loss_after = loss_at(step_size) if config["trust_region"] else nan
        evaluated = config["line_search"] or config["trust_region"]
        after_finite = pt.isfinite(loss_after) if evaluated else true
        if evaluated:
            predicted = step_size * slope + step_size**2 * damped_curvature / 2
            ratio = model_decrease_ratio(loss_after - loss, predicted)
            # `not (r >= threshold)` also rejects an undefined (nan) ratio.
            ratio_ok = ratio >= self._constant(config["rejection_threshold"])
        else:
            ratio, ratio_ok = nan, true

        status = pt.switch(
            pt.invert(gradient_finite), 1,
            pt.switch(pt.invert(direction_usable), 2,
                      pt.switch(pt.invert(search_ok), 3,
                                pt.switch(pt.invert(after_finite), 4,
                                          pt.switch(pt.invert(ratio_ok), 5, 0)))))
        accepted = pt.eq(status, 0)
        ratio = pt.switch(pt.ge(status, 5) | accepted, ratio, nan)
        updates[rho] = self._next_damping(rho, ratio, accepted)

        for param, d in zip(params, direction):
            updates[param] = pt.switch(accepted, param + step_size * d, param)
        if config["warm_start"] > 0:
            for previous, d in zip(state["direction"], direction):
                updates[previous] = pt.switch(accepted, d, previous)
        (step_count,) = state["step_count"]
        # Counted through `status`, so the count runs after everything the batch feeds:
        # an error raised while the step runs (a label out of range) cannot leave it
        # incremented, even in backends that update shared variables in place early.
        updates[step_count] = step_count + pt.cast(pt.ge(status, 0), "int64")

        outputs_list = [loss, loss_after, rho, ratio, step_size, solution.iterations,
                        solution.residual_norm, tries, status]
        return outputs_list, updates

    def _next_damping(self, rho, ratio, accepted) -> TensorVariable:
        """The damping of the next step (see step 5 of the class docstring)."""
        config = self.config
        if config["trust_region"]:
            return trust_region_damping(rho, ratio, min_damping=config["min_damping"],
                                        max_damping=config["max_damping"])
        (step_count,) = self._state["step_count"]
        scheduled = pt.cast(scheduled_damping(
            step_count + 1, initial=config["damping"], final=config["min_damping"],
            steps=config["damping_decay_steps"] or 1, schedule=config["damping_schedule"],
        ), self.dtype)
        raised = pt.minimum(pt.maximum(scheduled, self._constant(REJECTION_DAMPING_FACTOR) * rho),
                            self._constant(max(config["max_damping"], config["damping"])))
        return pt.switch(accepted, scheduled, raised)

    # -- public interface -----------------------------------------------------
    def step(self, *batch) -> StepInfo:
        """Run one SGN iteration on one mini-batch and update the parameters in place.

        Parameters
        ----------
        *batch : numpy arrays
            One array per element of ``inputs``, in that order, with a common first
            (batch) axis. They are checked (dimensions, dtype, finiteness) before
            anything runs; a bad batch raises and leaves every state untouched.

        Returns
        -------
        StepInfo
        """
        arrays = validation.check_batch(self.inputs, batch)
        (loss, loss_after, rho, ratio, step_size, iterations, residual, tries,
         status) = self._step(*arrays)
        return StepInfo(
            loss=float(loss), loss_after=float(loss_after), damping=float(rho),
            ratio=float(ratio), step_size=float(step_size), cg_iterations=int(iterations),
            cg_residual_norm=float(residual), line_search_tries=int(tries),
            accepted=int(status) == 0, reason=REJECTION_REASONS[int(status)],
        )

    @property
    def damping(self) -> float:
        """The damping :math:`\\rho` the next step will use."""
        return float(self._state["damping"][0].get_value())

    @property
    def step_count(self) -> int:
        """Number of calls of :meth:`step` so far (accepted or not)."""
        return int(self._state["step_count"][0].get_value())

    def state_dict(self) -> dict:
        """Everything needed to resume exactly: the configuration and every state array.

        Returns
        -------
        dict
            ``{"config": dict, "state": {role: [numpy array, ...]}}`` with copies of the
            parameters, the damping, the step counters, and the momentum and warm-start
            buffers where used.
        """
        return {
            "config": dict(self.config),
            "state": {role: [variable.get_value(borrow=False) for variable in variables]
                      for role, variables in self._state.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`, checking it all before changing anything.

        Raises
        ------
        ValueError
            If ``state`` comes from a differently shaped model or an optimizer whose
            configuration differs from this one.
        """
        if not isinstance(state, dict) or set(state) != {"config", "state"}:
            raise ValueError("`state` must be a dict from `SGN.state_dict()` with keys "
                             "'config' and 'state'.")
        if state["config"] != self.config:
            differing = sorted(key for key in set(state["config"]) | set(self.config)
                               if state["config"].get(key) != self.config.get(key))
            raise ValueError(f"`state` was saved by an SGN with other settings: {differing}.")
        saved = state["state"]
        if set(saved) != set(self._state):
            raise ValueError(f"`state` holds {sorted(saved)}, expected {sorted(self._state)}.")
        targets = []
        for role, variables in self._state.items():
            if len(saved[role]) != len(variables):
                raise ValueError(f"`state['state']['{role}']` has {len(saved[role])} arrays, "
                                 f"expected {len(variables)}: is it from another model?")
            targets += [(f"`state['state']['{role}'][{i}]`", variable, value)
                        for i, (variable, value) in enumerate(zip(variables, saved[role]))]
        validation.set_checked_values(targets)
