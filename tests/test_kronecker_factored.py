"""K-FAC: the factors against per-row dense computations, the preconditioner against
dense solves (exact where the factored form is), and its state (resume, inverses)."""

import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import (TEST_MODE, assert_resumes_exactly, dense_gauss_newton, evaluated,
                     flatten)

from sgn_theano import SGN
from sgn_theano.cg import conjugate_gradient
from sgn_theano import losses
from sgn_theano.curvature import gauss_newton_product, loss_hessian_operator, loss_hessian_root
from sgn_theano.models import cnn
from sgn_theano.preconditioning.kronecker_factored import (
    EXACT_INVERSE_LIMIT,
    KroneckerPreconditioner,
    damped_inverses,
    factor_statistics,
    identity_inverse,
    times_inverse,
)
from sgn_theano.preconditioning.layer_detection import find_layers

ROWS, FEATURES, HIDDEN, CLASSES = 5, 3, 4, 3


def plain_classifier(seed=0, library_loss=False):
    """A tanh MLP 3-4-3 in plain PyTensor with a hand-written cross-entropy (or the
    library's, which records a square root of its Hessian)."""
    rng = np.random.default_rng(seed)
    x, y = pt.matrix("x", dtype="float64"), pt.ivector("y")
    w1 = pytensor.shared(rng.normal(size=(FEATURES, HIDDEN)), name="w1")
    b1 = pytensor.shared(rng.normal(size=HIDDEN) * 0.1, name="b1")
    w2 = pytensor.shared(rng.normal(size=(HIDDEN, CLASSES)), name="w2")
    b2 = pytensor.shared(rng.normal(size=CLASSES) * 0.1, name="b2")
    outputs = pt.tanh(x @ w1 + b1) @ w2 + b2
    loss = (losses.softmax_cross_entropy(outputs, y) if library_loss else
            -pt.mean(pt.special.log_softmax(outputs, axis=1)[pt.arange(y.shape[0]), y]))
    return loss, outputs, [w1, b1, w2, b2], [x, y]


def batch(seed=0, rows=ROWS):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, FEATURES)), rng.integers(0, CLASSES, rows).astype("int32")


def statistics_function(loss, outputs, params, inputs):
    layers = find_layers(outputs, params)
    probe = pt.matrix("probe", dtype="float64")
    statistics = factor_statistics(layers.layers, outputs, probe,
                                   loss_hessian_operator(loss, outputs),
                                   loss_hessian_root(loss, outputs))
    return layers, pytensor.function(inputs + [probe], statistics, mode=TEST_MODE,
                                     on_unused_input="ignore")  # the labels, with a root


def exact_statistics(function, arrays, width):
    """The factors averaged over every sign pattern of the probe (the same pattern on
    every row): the expectation over Rademacher probes, exactly."""
    draws = [function(*arrays, np.tile(np.array(signs, dtype="float64"), (ROWS, 1)))
             for signs in itertools.product((-1.0, 1.0), repeat=width)]
    return [np.mean(values, axis=0) for values in zip(*draws)]


