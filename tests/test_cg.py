"""Conjugate gradient against numpy.linalg.solve on block-split SPD systems."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from conftest import TEST_MODE
from hypothesis import given, settings
from hypothesis import strategies as st

from sgn_theano import conjugate_gradient

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
    def matvec(blocks):
        product = matrix @ pt.concatenate([block.flatten() for block in blocks])
        return split(product)
    return matvec


def compile_solver(max_iters, tol=0.0, warm=False, jacobi=False):
    """(A, b[, x0]) -> (x, iterations, residual norm) for symbolic A and block b."""
    matrix = pt.matrix("A", dtype="float64")
    rhs = [pt.tensor(f"b{i}", dtype="float64", shape=(None,) * len(s)) for i, s in enumerate(SHAPES)]
    x0 = [pt.tensor(f"x{i}", dtype="float64", shape=(None,) * len(s))
          for i, s in enumerate(SHAPES)] if warm else None
    preconditioner = None
    if jacobi:
        inverse_diagonal = split(1.0 / pt.diag(matrix))
        preconditioner = lambda r: [d * ri for d, ri in zip(inverse_diagonal, r)]  # noqa: E731
    result = conjugate_gradient(block_operator(matrix), rhs, max_iters=max_iters, tol=tol,
                                x0=x0, preconditioner=preconditioner)
    inputs = [matrix, *rhs, *(x0 or [])]
    function = pytensor.function(inputs, [*result.x, result.iterations, result.residual_norm],
                                 mode=TEST_MODE)

    def solve(a, b, start=None):
        *x, iterations, residual = function(a, *split(b), *(split(start) if warm else []))
        return np.concatenate([block.ravel() for block in x]), int(iterations), float(residual)
    return solve


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


@pytest.fixture(scope="module")
def solvers_by_iterations():
    return {k: compile_solver(max_iters=k) for k in range(1, N + 1)}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), log_condition=st.floats(0.0, 4.0))
def test_property_quadratic_model_never_increases(solvers_by_iterations, seed, log_condition):
    rng = np.random.default_rng(seed)
    a, b = spd(rng, condition=10.0**log_condition), rng.standard_normal(N)
    model = lambda x: 0.5 * x @ a @ x - b @ x  # noqa: E731
    values = [0.0] + [model(solvers_by_iterations[k](a, b)[0]) for k in range(1, N + 1)]
    assert all(later <= earlier + 1e-9 * abs(earlier) + 1e-12
               for earlier, later in zip(values, values[1:]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), log_condition=st.floats(0.0, 2.0))
def test_property_n_iterations_solve_the_system(solvers_by_iterations, seed, log_condition):
    # Exact in exact arithmetic; in floating point CG loses orthogonality as the
    # condition number grows (measured: 1e-10 relative error at 1e2, 0.4 at 1e4 for n=9).
    rng = np.random.default_rng(seed)
    a, b = spd(rng, condition=10.0**log_condition), rng.standard_normal(N)
    x, solution = solvers_by_iterations[N](a, b)[0], np.linalg.solve(a, b)
    assert np.linalg.norm(x - solution) <= 1e-8 * np.linalg.norm(solution)
