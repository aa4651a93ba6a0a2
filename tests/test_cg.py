"""Conjugate gradient against numpy.linalg.solve on block-split SPD systems."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import TEST_MODE
from hypothesis import given, settings
from hypothesis import strategies as st

from sgn_theano import conjugate_gradient
from sgn_theano.compilation.loop_invariants import loops_compiled_in

SHAPES = [(2, 2), (3,), (1, 2)]  # blocks of one 9-dimensional unknown
N = sum(int(np.prod(shape)) for shape in SHAPES)


def split(vector, shapes=SHAPES):
    blocks, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        blocks.append(vector[start : start + size].reshape(shape))
        start += size
    return blocks


def block_operator(matrix):
    """``A v`` on blocks of any sizes: flatten, multiply, cut back to the blocks' shapes."""
    def matvec(blocks):
        product = matrix @ pt.concatenate([block.flatten() for block in blocks])
        pieces, start = [], 0
        for block in blocks:
            pieces.append(product[start : start + block.size].reshape(block.shape))
            start = start + block.size
        return pieces
    return matvec


def compile_solver(max_iters, tol=0.0, warm=False, jacobi=False, progress_tol=0.0,
                   early_exit=True):
    """(A, b[, x0], shapes=SHAPES) -> (x, iterations, residual norm), A symbolic, b blocks
    with the dimensions of SHAPES and any sizes."""
    matrix = pt.matrix("A", dtype="float64")
    rhs = [pt.tensor(f"b{i}", dtype="float64", shape=(None,) * len(s)) for i, s in enumerate(SHAPES)]
    x0 = [pt.tensor(f"x{i}", dtype="float64", shape=(None,) * len(s))
          for i, s in enumerate(SHAPES)] if warm else None
    preconditioner = None
    if jacobi:
        inverse_diagonal = block_operator(pt.diag(1.0 / pt.diag(matrix)))(
            [pt.ones_like(block) for block in rhs])
        preconditioner = lambda r: [d * ri for d, ri in zip(inverse_diagonal, r)]  # noqa: E731
    with loops_compiled_in(TEST_MODE):  # the loop's body in the Python linker too
        result = conjugate_gradient(block_operator(matrix), rhs, max_iters=max_iters, tol=tol,
                                    x0=x0, preconditioner=preconditioner,
                                    progress_tol=progress_tol, early_exit=early_exit)
    inputs = [matrix, *rhs, *(x0 or [])]
    function = pytensor.function(inputs, [*result.x, result.iterations, result.residual_norm],
                                 mode=TEST_MODE)

    def solve(a, b, start=None, shapes=SHAPES):
        *x, iterations, residual = function(a, *split(b, shapes),
                                            *(split(start, shapes) if warm else []))
        return np.concatenate([block.ravel() for block in x]), int(iterations), float(residual)
    return solve


def quadratic_model(a, b):
    """x -> phi(x) = x^T A x / 2 - b^T x, the function CG minimises."""
    return lambda x: 0.5 * x @ a @ x - b @ x


def spd(rng, n=N, condition=10.0):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q @ np.diag(np.geomspace(1.0, condition, n)) @ q.T


@pytest.fixture(scope="module")
def exact_solver():
    return compile_solver(max_iters=N)


def test_matches_numpy_solve_after_n_iterations(exact_solver):
    rng = np.random.default_rng(0)
    a, b = spd(rng), rng.standard_normal(N)
    x, iterations, residual = exact_solver(a, b)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-9, atol=1e-12)
    assert iterations <= N
    assert residual < 1e-9


def test_hundred_iterations_compile_and_converge():
    rng = np.random.default_rng(1)
    a, b = spd(rng, condition=1e3), rng.standard_normal(N)
    x, iterations, residual = compile_solver(max_iters=100, tol=1e-10)(a, b)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-8)
    assert residual <= 1e-10
    assert N <= iterations < 100  # stopped by the tolerance, not the limit


