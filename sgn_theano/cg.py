"""Preconditioned conjugate gradient, symbolic and compiled into the caller's graph.

Solves :math:`A x = b` for a symmetric positive definite operator ``A`` given only
as a product ``matvec``, on a *list* of tensors (one block per parameter). The loop
is a PyTensor ``scan`` with an early-exit condition, so it runs inside the compiled
function with no host round trip per iteration, compiles in time independent of
``max_iters``, and never builds a graph deep enough to hit Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Variable
from pytensor.scan.utils import until
from pytensor.tensor.variable import TensorVariable

from sgn_theano.loop_invariants import hoist_loop_invariants, scan_on_stand_ins
from sgn_theano.validation import check_float, check_integer, check_matching_blocks

__all__ = ["CGResult", "conjugate_gradient", "dot"]

#: Smallest window of Martens' relative-progress rule (it acts after more iterations).
PROGRESS_WINDOW = 10

Blocks = list[TensorVariable]


class CGResult(NamedTuple):
    """What :func:`conjugate_gradient` returns; every field is symbolic."""

    x: Blocks  # the approximate solution, shaped like `b`
    iterations: TensorVariable  # shape=(), dtype=int64: CG iterations that updated x
    residual_norm: TensorVariable  # shape=(), ||b - A x|| as tracked by the recursion
    residual: Blocks  # b - A x, shaped like `b` (tracked, not recomputed)


def dot(a: Sequence[TensorVariable], b: Sequence[TensorVariable]) -> TensorVariable:
    """Inner product of two block vectors, :math:`\\sum_i \\langle a_i, b_i \\rangle`.

    One BLAS dot per block (no temporary product array), in the blocks' dtype: a
    ``sum`` of float32 would accumulate in float64, which PyTensor's JAX backend returns
    as float64 and so breaks float32 loops there.
    """
    return pt.add(*[pt.dot(ai.ravel(), bi.ravel()) for ai, bi in zip(a, b)])


def _validate(b: Blocks, x0: Blocks | None, max_iters: int, tol):
    if not b:
        raise ValueError("`b` must hold at least one tensor.")
    check_integer("max_iters", max_iters, low=1)
    if not isinstance(tol, Variable):
        check_float("tol", tol, low=0.0)
    dtypes = {block.dtype for block in b}
    if len(dtypes) != 1:
        raise TypeError(f"All blocks of `b` must share one dtype, got {sorted(dtypes)}.")
    if x0 is not None:
        check_matching_blocks("x0", b, x0, "blocks of `b`")


def conjugate_gradient(
    matvec: Callable[[Blocks], Blocks],
    b: Sequence[TensorVariable],
    *,
    max_iters: int,
    tol: float | TensorVariable = 0.0,
    x0: Sequence[TensorVariable] | None = None,
    preconditioner: Callable[[Blocks], Blocks] | None = None,
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
        (e.g. :func:`sgn_theano.preconditioners.diagonal_preconditioner`).
    progress_tol : float
        :math:`\\epsilon \\ge 0` of the relative-progress rule; ``0`` turns it off.
        Martens uses ``5e-4``. The rule needs more than 10 iterations to act.
    early_exit : bool
        Leave the loop when it stops (a ``scan`` with ``until``). False runs all
        ``max_iters`` iterations, those after the stop changing nothing, for backends
        without early exit (PyTensor's JAX backend); the result is the same.

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
    dtype = b[0].dtype
    tol = pt.cast(tol, dtype)
    precondition = preconditioner if preconditioner is not None else (lambda r: r)
    zero = pt.constant(0, dtype=dtype)

    def model_value(x: Blocks, r: Blocks) -> TensorVariable:
        return -(dot(x, b) + dot(x, r)) / 2

    if x0 is None:
        x_start = [pt.zeros_like(block) for block in b]
        r_start = list(b)
    else:
        x_warm = [pt.cast(block, dtype) for block in x0]
        r_warm = [rhs - product for rhs, product in zip(b, matvec(x_warm))]
        better = model_value(x_warm, r_warm) < zero  # phi(0) = 0
        x_start = [pt.switch(better, x, pt.zeros_like(x)) for x in x_warm]
        r_start = [pt.switch(better, r, rhs) for r, rhs in zip(r_warm, b)]
    z_start = precondition(r_start)
    n = len(b)

    def iteration(state: Blocks) -> Blocks:
        x, r, p = state[:n], state[n : 2 * n], state[2 * n : 3 * n]
        rz, residual_norm, count, done = state[3 * n : 3 * n + 4]
        a_p = matvec(p)
        curvature = dot(p, a_p)
        active = pt.invert(done) & (residual_norm > tol) & (curvature > zero)
        alpha = pt.switch(active, rz / pt.switch(active, curvature, 1), zero)
        x = [xi + alpha * pi for xi, pi in zip(x, p)]
        r = [ri - alpha * api for ri, api in zip(r, a_p)]
        z = precondition(r)
        rz_next = dot(r, z)
        beta = pt.switch(active, rz_next / pt.switch(active, rz, 1), zero)
        p = [zi + beta * pi for zi, pi in zip(z, p)]
        next_norm = pt.sqrt(dot(r, r))
        count = count + pt.cast(active, "int64")
        stop = pt.invert(active) | (next_norm <= tol)
        if not progress_tol:
            return [*x, *r, *p, rz_next, next_norm, count, stop]
        (values,) = state[3 * n + 4 :]
        value = model_value(x, r)
        values = pt.set_subtensor(values[count], value)
        window = pt.maximum(PROGRESS_WINDOW, count // 10)
        earlier = values[pt.maximum(count - window, 0)]
        stalled = ((count > window) & (value < zero)
                   & ((value - earlier) / pt.switch(value < zero, value, -1)
                      < pt.cast(window, dtype) * pt.constant(progress_tol, dtype=dtype)))
        return [*x, *r, *p, rz_next, next_norm, count, stop | stalled, values]

    outputs_info = [
        *x_start,
        *r_start,
        *z_start,
        dot(r_start, z_start),
        pt.sqrt(dot(r_start, r_start)),
        pt.constant(0, dtype="int64"),
        pt.as_tensor_variable(np.array(False)),  # done: stopped, later iterations are no-ops
    ]
    if progress_tol:
        # phi(x_i) for i = 0..max_iters, read back `window` iterations later.
        values = pt.zeros((max_iters + 1,), dtype=dtype)
        outputs_info.append(pt.set_subtensor(values[0], model_value(x_start, r_start)))
    body, invariants = hoist_loop_invariants(iteration, outputs_info)
    n_state = len(outputs_info)

    def scan_step(*arguments):
        state = body(list(arguments[:n_state]), list(arguments[n_state:]))
        done = state[3 * n + 3]
        return (state, until(done)) if early_exit else state

    trace = scan_on_stand_ins(scan_step, outputs_info, invariants, max_iters)
    final = [sequence[-1] for sequence in trace]
    return CGResult(
        x=final[:n],
        iterations=final[3 * n + 2],
        residual_norm=final[3 * n + 1],
        residual=final[n : 2 * n],
    )
