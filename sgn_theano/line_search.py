"""Armijo backtracking line search, compiled into the caller's graph."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytensor.tensor as pt
from pytensor.scan.utils import until
from pytensor.tensor.variable import TensorVariable

from sgn_theano.compat import isfinite
from sgn_theano.compilation.loop_invariants import hoist_loop_invariants, scan_on_stand_ins
from sgn_theano.validation import check_float, check_integer

__all__ = ["LineSearchResult", "armijo_backtracking"]


class LineSearchResult(NamedTuple):
    """What :func:`armijo_backtracking` returns; every field is symbolic."""

    step_size: TensorVariable  # shape=(): the last step size tried
    loss: TensorVariable  # shape=(): the loss at that step size
    tries: TensorVariable  # shape=(), dtype=int64: loss evaluations made
    success: TensorVariable  # shape=(), bool: the last try satisfies Armijo's condition


def armijo_backtracking(
    loss_at: Callable[[TensorVariable], TensorVariable],
    loss: TensorVariable,
    slope: TensorVariable,
    *,
    initial_step: float | TensorVariable,
    shrink: float = 0.5,
    sufficient_decrease: float = 1e-4,
    max_tries: int = 10,
    early_exit: bool = True,
) -> LineSearchResult:
    """Largest :math:`\\alpha = \\alpha_0 s^i,\\ i < n` with sufficient decrease.

    .. math::

        L(\\alpha) \\le L(0) + c \\, \\alpha \\, L'(0)

    with :math:`\\alpha_0` = ``initial_step``, :math:`s` = ``shrink``,
    :math:`c` = ``sufficient_decrease``, :math:`n` = ``max_tries`` and
    :math:`L'(0) = g^\\top d` = ``slope``. The tries run in a compiled loop that
    stops at the first success. A non-finite loss never satisfies the condition, and
    neither does any step along a direction that is not a descent (``slope >= 0``).

    Parameters
    ----------
    loss_at : callable
        ``step_size -> loss`` along the search direction, on the same batch.
    loss : scalar TensorVariable
        :math:`L(0)`.
    slope : scalar TensorVariable
        Directional derivative :math:`g^\\top d`.
    initial_step : float or scalar TensorVariable
        :math:`\\alpha_0 > 0`.
    shrink : float
        Factor :math:`s \\in (0, 1)` applied after each failed try.
    sufficient_decrease : float
        :math:`c \\in (0, 1)`.
    max_tries : int
        Largest number of loss evaluations, ``>= 1``.
    early_exit : bool
        Stop at the first success (a ``scan`` with ``until``; in JAX mode a while loop,
        :mod:`sgn_theano.compilation.jax_loops`). False evaluates all ``max_tries`` step sizes and
        keeps the first success, for a JAX mode without while loops; the result is the
        same, ``tries`` included.

    Returns
    -------
    LineSearchResult
        The step size, its loss, the number of tries and whether it succeeded.
    """
    open_unit = {"low": 0.0, "high": 1.0, "low_open": True, "high_open": True}
    check_float("shrink", shrink, **open_unit)
    check_float("sufficient_decrease", sufficient_decrease, **open_unit)
    check_integer("max_tries", max_tries, low=1)
    dtype = loss.dtype
    first = pt.cast(initial_step, dtype)
    s = pt.constant(shrink, dtype=dtype)
    c = pt.constant(sufficient_decrease, dtype=dtype)
    descent = slope < 0

    def trial(step_sizes: list) -> list:
        (step_size,) = step_sizes
        trial_loss = loss_at(step_size)
        satisfied = descent & isfinite(trial_loss) & (trial_loss <= loss + c * step_size * slope)
        return [trial_loss, satisfied]

    body, invariants = hoist_loop_invariants(trial, [first])
    nan = pt.constant(np.nan, dtype=dtype)

    # Everything is loop state, and only the last state is read: a loop of that form
    # becomes a while loop in every backend (sgn_theano.compilation.jax_loops for JAX). The next
    # step size is state too, not a scanned sequence: PyTensor would push the parameters
    # moved by every candidate step out of the loop, computing all `max_tries` of them
    # up front even when the first one succeeds.
    def attempt(next_step, step_size, trial_loss, satisfied, tries, *inner_invariants):
        new_loss, new_satisfied = body([next_step], list(inner_invariants))
        state = [next_step * s, next_step, new_loss, new_satisfied, tries + 1]
        if early_exit:
            return state, until(new_satisfied)
        # all `max_tries` iterations: those after the first success change nothing
        old = [next_step, step_size, trial_loss, satisfied, tries]
        return [pt.switch(satisfied, before, after) for before, after in zip(old, state)]

    start = [first, first, nan, pt.as_tensor_variable(np.array(False)),
             pt.constant(0, dtype="int64")]
    traces = scan_on_stand_ins(attempt, start, invariants, max_tries)
    _, step_size, trial_loss, satisfied, tries = (trace[-1] for trace in traces)
    return LineSearchResult(step_size=step_size, loss=trial_loss, tries=tries,
                            success=satisfied)