def test_tolerance_stops_early_and_reports_residual():
    rng = np.random.default_rng(2)
    a, b = spd(rng, condition=1e2), rng.standard_normal(N)
    x, iterations, residual = compile_solver(max_iters=N, tol=0.5)(a, b)
    assert iterations < N
    assert residual <= 0.5
    np.testing.assert_allclose(residual, np.linalg.norm(b - a @ x), rtol=1e-8)


def test_warm_start_at_the_solution_does_no_iteration():
    rng = np.random.default_rng(3)
    a, b = spd(rng), rng.standard_normal(N)
    solution = np.linalg.solve(a, b)
    x, iterations, _ = compile_solver(max_iters=5, tol=1e-8, warm=True)(a, b, solution)
    assert iterations == 0
    np.testing.assert_array_equal(x, solution)


@pytest.mark.parametrize("progress_tol", [0.0, 5e-4])
def test_without_early_exit_the_stopped_iterations_change_nothing(progress_tol):
    # Tolerance, progress rule and zero right-hand side all stop CG before max_iters;
    # the masked iterations that follow must leave x and the counts as they were.
    rng = np.random.default_rng(9)
    n = sum(int(np.prod(shape)) for shape in LARGE_SHAPES)
    a, b = spd(rng, n=n, condition=1e4), rng.standard_normal(n)
    options = dict(max_iters=80, tol=0.5, progress_tol=progress_tol)
    early = compile_solver(**options)(a, b, shapes=LARGE_SHAPES)
    masked = compile_solver(early_exit=False, **options)(a, b, shapes=LARGE_SHAPES)
    assert early[1] < 80 and masked[1:] == early[1:]
    np.testing.assert_array_equal(masked[0], early[0])


def test_warm_start_worse_than_zero_is_dropped():
    # phi(-x*) = 3/2 b^T A^-1 b > 0 = phi(0): CG must start from zero instead.
    rng = np.random.default_rng(8)
    a, b = spd(rng, condition=1e2), rng.standard_normal(N)
    warm, cold = compile_solver(max_iters=2, warm=True), compile_solver(max_iters=2)
    np.testing.assert_allclose(warm(a, b, -np.linalg.solve(a, b))[0], cold(a, b)[0],
                               rtol=1e-12)
    halfway = 0.5 * np.linalg.solve(a, b)  # phi < 0: kept, and better than cold after 2
    model = quadratic_model(a, b)
    assert model(warm(a, b, halfway)[0]) < model(halfway)


def test_jacobi_preconditioner_needs_fewer_iterations_on_badly_scaled_system():
    rng = np.random.default_rng(4)
    scale = np.diag(np.geomspace(1.0, 1e3, N))
    a, b = scale @ spd(rng, condition=3.0) @ scale, rng.standard_normal(N)
    _, plain, _ = compile_solver(max_iters=50, tol=1e-8)(a, b)
    x, preconditioned, _ = compile_solver(max_iters=50, tol=1e-8, jacobi=True)(a, b)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-6)
    assert preconditioned < plain


def test_zero_right_hand_side_gives_zero_without_nan(exact_solver):
    x, iterations, residual = exact_solver(spd(np.random.default_rng(5)), np.zeros(N))
    assert np.all(x == 0) and iterations == 0 and residual == 0


def test_invalid_arguments_are_named():
    b = [pt.vector()]
    with pytest.raises(ValueError, match="`max_iters` must be >= 1, got 0"):
        conjugate_gradient(lambda v: v, b, max_iters=0)
    with pytest.raises(ValueError, match=r"`tol` must be a finite number in \[0.0, inf\]"):
        conjugate_gradient(lambda v: v, b, max_iters=1, tol=-1.0)
    with pytest.raises(ValueError, match="`x0` has 2 entries but there are 1 blocks of `b`"):
        conjugate_gradient(lambda v: v, b, max_iters=1, x0=[pt.vector(), pt.vector()])
    with pytest.raises(TypeError, match="share one dtype"):
        conjugate_gradient(lambda v: v, [pt.vector(dtype="float32"), pt.vector()], max_iters=1)


