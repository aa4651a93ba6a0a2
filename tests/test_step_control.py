"""SGN step control: rejection, damping schedules, the Jacobi option, warm start."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import TEST_MODE, dense_gauss_newton, flatten
from test_optimizer import DAMPING, exact_direction, linear_regression, poisoned_problem

from sgn_theano import SGN


@pytest.mark.parametrize("schedule, fractions", [
    ("linear", [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]),
    ("cosine", [1.0, (1 + np.cos(np.pi / 4)) / 2, 0.5, (1 + np.cos(3 * np.pi / 4)) / 2, 0.0,
                0.0]),
])
def test_schedules_set_the_damping_of_each_step(schedule, fractions):
    # rho_t = 0.01 + (1 - 0.01) f(min(t / 4, 1))
    loss, outputs, params, inputs, batch = linear_regression()
    optimizer = SGN(loss, params, outputs, inputs, trust_region=False, damping=1.0,
                    min_damping=0.01, damping_schedule=schedule, damping_decay_steps=4,
                    mode=TEST_MODE)
    used = [optimizer.step(*batch).damping for _ in fractions]
    np.testing.assert_allclose(used, [0.01 + 0.99 * f for f in fractions], rtol=1e-12)


def test_rejection_without_trust_region_raises_damping_then_returns_to_schedule():
    loss, outputs, params, inputs, batch = poisoned_problem()
    optimizer = SGN(loss, params, outputs, inputs, trust_region=False, damping=0.1,
                    mode=TEST_MODE)
    before = params[0].get_value().tobytes()
    info = optimizer.step(*batch, np.float64(1.0))
    assert not info.accepted and params[0].get_value().tobytes() == before
    assert optimizer.damping == pytest.approx(0.15)
    assert optimizer.step(*batch, np.float64(0.0)).damping == pytest.approx(0.15)
    assert optimizer.damping == pytest.approx(0.1)  # the constant schedule again


def hyperbolic_problem():
    """L(w) = sqrt(1 + w^2) at w = 3: with rho = 0.14 the exact Gauss-Newton step lowers
    the loss, yet by far less than the quadratic model predicts."""
    x = pt.matrix("x", dtype="float64")
    weight = pytensor.shared(np.array([[3.0]]), name="w")
    outputs = x @ weight
    loss = pt.mean(pt.sqrt(1 + outputs**2))
    return loss, outputs, [weight], [x], (np.ones((1, 1)),)


def expected_ratio(w=3.0, rho=0.14):
    value = np.sqrt(1 + w * w)
    gradient, curvature = w / value, value**-3
    d = -gradient / (curvature + rho)
    predicted = gradient * d + (curvature + rho) * d * d / 2
    return (np.sqrt(1 + (w + d) ** 2) - value) / predicted  # 0.169


@pytest.mark.parametrize("threshold", [0.0, 0.2])
def test_ratio_below_threshold_is_rejected_even_when_the_loss_decreases(threshold):
    loss, outputs, params, inputs, batch = hyperbolic_problem()
    optimizer = SGN(loss, params, outputs, inputs, damping=0.14, line_search=False,
                    rejection_threshold=threshold, cg_tol=0.0, mode=TEST_MODE)
    info = optimizer.step(*batch)
    assert info.loss_after < info.loss
    assert info.ratio == pytest.approx(expected_ratio(), rel=1e-9)
    assert optimizer.damping == pytest.approx(0.21)  # r < 1/4 raises rho either way
    if threshold == 0.0:
        assert info.accepted and params[0].get_value()[0, 0] != 3.0
    else:
        assert not info.accepted
        assert info.reason == "trust-region ratio below the rejection threshold"
        assert params[0].get_value().tobytes() == np.array([[3.0]]).tobytes()


def test_momentum_direction_that_is_not_descent_is_rejected():
    # After one step the bias-corrected average is m = g1; targets y = x (W + 0.3 m) give
    # the gradient g2 = -0.3 (x^T x / B) m, too small to turn the average round:
    # g2^T d > 0 for the direction d solving for -(0.95 m + 0.05 g2) / (1 - 0.95^2).
    loss, outputs, params, inputs, (x, y) = linear_regression()
    optimizer = SGN(loss, params, outputs, inputs, momentum=0.95, line_search=False,
                    trust_region=False, max_cg_iters=3, preconditioner=None,
                    model_momentum=False, mode=TEST_MODE)
    assert optimizer.step(x, y).accepted
    (buffer,) = optimizer.state_dict()["state"]["momentum"]
    before = params[0].get_value().tobytes()
    info = optimizer.step(x, x @ (params[0].get_value() + 0.3 * buffer / 0.05))
    assert not info.accepted
    assert info.reason == "non-finite search direction, or not a descent direction"
    assert params[0].get_value().tobytes() == before
    assert optimizer.damping == pytest.approx(1.5 * optimizer.config["damping"])


def test_jacobi_option_is_preconditioned_cg_with_the_gradient_scale():
    # With 2 iterations PCG differs from CG: compare with numpy PCG on the dense system,
    # M = (g^2 + rho)^-3/4; with 60 it reaches the dense solution like plain CG.
    (loss, outputs, params, inputs), batch, direction = exact_direction()
    matrix, gradient = dense_gauss_newton(loss, outputs, params, inputs)(*batch)
    a, b = matrix + DAMPING * np.eye(len(gradient)), -gradient
    m = np.diag((gradient**2 + DAMPING) ** -0.75)
    x, r = np.zeros_like(b), b.copy()
    z = m @ r
    p, rz = z.copy(), r @ z
    for _ in range(2):
        ap = a @ p
        alpha = rz / (p @ ap)
        x, r = x + alpha * p, r - alpha * ap
        z = m @ r
        p, rz = z + (r @ z) / rz * p, r @ z
    start = [p_.get_value() for p_ in params]
    options = dict(cg_tol=0.0, damping=DAMPING, trust_region=False, line_search=False,
                   preconditioner="jacobi", curvature_fraction=1.0, mode=TEST_MODE)
    for iterations, expected in [(2, x), (60, direction)]:
        for param, value in zip(params, start):
            param.set_value(value)
        SGN(loss, params, outputs, inputs, max_cg_iters=iterations, **options).step(*batch)
        np.testing.assert_allclose(flatten(p_.get_value() for p_ in params) - flatten(start),
                                   expected, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("damping, warm_start_used", [(3.0, True), (1e-3, False)])
def test_warm_start_is_used_when_it_beats_zero(damping, warm_start_used):
    # One CG iteration from x0 on the exact quadratic of least squares, computed densely:
    # r0 = b - A x0, x1 = x0 + (r0.r0 / r0.A r0) r0, with x0 = 0.95 d_prev if that beats
    # zero on the model (a short, heavily damped first step) and x0 = 0 otherwise (an
    # overshooting one).
    loss, outputs, params, inputs, (x, y) = linear_regression()
    optimizer = SGN(loss, params, outputs, inputs, max_cg_iters=1, trust_region=False,
                    line_search=False, damping=damping, warm_start=0.95,
                    curvature_fraction=1.0, preconditioner=None, model_momentum=False,
                    mode=TEST_MODE)
    optimizer.step(x, y)
    (previous,) = optimizer.state_dict()["state"]["direction"]
    start = params[0].get_value()
    a = np.kron(x.T @ x / len(x), np.eye(2)) + damping * np.eye(8)  # W (4, 2), row-major
    b = -(x.T @ (x @ start - y) / len(x)).ravel()
    x0 = 0.95 * previous.ravel()
    assert (0.5 * x0 @ a @ x0 - b @ x0 < 0) == warm_start_used
    x0 = x0 if warm_start_used else np.zeros(8)
    r0 = b - a @ x0
    expected = x0 + (r0 @ r0) / (r0 @ a @ r0) * r0
    optimizer.step(x, y)
    np.testing.assert_allclose((params[0].get_value() - start).ravel(), expected, rtol=1e-9)


def test_a_loss_concave_in_the_outputs_is_named_and_changes_nothing():
    # log(1 + r^2) (a Cauchy, Student-t with nu = 1, negative log-likelihood) is concave
    # in the output for |r| > 1: far from the targets G is negative definite.
    rng = np.random.default_rng(3)
    x, y = pt.matrix("x", dtype="float64"), pt.matrix("y", dtype="float64")
    weights = pytensor.shared(rng.standard_normal((4, 1)), name="W")
    outputs = x @ weights
    loss = pt.mean(pt.log1p((outputs - y) ** 2))
    optimizer = SGN(loss, [weights], outputs, [x, y], curvature_fraction=1.0, mode=TEST_MODE)
    batch_x = 10 * rng.standard_normal((20, 4))
    batch_y = batch_x @ weights.get_value() + 30.0  # every residual -30
    before = weights.get_value().tobytes()
    info = optimizer.step(batch_x, batch_y)
    assert not info.accepted and info.cg_iterations == 0
    assert "`loss` is not convex in `outputs`" in info.reason
    assert weights.get_value().tobytes() == before
