"""Preconditioned conjugate gradient, symbolic and compiled into the caller's graph.

Solves :math:`A x = b` for a symmetric positive definite operator ``A`` given only
as a product ``matvec``, on a *list* of tensors (one block per parameter). Beyond
:data:`UNROLLED_MAX_ITERS` iterations the loop is a PyTensor ``scan`` with an
early-exit condition, so it runs inside the compiled function with no host round trip
per iteration, compiles in time independent of ``max_iters``, and never builds a graph
deep enough to hit Python's recursion limit; up to it, the iterations are written out.
CG works on the blocks as one flat vector (:class:`sgn_theano.block_layout.
BlockLayout`): each iteration's vector work is a few nodes whatever the number of
blocks, and only ``matvec`` sees the blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Variable
from pytensor.scan.utils import until
from pytensor.tensor.variable import TensorVariable

from sgn_theano.block_layout import BlockLayout, Blocks, Operator
from sgn_theano.compilation.loop_invariants import hoist_loop_invariants, scan_on_stand_ins
from sgn_theano.errors import SGNInputError, SGNInputTypeError
from sgn_theano.preconditioning.diagonal import flat_preconditioner
from sgn_theano.validation import check_float, check_integer, check_matching_blocks

__all__ = ["CGResult", "CGState", "UNROLLED_MAX_ITERS", "conjugate_gradient", "dot"]

#: Smallest window of Martens' relative-progress rule (it acts after more iterations).
PROGRESS_WINDOW = 10
#: Up to this many iterations CG is written out, not looped: measured cheaper to run
#: (docs, "Performance"); such a CG always computes ``max_iters`` products, those after
#: it stops changing nothing.
UNROLLED_MAX_ITERS = 3



class CGResult(NamedTuple):
    """What :func:`conjugate_gradient` returns; every field is symbolic."""

    x: Blocks  # the approximate solution, shaped like `b`
    iterations: TensorVariable  # shape=(), dtype=int64: CG iterations that updated x
    residual_norm: TensorVariable  # shape=(), ||b - A x|| as tracked by the recursion
    residual: Blocks  # b - A x, shaped like `b` (tracked, not recomputed)


class CGState(NamedTuple):
    """The loop state of :func:`conjugate_gradient`, carried from one iteration to the
    next (a ``scan`` carries it flat: :meth:`flatten`, :meth:`unflatten`). The vectors
    are the blocks' flat vector (:class:`sgn_theano.block_layout.BlockLayout`)."""

    x: TensorVariable  # shape=(n,): the iterate
    r: TensorVariable  # shape=(n,): the residual b - A x
    p: TensorVariable  # shape=(n,): the search direction
    rz: TensorVariable  # shape=(): r^T M r
    residual_norm: TensorVariable  # shape=(): ||r||
    iterations: TensorVariable  # shape=(), dtype=int64: iterations that updated x
    done: TensorVariable  # shape=(), dtype=bool: stopped; later iterations are no-ops
    model_values: TensorVariable | None  # shape=(max_iters + 1,): phi(x_i); progress rule only

    def flatten(self) -> list[TensorVariable]:
        """The fields in order; ``model_values`` only if used."""
        return [variable for variable in self if variable is not None]

    @classmethod
    def unflatten(cls, flat: Sequence[TensorVariable]) -> CGState:
        """The inverse of :meth:`flatten`."""
        return cls(*flat[:7], model_values=flat[7] if len(flat) > 7 else None)


def dot(a: Sequence[TensorVariable], b: Sequence[TensorVariable]) -> TensorVariable:
    """Inner product of two block vectors, :math:`\\sum_i \\langle a_i, b_i \\rangle`.

    One BLAS dot per block (no temporary product array), in the blocks' dtype: a
    ``sum`` of float32 would accumulate in float64, which PyTensor's JAX backend returns
    as float64 and so breaks float32 loops there.
    """
    return pt.add(*[pt.dot(ai.ravel(), bi.ravel()) for ai, bi in zip(a, b)])


def _validate(b: Blocks, x0: Blocks | None, max_iters: int, tol):
    if not b:
        raise SGNInputError("`b` must hold at least one tensor.")
    check_integer("max_iters", max_iters, low=1)
    if not isinstance(tol, Variable):
        check_float("tol", tol, low=0.0)
    dtypes = {block.dtype for block in b}
    if len(dtypes) != 1:
        raise SGNInputTypeError(f"All blocks of `b` must share one dtype, got {sorted(dtypes)}.")
    if x0 is not None:
        check_matching_blocks("x0", b, x0, "blocks of `b`")


