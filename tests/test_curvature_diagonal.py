"""The curvature-diagonal estimators, the preconditioners made from them, and K-FAC's
momentum, against dense matrices on small problems (library and plain-PyTensor graphs)."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import (TEST_MODE, assert_resumes_exactly, build_problem, dense_gauss_newton,
                      flatten, make_batch, unflatten)

from sgn_theano import SGN
from sgn_theano.curvature import gauss_newton_product
from sgn_theano.preconditioning.curvature_diagonal import (
    gradient_squares,
    hutchinson_diagonal,
    rademacher_probe,
)
from sgn_theano.preconditioning.diagonal import curvature_preconditioner

DAMPING = 0.5
SIZES = (2, 3, 2)  # 17 parameters
FIXED = dict(cg_tol=0.0, damping=DAMPING, trust_region=False, line_search=False,
             curvature_fraction=1.0, mode=TEST_MODE)


def plain_problem():
    """A tanh MLP 2-3-2 with a hand-written log-softmax loss, in plain PyTensor."""
    rng = np.random.default_rng(3)
    x, y = pt.matrix("x", dtype="float64"), pt.ivector("y")
    w1 = pytensor.shared(rng.normal(size=(2, 3)), name="w1")
    b1 = pytensor.shared(rng.normal(size=3) * 0.1, name="b1")
    w2 = pytensor.shared(rng.normal(size=(3, 2)), name="w2")
    outputs = pt.tanh(x @ w1 + b1) @ w2
    loss = -pt.mean(pt.special.log_softmax(outputs, axis=1)[pt.arange(y.shape[0]), y])
    return loss, outputs, [w1, b1, w2], [x, y]


PROBLEMS = {
    "library": lambda: build_problem("softmax_cross_entropy", "tanh", "float64", sizes=SIZES),
    "plain": plain_problem,
}


def numpy_pcg(matrix, b, diagonal_inverse, iterations):
    """Preconditioned CG from zero with ``M = diag(diagonal_inverse)``."""
    x, r = np.zeros_like(b), b.copy()
    z = diagonal_inverse * r
    p, rz = z.copy(), r @ z
    for _ in range(iterations):
        ap = matrix @ p
        alpha = rz / (p @ ap)
        x, r = x + alpha * p, r - alpha * ap
        z = diagonal_inverse * r
        p, rz = z + (r @ z) / rz * p, r @ z
    return x


def test_probe_is_rademacher_and_a_function_of_the_step():
    probe = rademacher_probe(10_000, 7, "float32")
    assert probe.dtype == np.float32 and set(np.unique(probe)) == {-1.0, 1.0}
    assert abs(probe.mean()) < 0.05  # 5 standard deviations of a fair sign's mean
    np.testing.assert_array_equal(probe, rademacher_probe(10_000, 7, "float32"))
    assert np.mean(probe != rademacher_probe(10_000, 8, "float32")) > 0.4


@pytest.mark.parametrize("what", sorted(PROBLEMS))
def test_hutchinson_estimate_averages_to_the_dense_diagonal(what):
    loss, outputs, params, inputs = PROBLEMS[what]()
    batch = make_batch("softmax_cross_entropy", "float64", features=2, classes=2)
    matrix = dense_gauss_newton(loss, outputs, params, inputs)(*batch)[0]
    probes = [v.type() for v in params]
    estimate = pytensor.function(
        inputs + probes,
        hutchinson_diagonal(lambda v: gauss_newton_product(loss, outputs, params, v), probes),
        mode=TEST_MODE, on_unused_input="ignore")
    size, draws = matrix.shape[0], 4000
    total = np.zeros(size)
    for step in range(draws):
        probe = rademacher_probe(size, step, "float64")
        total += flatten(estimate(*batch, *unflatten(probe, params)))
    # v_j (G v)_j = G_jj + sum_{k != j} G_jk v_j v_k: the mean's error has standard
    # deviation sqrt(sum_{k != j} G_jk^2 / draws); allow five of them.
    off_diagonal = np.sqrt((matrix**2).sum(axis=1) - np.diag(matrix) ** 2)
    np.testing.assert_array_less(np.abs(total / draws - np.diag(matrix)),
                                 5 * off_diagonal / np.sqrt(draws) + 1e-12)


def test_gradient_squares_are_the_squared_gradient(rng):
    g = [pt.vector("g", dtype="float64")]
    value = rng.normal(size=5)
    squares = pytensor.function(g, gradient_squares(g)[0], mode=TEST_MODE)(value)
    np.testing.assert_allclose(squares, value**2, rtol=1e-15)


def test_curvature_preconditioner_clips_negative_estimates(rng):
    d = pt.vector("d", dtype="float64")
    preconditioner = curvature_preconditioner([d], pt.constant(0.25), exponent=0.5)
    weights = pytensor.function([d], preconditioner.inverse_diagonal[0], mode=TEST_MODE)
    np.testing.assert_allclose(weights(np.array([-3.0, 0.0, 0.75])), [2.0, 2.0, 1.0])
    for exponent in (0.25, 0.75, 1.0, 0.3):
        preconditioner = curvature_preconditioner([d], pt.constant(0.25), exponent=exponent)
        value = pytensor.function([d], preconditioner.inverse_diagonal[0], mode=TEST_MODE)(
            np.array([1.75]))
        np.testing.assert_allclose(value, [2.0**-exponent], rtol=1e-12)


def _dense(problem, batch):
    loss, outputs, params, inputs = problem
    matrix, gradient = dense_gauss_newton(loss, outputs, params, inputs)(*batch)
    return matrix + DAMPING * np.eye(len(gradient)), gradient


@pytest.mark.parametrize("what", sorted(PROBLEMS))
def test_gradient_squares_preconditioner_is_pcg_with_the_averaged_squares(what):
    # Two steps on two batches: the second PCG uses the bias-corrected average of both
    # squared gradients, M = (D + eps)^-1/2; 2 iterations so PCG differs from CG.
    problem = PROBLEMS[what]()
    loss, outputs, params, inputs = problem
    batches = [make_batch("softmax_cross_entropy", "float64", features=2, classes=2, seed=s)
               for s in (0, 1)]
    optimizer = SGN(loss, params, outputs, inputs, max_cg_iters=2, model_momentum=False,
                    preconditioner="gradient_squares", preconditioner_decay=0.9,
                    preconditioner_exponent=0.5, preconditioner_epsilon=1e-3, **FIXED)
    squares = []
    for step, batch in enumerate(batches):
        matrix, gradient = _dense(problem, batch)
        squares.append(gradient**2)
        weights = (0.1 * 0.9 ** np.arange(step, -1, -1)) @ np.array(squares)
        average = weights / (1 - 0.9 ** (step + 1))
        expected = numpy_pcg(matrix, -gradient, (average + 1e-3) ** -0.5, 2)
        before = flatten(p.get_value() for p in params)
        assert optimizer.step(*batch).accepted
        np.testing.assert_allclose(flatten(p.get_value() for p in params) - before, expected,
                                   rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(flatten(optimizer.state_dict()["state"]["diagonal"]),
                               (1 - 0.9) * (0.9 * squares[0] + squares[1]), rtol=1e-10)


@pytest.mark.parametrize("what", sorted(PROBLEMS))
def test_hutchinson_preconditioner_is_pcg_with_the_probed_diagonal(what):
    problem = PROBLEMS[what]()
    loss, outputs, params, inputs = problem
    batch = make_batch("softmax_cross_entropy", "float64", features=2, classes=2)
    matrix, gradient = _dense(problem, batch)
    probe = rademacher_probe(len(gradient), 0, "float64")
    estimate = probe * ((matrix - DAMPING * np.eye(len(gradient))) @ probe)
    for iterations, expected in [
        (2, numpy_pcg(matrix, -gradient, (np.maximum(estimate, 0) + DAMPING) ** -0.75, 2)),
        (60, np.linalg.solve(matrix, -gradient)),
    ]:
        for p, value in zip(params, PROBLEMS[what]()[2]):
            p.set_value(value.get_value())
        before = flatten(p.get_value() for p in params)
        SGN(loss, params, outputs, inputs, max_cg_iters=iterations, preconditioner="hutchinson",
            **FIXED).step(*batch)
        np.testing.assert_allclose(flatten(p.get_value() for p in params) - before, expected,
                                   rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("what", sorted(PROBLEMS))
def test_model_momentum_minimizes_the_model_on_the_span(what):
    # One CG iteration, so d is not the model's minimizer and the previous update helps:
    # the second update must be the exact minimizer over span{d, delta_1}.
    problem = PROBLEMS[what]()
    loss, outputs, params, inputs = problem
    batches = [make_batch("softmax_cross_entropy", "float64", features=2, classes=2, seed=s)
               for s in (0, 1)]
    optimizer = SGN(loss, params, outputs, inputs, max_cg_iters=1, model_momentum=True,
                    preconditioner=None, **FIXED)
    previous = np.zeros(0)
    for step, batch in enumerate(batches):
        matrix, gradient = _dense(problem, batch)
        d = numpy_pcg(matrix, -gradient, np.ones_like(gradient), 1)
        if step == 0:
            expected = -(gradient @ d) / (d @ matrix @ d) * d  # mu = 0: no previous update
        else:
            basis = np.stack([d, previous], axis=1)
            coefficients = np.linalg.solve(basis.T @ matrix @ basis, -basis.T @ gradient)
            assert abs(coefficients[1]) > 1e-3  # the previous update does take part
            expected = basis @ coefficients
        before = flatten(p.get_value() for p in params)
        assert optimizer.step(*batch).accepted
        np.testing.assert_allclose(flatten(p.get_value() for p in params) - before, expected,
                                   rtol=1e-7, atol=1e-10)
        previous = expected
    np.testing.assert_allclose(flatten(optimizer.state_dict()["state"]["previous_update"]),
                               previous, rtol=1e-12)


@pytest.mark.parametrize("options", [dict(preconditioner="hutchinson"),
                                     dict(preconditioner="gradient_squares",
                                          model_momentum=True)])
def test_estimator_state_resumes_exactly(options):
    loss, outputs, params, inputs = build_problem("softmax_cross_entropy", "tanh", "float64")
    batches = [make_batch("softmax_cross_entropy", "float64", seed=s) for s in range(6)]
    optimizer = SGN(loss, params, outputs, inputs, mode=TEST_MODE, **options)
    resumed = assert_resumes_exactly(optimizer, batches)
    assert {"diagonal", "diagonal_count"} <= set(resumed["state"])


def test_a_non_finite_gradient_leaves_the_average_untouched():
    loss, outputs, params, inputs = build_problem("softmax_cross_entropy", "tanh", "float64")
    optimizer = SGN(loss, params, outputs, inputs, preconditioner="gradient_squares",
                    mode=TEST_MODE)
    x, y = make_batch("softmax_cross_entropy", "float64")
    optimizer.step(x, y)
    before = optimizer.state_dict()["state"]
    params[0].set_value(params[0].get_value() * np.inf)
    assert not optimizer.step(x, y).accepted
    after = optimizer.state_dict()["state"]
    for role in ("diagonal", "diagonal_count"):
        for a, b in zip(before[role], after[role]):
            assert a.tobytes() == b.tobytes(), role