def reference_cg(a, b, max_iters, inverse_preconditioner=None):
    """Textbook PCG in numpy: the iterate after ``max_iters`` iterations."""
    m = np.eye(len(b)) if inverse_preconditioner is None else inverse_preconditioner
    x, r = np.zeros_like(b), b.copy()
    z = m @ r
    p, rz = z.copy(), r @ z
    for _ in range(max_iters):
        ap = a @ p
        alpha = rz / (p @ ap)
        x, r = x + alpha * p, r - alpha * ap
        z = m @ r
        rz, rz_old = r @ z, rz
        p = z + rz / rz_old * p
    return x


LARGE_SHAPES = [(5, 6), (20,), (2, 5)]  # a 60-dimensional unknown in the same layout


def test_relative_progress_rule_stops_where_martens_rule_says():
    """The rule's defining inequality, on the compiled run's own iterates: it holds at
    the iteration where CG stopped and not one iteration earlier. (Which iteration that
    is depends on rounding, so no count is asserted.)"""
    rng = np.random.default_rng(6)
    n = sum(int(np.prod(shape)) for shape in LARGE_SHAPES)
    a, b = spd(rng, n=n, condition=1e4), rng.standard_normal(n)
    epsilon, model = 5e-4, quadratic_model(a, b)
    _, stopped_at, _ = compile_solver(max_iters=200, progress_tol=epsilon)(
        a, b, shapes=LARGE_SHAPES)
    assert 10 < stopped_at < 200  # the rule, not the limit, stopped it

    def relative_progress(i):
        """((phi_i - phi_{i-k}) / phi_i, k) along the same compiled recursion, without
        the rule (which only decides where to stop)."""
        window = max(10, i // 10)
        phi_i, phi_earlier = (model(compile_solver(max_iters=j)(a, b, shapes=LARGE_SHAPES)[0])
                              for j in (i, i - window))
        assert phi_i < 0
        return (phi_i - phi_earlier) / phi_i, window

    progress, window = relative_progress(stopped_at)
    assert progress < window * epsilon * (1 + 1e-6)
    progress, window = relative_progress(stopped_at - 1)
    assert progress >= window * epsilon * (1 - 1e-6)
    _, without_rule, _ = compile_solver(max_iters=200)(a, b, shapes=LARGE_SHAPES)
    assert without_rule > stopped_at


def test_diagonal_preconditioner_matches_reference_pcg():
    from sgn_theano.preconditioning.diagonal import diagonal_preconditioner
    rng = np.random.default_rng(7)
    a, b = spd(rng, condition=1e2), rng.standard_normal(N)
    scale, damping = rng.standard_normal(N), 0.1
    matrix = pt.matrix("A", dtype="float64")
    rhs = [pt.tensor(dtype="float64", shape=(None,) * len(shape)) for shape in SHAPES]
    scales = [pt.tensor(dtype="float64", shape=(None,) * len(shape)) for shape in SHAPES]
    precondition = diagonal_preconditioner(scales, pt.constant(damping), exponent=0.75)
    with loops_compiled_in(TEST_MODE):
        result = conjugate_gradient(block_operator(matrix), rhs, max_iters=4,
                                    preconditioner=precondition)
    x = pytensor.function([matrix, *rhs, *scales], result.x, mode=TEST_MODE)(
        a, *split(b), *split(scale))
    inverse = np.diag((scale**2 + damping) ** -0.75)
    expected = reference_cg(a, b, 4, inverse_preconditioner=inverse)
    np.testing.assert_allclose(np.concatenate([xi.ravel() for xi in x]), expected, rtol=1e-9)
    with pytest.raises(ValueError, match="`exponent`"):
        diagonal_preconditioner(scales, pt.constant(damping), exponent=2.0)


MAX_N = 10  # largest unknown drawn below: blocks of ndims (2, 1, 2), sides 0..2


@pytest.fixture(scope="module")
def solvers_by_iterations():
    return {k: compile_solver(max_iters=k) for k in range(1, MAX_N + 1)}


block_shapes = st.tuples(
    st.tuples(st.integers(0, 2), st.integers(0, 2)), st.tuples(st.integers(0, 2)),
    st.tuples(st.integers(0, 2), st.integers(0, 2)),
).filter(lambda shapes: sum(int(np.prod(shape)) for shape in shapes) > 0)


def random_system(shapes, seed, log_condition):
    """(n, A, b): an SPD A of condition 10^log_condition for an unknown of these blocks."""
    n = sum(int(np.prod(shape)) for shape in shapes)
    rng = np.random.default_rng(seed)
    return n, spd(rng, n=n, condition=10.0**log_condition), rng.standard_normal(n)


@settings(max_examples=30, deadline=None)
@given(shapes=block_shapes, seed=st.integers(0, 2**32 - 1), log_condition=st.floats(0.0, 4.0))
def test_property_quadratic_model_never_increases(solvers_by_iterations, shapes, seed,
                                                  log_condition):
    n, a, b = random_system(shapes, seed, log_condition)
    model = quadratic_model(a, b)
    values = [0.0] + [model(solvers_by_iterations[k](a, b, shapes=shapes)[0])
                      for k in range(1, n + 1)]
    assert all(later <= earlier + 1e-9 * abs(earlier) + 1e-12
               for earlier, later in zip(values, values[1:]))


@settings(max_examples=30, deadline=None)
@given(shapes=block_shapes, seed=st.integers(0, 2**32 - 1), log_condition=st.floats(0.0, 2.0))
def test_property_n_iterations_solve_the_system(solvers_by_iterations, shapes, seed,
                                               log_condition):
    # Exact in exact arithmetic; in floating point CG loses orthogonality as the
    # condition number grows (measured: 1e-10 relative error at 1e2, 0.4 at 1e4 for n=9).
    n, a, b = random_system(shapes, seed, log_condition)
    x, solution = solvers_by_iterations[n](a, b, shapes=shapes)[0], np.linalg.solve(a, b)
    assert np.linalg.norm(x - solution) <= 1e-8 * np.linalg.norm(solution)


def test_unrolled_and_looped_iterations_agree():
    from sgn_theano import cg
    rng = np.random.default_rng(11)
    a, b = spd(rng), rng.standard_normal(N)
    k = cg.UNROLLED_MAX_ITERS
    unrolled = compile_solver(max_iters=k)(a, b)
    cg.UNROLLED_MAX_ITERS = 0
    try:
        looped = compile_solver(max_iters=k)(a, b)
    finally:
        cg.UNROLLED_MAX_ITERS = k
    np.testing.assert_allclose(unrolled[0], looped[0], rtol=1e-12)
    assert unrolled[1:] == pytest.approx(looped[1:], rel=1e-12)
    np.testing.assert_allclose(unrolled[0], reference_cg(a, b, k), rtol=1e-9)


@pytest.mark.parametrize("n_blocks", [1, 6])
def test_loop_body_vector_work_does_not_grow_with_the_blocks(n_blocks):
    # CG works on one flat vector: the body's inner products and vector updates are the
    # same few nodes for 1 block or 6 (only the product A v sees the blocks).
    from pytensor.scan.op import Scan
    from pytensor.tensor.math import Dot

    from sgn_theano.preconditioning.diagonal import diagonal_preconditioner
    rhs = [pt.vector(f"b{i}", dtype="float64") for i in range(n_blocks)]
    precondition = diagonal_preconditioner(rhs, pt.constant(0.1))
    result = conjugate_gradient(lambda v: [2.0 * block for block in v], rhs, max_iters=10,
                                preconditioner=precondition)
    (loop,) = {variable.owner for variable in pytensor.graph.traversal.ancestors(result.x)
               if variable.owner is not None and isinstance(variable.owner.op, Scan)}
    nodes = loop.op.fgraph.apply_nodes
    assert sum(isinstance(node.op, Dot) for node in nodes) == 3  # p.Ap, r.z, r.r
    # the preconditioner's diagonal is computed once, outside the loop: no power inside
    assert not any("Pow" in str(node.op) for node in nodes)