def conjugate_gradient(
    matvec: Operator,
    b: Sequence[TensorVariable],
    *,
    max_iters: int,
    tol: float | TensorVariable = 0.0,
    x0: Sequence[TensorVariable] | None = None,
    preconditioner: Operator | None = None,
    progress_tol: float = 0.0,
    early_exit: bool = True,
) -> CGResult:
    """Approximately solve ``matvec(x) = b`` with preconditioned conjugate gradient.

    With :math:`M` the preconditioner (an approximation of :math:`A^{-1}`), starting
    from :math:`x_0` (zero by default), :math:`r_0 = b - A x_0`, :math:`p_0 = M r_0`:

    .. math::

        \\alpha_k = \\frac{r_k^\\top M r_k}{p_k^\\top A p_k}, \\quad
        x_{k+1} = x_k + \\alpha_k p_k, \\quad r_{k+1} = r_k - \\alpha_k A p_k, \\quad
        p_{k+1} = M r_{k+1} + \\frac{r_{k+1}^\\top M r_{k+1}}{r_k^\\top M r_k} p_k.

    The loop stops after ``max_iters`` iterations, or earlier:

    * once :math:`\\lVert r \\rVert \\le` ``tol``;
    * on a direction without positive curvature, :math:`p^\\top A p \\le 0` (the
      negative- or zero-curvature guard: the step would not decrease the quadratic
      model); that iteration leaves ``x`` unchanged and is not counted in ``iterations``;
    * with ``progress_tol`` :math:`= \\epsilon > 0`, on too little relative progress
      on the quadratic model :math:`\\phi(x) = \\tfrac12 x^\\top A x - b^\\top x =
      -\\tfrac12 x^\\top (b + r)` (Martens 2010, section 4.4): after iteration
      :math:`i`, with window :math:`k = \\max(10, \\lfloor 0.1 i \\rfloor)`, stop if
      :math:`i > k`, :math:`\\phi(x_i) < 0` and
      :math:`(\\phi(x_i) - \\phi(x_{i-k})) / \\phi(x_i) < k \\epsilon`.

    Parameters
    ----------
    matvec : callable
        ``list[TensorVariable] -> list[TensorVariable]``, the product ``A v``; it is
        called once on placeholder blocks to build the loop body (everything in it
        that does not depend on ``v`` is computed once, outside the loop), and once
        more on ``x0`` when given.
    b : list of TensorVariable
        Right-hand side, one block per unknown tensor (any shapes, one dtype).
    max_iters : int
        Largest number of iterations, ``>= 1``.
    tol : float or scalar TensorVariable
        Absolute tolerance on the residual norm; ``0`` runs ``max_iters`` iterations.
    x0 : list of TensorVariable, optional
        Starting point (warm start), shaped like ``b``. It is used only if it beats
        zero on the quadratic model, :math:`\\phi(x_0) < 0 = \\phi(0)`; otherwise CG
        starts from zero. So :math:`\\phi(x) < 0` after any iteration, and with
        :math:`b = -g` the result is a descent direction, :math:`g^\\top x < 0`.
    preconditioner : callable, optional
        ``list -> list``, the product ``M r`` with ``M`` symmetric positive definite
        (e.g. :func:`sgn_theano.preconditioning.diagonal.diagonal_preconditioner`).
    progress_tol : float
        :math:`\\epsilon \\ge 0` of the relative-progress rule; ``0`` turns it off.
        Martens uses ``5e-4``. The rule needs more than 10 iterations to act.
    early_exit : bool
        Leave the loop when it stops (a ``scan`` with ``until``; in JAX mode a while
        loop, :mod:`sgn_theano.compilation.jax_loops`, which the modes the library resolves have).
        False runs all ``max_iters`` iterations, those after the stop changing nothing,
        for a JAX mode without it; the result is the same. Unrolled iterations
        (``max_iters <= UNROLLED_MAX_ITERS``) always all run.

    Returns
    -------
    CGResult
        ``x`` (blocks like ``b``), ``iterations``, ``residual_norm`` and ``residual``.

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt
    >>> a = pt.constant(np.array([[4.0, 1.0], [1.0, 3.0]]))
    >>> result = conjugate_gradient(lambda v: [a @ v[0]], [pt.constant(np.ones(2))],
    ...                             max_iters=2)
    >>> np.round(pytensor.function([], result.x[0])(), 4)
    array([0.1818, 0.2727])
    """
    b = [pt.as_tensor_variable(block) for block in b]
    x0 = None if x0 is None else [pt.as_tensor_variable(block) for block in x0]
    _validate(b, x0, max_iters, tol)
    check_float("progress_tol", progress_tol, low=0.0)
    if max_iters <= PROGRESS_WINDOW:  # the rule cannot act: do not pay for its bookkeeping
        progress_tol = 0.0
    layout = BlockLayout(b)
    problem = _Problem(lambda v: layout.flatten(matvec(layout.split(v))), layout.flatten(b),
                       pt.cast(tol, b[0].dtype),
                       flat_preconditioner(preconditioner, layout), progress_tol)
    start = _start(problem, None if x0 is None else layout.flatten(x0), max_iters)
    final = (_unrolled(problem, start, max_iters) if max_iters <= UNROLLED_MAX_ITERS
             else _loop(problem, start, max_iters, early_exit))
    return CGResult(x=layout.split(final.x), iterations=final.iterations,
                    residual_norm=final.residual_norm, residual=layout.split(final.r))