@pytest.mark.parametrize("library_loss", [False, True], ids=["hand-written", "library"])
def test_factors_equal_the_per_row_dense_computations(library_loss):
    loss, outputs, params, inputs = plain_classifier(library_loss=library_loss)
    assert (loss_hessian_root(loss, outputs) is not None) == library_loss
    layers, function = statistics_function(loss, outputs, params, inputs)
    x, y = batch()
    w1, b1, w2, b2 = (p.get_value() for p in params)
    hidden = np.tanh(x @ w1 + b1)
    logits = hidden @ w2 + b2
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    first_a = np.zeros((FEATURES + 1, FEATURES + 1))
    first_s = np.zeros((HIDDEN, HIDDEN))
    second_a = np.zeros((HIDDEN + 1, HIDDEN + 1))
    second_s = np.zeros((CLASSES, CLASSES))
    for i in range(ROWS):
        hessian = np.diag(probabilities[i]) - np.outer(probabilities[i], probabilities[i])
        jacobian = w2.T * (1 - hidden[i] ** 2)  # d logits_i / d s1_i, (CLASSES, HIDDEN)
        first_a += np.outer(np.append(x[i], 1), np.append(x[i], 1)) / ROWS
        second_a += np.outer(np.append(hidden[i], 1), np.append(hidden[i], 1)) / ROWS
        first_s += jacobian.T @ hessian @ jacobian / ROWS
        second_s += hessian / ROWS
    statistics = exact_statistics(function, [x, y], CLASSES)
    if library_loss:  # one backward pass of R e: every draw is positive semi-definite
        draw = function(x, y, np.random.default_rng(0).choice([-1.0, 1.0], (ROWS, CLASSES)))
        assert min(np.linalg.eigvalsh(draw[1]).min(), np.linalg.eigvalsh(draw[3]).min()) > -1e-12
    for got, want in zip(statistics, [first_a, first_s, second_a, second_s]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # one draw is an unbiased estimate: its mean over many draws comes near the exact S
    rng = np.random.default_rng(5)
    draws = [function(x, y, rng.choice([-1.0, 1.0], size=(ROWS, CLASSES)))[1]
             for _ in range(2000)]
    np.testing.assert_allclose(np.mean(draws, axis=0), first_s, atol=0.05 * np.abs(first_s).max())


def test_one_linear_layer_with_squared_error_is_solved_in_one_iteration():
    # z = x W + b, 0.5 mean ||z - t||^2 (written by hand): G = A (x) I exactly, so PCG
    # with M = (A (x) S)^-1 (damping ~0) solves G d = -g in one iteration.
    rng = np.random.default_rng(2)
    x, t = pt.matrix("x", dtype="float64"), pt.matrix("t", dtype="float64")
    w = pytensor.shared(rng.normal(size=(FEATURES, 2)), name="w")
    b = pytensor.shared(rng.normal(size=2), name="b")
    outputs = x @ w + b
    loss = 0.5 * pt.mean(pt.sum((outputs - t) ** 2, axis=1))
    params = [w, b]
    layers, function = statistics_function(loss, outputs, params, [x, t])
    arrays = [rng.normal(size=(ROWS, FEATURES)), rng.normal(size=(ROWS, 2))]
    a, s = exact_statistics(function, arrays, 2)
    np.testing.assert_allclose(s, np.eye(2), atol=1e-12)
    inverses = [pytensor.shared(value) for value in evaluated(damped_inverses(a, s, 0.0))]
    preconditioner = KroneckerPreconditioner(params, layers.layers, inverses, {})
    gradients = pytensor.grad(loss, params)
    solution = conjugate_gradient(lambda v: gauss_newton_product(loss, outputs, params, v),
                                  [-g for g in gradients], max_iters=1,
                                  preconditioner=preconditioner, early_exit=False)
    step, gradient = pytensor.function([x, t], [pt.concatenate([d.ravel() for d in solution.x]),
                                                pt.concatenate([g.ravel() for g in gradients])],
                                       mode=TEST_MODE)(*arrays)
    matrix = dense_gauss_newton(loss, outputs, params, [x, t])(*arrays)[0]
    # damped_inverses floors gamma = sqrt(rho) at float32's epsilon: exact to ~1e-6
    solution = np.linalg.solve(matrix, -gradient)
    np.testing.assert_allclose(step, solution, atol=1e-5 * np.abs(solution).max())


def tiny_cnn():
    x, y = pt.matrix("x", dtype="float64"), pt.ivector("y")
    outputs, params = cnn(x, (4, 4, 1), [("conv", 2, 3), ("dense", 3)], activation="tanh",
                          seed=0, dtype="float64")
    loss = -pt.mean(pt.special.log_softmax(outputs, axis=1)[pt.arange(y.shape[0]), y])
    return loss, outputs, params, [x, y]


PROBLEMS = {"mlp": (plain_classifier, FEATURES), "cnn": (tiny_cnn, 16)}


@pytest.mark.parametrize("what", sorted(PROBLEMS))
def test_kfac_pcg_reaches_the_dense_solve(what):
    # Three steps refresh the inverses from averaged factors; the fourth runs PCG to
    # convergence, which any SPD preconditioner must leave at (G + rho I)^-1 (-g).
    build, features = PROBLEMS[what]
    loss, outputs, params, inputs = build()
    count = sum(p.get_value().size for p in params)
    optimizer = SGN(loss, params, outputs, inputs, preconditioner="kfac",
                    kfac_inverse_interval=1, max_cg_iters=count + 5, cg_tol=0.0,
                    cg_progress_tol=0.0, damping=0.5, trust_region=False, line_search=False,
                    curvature_fraction=1.0, mode=TEST_MODE)
    assert optimizer.layers.diagonal == []
    rng = np.random.default_rng(3)
    batches = [(rng.normal(size=(6, features)), rng.integers(0, 3, 6).astype("int32"))
               for _ in range(4)]
    for arrays in batches[:3]:
        optimizer.step(*arrays)
    inverse = optimizer.state.factor_inverses[0].get_value()
    assert not np.allclose(inverse, np.eye(len(inverse)))
    matrix, gradient = dense_gauss_newton(loss, outputs, params, inputs)(*batches[3])
    before = flatten(p.get_value() for p in params)
    assert optimizer.step(*batches[3]).accepted
    np.testing.assert_allclose(flatten(p.get_value() for p in params) - before,
                               np.linalg.solve(matrix + 0.5 * np.eye(count), -gradient),
                               rtol=1e-6, atol=1e-9)


def test_inverses_use_factored_tikhonov_damping():
    rng = np.random.default_rng(4)
    root = rng.normal(size=(4, 4))
    a = root @ root.T
    for s, clipped in [(np.diag([2.0, -1e-3, 0.5]), np.diag([2.0, -1e-3, 0.5])),
                       # a negative eigenvalue beyond the shift is clipped to zero
                       (np.diag([2.0, -1.5, 2.5]), np.diag([2.0, 0.0, 2.5]))]:
        a_inverse, s_inverse = evaluated(damped_inverses(a, s, 0.09, output_definite=False))
        ratio = np.sqrt((np.trace(a) / 4) / (np.trace(s) / 3))
        np.testing.assert_allclose(a_inverse, np.linalg.inv(a + ratio * 0.3 * np.eye(4)))
        np.testing.assert_allclose(s_inverse, np.linalg.inv(clipped + 0.3 / ratio * np.eye(3)))
        np.testing.assert_array_equal(s_inverse, s_inverse.T)


def test_a_failed_factorization_keeps_the_last_inverse():
    """A factor positive semi-definite by construction whose damped Cholesky factorization
    fails anyway (here, given one with a negative eigenvalue beyond the shift) keeps the
    last refresh's inverse; the other factor is inverted as usual."""
    a, s = np.diag([2.0, -1.0, 1.0]), np.diag([1.0, 2.0])
    previous = (np.full((3, 3), 7.0), np.full((2, 2), 5.0))
    a_inverse, s_inverse = evaluated(damped_inverses(a, s, 0.01, previous=previous))
    np.testing.assert_array_equal(a_inverse, previous[0])
    ratio = np.sqrt((np.trace(a) / 3) / (np.trace(s) / 2))
    np.testing.assert_allclose(s_inverse, np.linalg.inv(s + 0.1 / ratio * np.eye(2)))


def test_a_refresh_before_any_averaged_factor_keeps_the_inverses():
    loss, outputs, params, inputs = plain_classifier()
    optimizer = SGN(loss, params, outputs, inputs, curvature_fraction=0.6, mode=TEST_MODE)
    fresh = [inverse.get_value() for inverse in optimizer.state.factor_inverses]
    optimizer.inverse_refresh()
    for inverse, value in zip(optimizer.state.factor_inverses, fresh):
        np.testing.assert_array_equal(inverse.get_value(), value)
    optimizer.step(*batch(0))  # one averaged estimate, and a refresh
    assert not np.allclose(optimizer.state.factor_inverses[0].get_value(), fresh[0])


def test_kfac_state_resumes_exactly_and_refreshes_on_schedule():
    loss, outputs, params, inputs = plain_classifier()
    optimizer = SGN(loss, params, outputs, inputs, preconditioner="kfac",
                    kfac_inverse_interval=2, curvature_fraction=0.6, mode=TEST_MODE)
    batches = [batch(seed) for seed in range(6)]
    optimizer.step(*batches[0])
    refreshed = optimizer.state.factor_inverses[0].get_value().copy()
    assert not np.allclose(refreshed, np.eye(len(refreshed)))  # after step 1
    optimizer.step(*batches[1])
    np.testing.assert_array_equal(optimizer.state.factor_inverses[0].get_value(), refreshed)
    for p, value in zip(params, plain_classifier()[2]):
        p.set_value(value.get_value())
    optimizer.load_state_dict(SGN(loss, params, outputs, inputs, preconditioner="kfac",
                                  kfac_inverse_interval=2, curvature_fraction=0.6,
                                  mode=TEST_MODE).state_dict())
    resumed = assert_resumes_exactly(optimizer, batches)
    assert {"factors", "factor_count", "factor_inverses"} <= set(resumed["state"])
    assert int(resumed["state"]["factor_count"][0]) == 6


def test_warm_up_compiles_and_leaves_every_state_array_as_it_was():
    loss, outputs, params, inputs = plain_classifier()
    optimizer = SGN(loss, params, outputs, inputs, curvature_fraction=0.6, mode=TEST_MODE)
    for seed in range(2):
        optimizer.step(*batch(seed))
    before = optimizer.state_dict()
    optimizer.warm_up(*batch(5))
    after = optimizer.state_dict()
    assert optimizer.step_count == 2 and after["config"] == before["config"]
    for role, arrays in before["state"].items():
        assert [a.tobytes() for a in arrays] == [a.tobytes() for a in after["state"][role]], role


@pytest.mark.parametrize("spectrum", ["low rank", "flat tail"])
def test_wide_factors_get_a_low_rank_plus_isotropic_inverse(spectrum):
    """A factor wider than EXACT_INVERSE_LIMIT: its packed inverse, applied from either
    side in the graph, equals the dense damped inverse where the approximation is exact
    (rank at most ``kfac_rank``, or every other eigenvalue equal)."""
    rng = np.random.default_rng(5)
    dimension, rank, shift_damping = EXACT_INVERSE_LIMIT + 3, 16, 0.04
    basis = np.linalg.qr(rng.normal(size=(dimension, rank)))[0]
    values = np.sort(rng.uniform(10.0, 30.0, size=rank))
    tail = 0.0 if spectrum == "low rank" else 0.3
    factor = (basis * (values - tail)) @ basis.T + tail * np.eye(dimension)
    small = np.diag(rng.uniform(0.5, 2.0, size=3))  # an exact (3, 3) partner factor
    wide_inverse, small_inverse = evaluated(damped_inverses(factor, small, shift_damping,
                                                            rank=rank))
    assert wide_inverse.shape == (dimension + 1, rank + 1) and small_inverse.shape == (3, 3)
    # the shift damped_inverses gives the wide factor: pi * sqrt(rho)
    ratio = np.sqrt((np.trace(factor) / dimension) / (np.trace(small) / 3))
    dense = np.linalg.inv(factor + ratio * np.sqrt(shift_damping) * np.eye(dimension))
    packed = pytensor.shared(wide_inverse)
    left, right = pt.matrix("left"), pt.matrix("right")
    apply = pytensor.function([left, right], [times_inverse(left, packed, "left"),
                                              times_inverse(right, packed, "right")],
                              mode=TEST_MODE)
    left_value, right_value = rng.normal(size=(dimension, 4)), rng.normal(size=(4, dimension))
    from_left, from_right = apply(left_value, right_value)
    # A flat tail's top eigenvectors come from three products with the factor: exact
    # to about (0.3 / 10)^3 (the range finder's power iterations).
    tolerance = 1e-9 if spectrum == "low rank" else 1e-3
    for value, expected in ((from_left, dense @ left_value), (from_right, right_value @ dense)):
        assert np.linalg.norm(value - expected) <= tolerance * np.linalg.norm(expected)
    # A refresh from the last one's eigenvectors (one step of subspace iteration) refines.
    refined = pytensor.shared(evaluated(damped_inverses(
        factor, small, shift_damping, rank=rank, previous=(wide_inverse, small_inverse)))[0])
    expected = dense @ left_value
    error = np.linalg.norm(pytensor.function([left], times_inverse(left, refined, "left"),
                                             mode=TEST_MODE)(left_value) - expected)
    assert error <= max(np.linalg.norm(from_left - expected), 1e-9 * np.linalg.norm(expected))
    assert identity_inverse(dimension, 10 * dimension, "float64").shape == evaluated(
        damped_inverses(factor, small, shift_damping, rank=10 * dimension))[0].shape == (
            dimension + 1, dimension - 7)
    fresh = identity_inverse(dimension, rank, "float64")
    np.testing.assert_array_equal(
        pytensor.function([left], times_inverse(left, pytensor.shared(fresh), "left"),
                          mode=TEST_MODE)(left_value), left_value)


def test_the_refresh_runs_the_host_blas_on_one_thread():
    """K-FAC's refresh (LAPACK in C mode) runs with every BLAS library of the process on
    one thread, and their thread counts are restored after: worker threads left spinning
    would slow the next step."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    loss, outputs, params, inputs = plain_classifier()
    optimizer = SGN(loss, params, outputs, inputs, curvature_fraction=0.6, mode=TEST_MODE)
    refresh, seen = optimizer.inverse_refresh, []

    def watched():
        seen.append({info["filepath"]: info["num_threads"]
                     for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"})
        refresh()

    optimizer.inverse_refresh = watched
    before = {info["filepath"]: info["num_threads"]
              for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"}
    optimizer.step(*batch(0))  # a refresh is due after the first step
    assert len(seen) == 1 and set(seen[0].values()) == {1}
    assert {info["filepath"]: info["num_threads"] for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"} == before