def _unrolled(problem: _Problem, start: CGState, max_iters: int) -> CGState:
    """``max_iters`` iterations written out one after the other (no loop)."""
    state = start
    for _ in range(max_iters):
        state = _iteration(problem, state)
    return state


def _loop(problem: _Problem, start: CGState, max_iters: int, early_exit: bool) -> CGState:
    """The iterations as a ``scan`` over the loop state, leaving it once done if
    ``early_exit``; the loop-invariant part of ``matvec`` is computed once, outside."""
    flat = start.flatten()
    body, invariants = hoist_loop_invariants(
        lambda state: _iteration(problem, CGState.unflatten(state)).flatten(), flat)

    def scan_step(*arguments):
        state = body(list(arguments[:len(flat)]), list(arguments[len(flat):]))
        return (state, until(CGState.unflatten(state).done)) if early_exit else state

    trace = scan_on_stand_ins(scan_step, flat, invariants, max_iters)
    return CGState.unflatten([sequence[-1] for sequence in trace])


class _Problem(NamedTuple):
    """The system and the options of one :func:`conjugate_gradient` call, on the
    blocks' flat vector."""

    matvec: Callable[[TensorVariable], TensorVariable]  # A v
    b: TensorVariable  # shape=(n,)
    tol: TensorVariable  # absolute tolerance on ||r||, b's dtype
    precondition: Callable[[TensorVariable], TensorVariable]  # M r
    progress_tol: float  # epsilon of the relative-progress rule; 0: off

    def model_value(self, x: TensorVariable, r: TensorVariable) -> TensorVariable:
        """:math:`\\phi(x) = -\\tfrac12 x^\\top (b + r)`, with :math:`r = b - A x`."""
        return -pt.dot(x, self.b + r) / 2


def _start(problem: _Problem, x0: TensorVariable | None, max_iters: int) -> CGState:
    """The state before the first iteration: from zero, or from ``x0`` if it beats
    zero on the quadratic model."""
    b, dtype = problem.b, problem.b.dtype
    zero = pt.constant(0, dtype=dtype)
    if x0 is None:
        x, r = pt.zeros_like(b), b
    else:
        x_warm = pt.cast(x0, dtype)
        r_warm = b - problem.matvec(x_warm)
        better = problem.model_value(x_warm, r_warm) < zero  # phi(0) = 0
        x = pt.switch(better, x_warm, pt.zeros_like(x_warm))
        r = pt.switch(better, r_warm, b)
    z = problem.precondition(r)
    values = None
    if problem.progress_tol:
        # phi(x_i) for i = 0..max_iters, read back `window` iterations later.
        values = pt.set_subtensor(pt.zeros((max_iters + 1,), dtype=dtype)[0],
                                  problem.model_value(x, r))
    return CGState(x=x, r=r, p=z, rz=pt.dot(r, z), residual_norm=pt.sqrt(pt.dot(r, r)),
                   iterations=pt.constant(0, dtype="int64"),
                   done=pt.as_tensor_variable(np.array(False)), model_values=values)


def _iteration(problem: _Problem, state: CGState) -> CGState:
    """One CG iteration; a no-op once ``state.done``."""
    zero = pt.constant(0, dtype=problem.b.dtype)
    a_p = problem.matvec(state.p)
    curvature = pt.dot(state.p, a_p)
    active = pt.invert(state.done) & (state.residual_norm > problem.tol) & (curvature > zero)
    alpha = pt.switch(active, state.rz / pt.switch(active, curvature, 1), zero)
    x = state.x + alpha * state.p
    r = state.r - alpha * a_p
    z = problem.precondition(r)
    rz = pt.dot(r, z)
    beta = pt.switch(active, rz / pt.switch(active, state.rz, 1), zero)
    residual_norm = pt.sqrt(pt.dot(r, r))
    iterations = state.iterations + pt.cast(active, "int64")
    done = pt.invert(active) | (residual_norm <= problem.tol)
    values = state.model_values
    if problem.progress_tol:
        value = problem.model_value(x, r)
        values = pt.set_subtensor(values[iterations], value)
        done = done | _stalled(values, value, iterations, problem.progress_tol)
    return CGState(x=x, r=r, p=z + beta * state.p, rz=rz, residual_norm=residual_norm,
                   iterations=iterations, done=done, model_values=values)


def _stalled(values: TensorVariable, value: TensorVariable, iterations: TensorVariable,
             progress_tol: float) -> TensorVariable:
    """Martens' rule: :math:`i > k`, :math:`\\phi_i < 0` and
    :math:`(\\phi_i - \\phi_{i-k}) / \\phi_i < k \\epsilon`, with window
    :math:`k = \\max(10, \\lfloor i / 10 \\rfloor)`."""
    dtype, zero = value.dtype, pt.constant(0, dtype=value.dtype)
    window = pt.maximum(PROGRESS_WINDOW, iterations // 10)
    earlier = values[pt.maximum(iterations - window, 0)]
    relative_progress = (value - earlier) / pt.switch(value < zero, value, -1)
    return ((iterations > window) & (value < zero)
            & (relative_progress < pt.cast(window, dtype) * pt.constant(progress_tol, dtype)))
