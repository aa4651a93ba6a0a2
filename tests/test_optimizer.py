"""The SGN class and the sgn() updates against dense linear algebra and hand-made cases."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import (TEST_MODE, assert_resumes_exactly, build_problem, dense_gauss_newton,
                      flatten, make_batch)

from sgn_theano import SGN, sgn
from sgn_theano.compilation.loop_invariants import loops_compiled_in

DAMPING = 0.5
SIZES = (2, 3, 2)  # 17 parameters


def exact_direction(loss_name="softmax_cross_entropy", activation="tanh", rows=None):
    """A problem, a batch of 5 rows and the exact SGN direction on it; with ``rows``,
    the direction whose Gauss-Newton matrix is that of the first ``rows`` rows only."""
    loss, outputs, params, inputs = build_problem(loss_name, activation, "float64", sizes=SIZES)
    batch = make_batch(loss_name, "float64", features=2, classes=2)
    dense = dense_gauss_newton(loss, outputs, params, inputs)
    gradient = dense(*batch)[1]
    matrix = dense(*[array[:rows] for array in batch])[0]
    direction = -np.linalg.solve(matrix + DAMPING * np.eye(len(gradient)), gradient)
    return (loss, outputs, params, inputs), batch, direction


@pytest.mark.parametrize("loss_name", ["softmax_cross_entropy", "squared_error"])
def test_class_step_with_exact_cg_equals_dense_solution(loss_name):
    (loss, outputs, params, inputs), batch, direction = exact_direction(loss_name)
    before = flatten(p.get_value() for p in params)
    optimizer = SGN(loss, params, outputs, inputs, max_cg_iters=60, cg_tol=0.0,
                    damping=DAMPING, trust_region=False, line_search=False,
                    curvature_fraction=1.0, mode=TEST_MODE)
    info = optimizer.step(*batch)
    assert info.accepted and info.step_size == 1.0 and info.damping == DAMPING
    change = flatten(p.get_value() for p in params) - before
    np.testing.assert_allclose(change, direction, rtol=1e-7, atol=1e-10)


def test_preconditioner_is_used_by_the_class():
    # A constant preconditioner leaves exact PCG's solution unchanged; a zero one gives
    # no search direction, so CG stops at once: both show it is wired in.
    (loss, outputs, params, inputs), batch, direction = exact_direction()
    start = [p.get_value() for p in params]
    options = dict(max_cg_iters=60, cg_tol=0.0, damping=DAMPING, trust_region=False,
                   line_search=False, curvature_fraction=1.0, mode=TEST_MODE)
    before = flatten(start)
    SGN(loss, params, outputs, inputs, preconditioner=lambda r: [4.0 * ri for ri in r],
        **options).step(*batch)
    np.testing.assert_allclose(flatten(p.get_value() for p in params) - before, direction,
                               rtol=1e-7, atol=1e-10)
    for p, value in zip(params, start):
        p.set_value(value)
    info = SGN(loss, params, outputs, inputs, preconditioner=lambda r: [0.0 * ri for ri in r],
               **options).step(*batch)
    assert info.cg_iterations == 0


def test_updates_function_with_exact_cg_equals_dense_solution():
    (loss, outputs, params, inputs), batch, direction = exact_direction()
    before = flatten(p.get_value() for p in params)
    with loops_compiled_in(TEST_MODE):  # the CG loop's body in TEST_MODE too (docs, modes)
        updates = sgn(loss, params, outputs, max_cg_iters=60, damping=DAMPING,
                      learning_rate=0.5)
    pytensor.function(inputs, loss, updates=updates, mode=TEST_MODE)(*batch)
    change = flatten(p.get_value() for p in params) - before
    np.testing.assert_allclose(change, 0.5 * direction, rtol=1e-7, atol=1e-10)


def test_updates_accept_shared_hyperparameters():
    (loss, outputs, params, inputs), batch, direction = exact_direction()
    damping = pytensor.shared(np.float64(1.0))
    with loops_compiled_in(TEST_MODE):
        updates = sgn(loss, params, outputs, max_cg_iters=60, damping=damping)
    train = pytensor.function(inputs, loss, mode=TEST_MODE, updates=updates)
    damping.set_value(DAMPING)  # changed after compiling: the step must use it
    before = flatten(p.get_value() for p in params)
    train(*batch)
    np.testing.assert_allclose(flatten(p.get_value() for p in params) - before, direction,
                               rtol=1e-7, atol=1e-10)


def test_class_and_updates_function_take_the_same_step():
    problem_a = build_problem("softmax_cross_entropy", "relu", "float64", sizes=(3, 5, 3), seed=3)
    problem_b = build_problem("softmax_cross_entropy", "relu", "float64", sizes=(3, 5, 3), seed=3)
    batch = make_batch("softmax_cross_entropy", "float64")
    loss, outputs, params, inputs = problem_a
    SGN(loss, params, outputs, inputs, max_cg_iters=3, damping=1e-2, trust_region=False,
        line_search=False, cg_tol=0.0, curvature_fraction=1.0, mode=TEST_MODE).step(*batch)
    loss, outputs, params_b, inputs = problem_b
    pytensor.function(inputs, loss, mode=TEST_MODE, updates=sgn(
        loss, params_b, outputs, max_cg_iters=3, damping=1e-2))(*batch)
    np.testing.assert_allclose(flatten(p.get_value() for p in params),
                               flatten(p.get_value() for p in params_b), rtol=1e-12)


def linear_regression(seed=0):
    """A linear model with squared error: the loss is exactly the SGN quadratic model."""
    rng = np.random.default_rng(seed)
    x, y = pt.matrix("x", dtype="float64"), pt.matrix("y", dtype="float64")
    weights = pytensor.shared(rng.standard_normal((4, 2)), name="W")
    outputs = x @ weights
    loss = 0.5 * pt.sum((outputs - y) ** 2) / x.shape[0]
    batch = (rng.standard_normal((20, 4)), rng.standard_normal((20, 2)))
    return loss, outputs, [weights], [x, y], batch


def test_line_search_shrinks_a_step_that_increases_the_loss():
    loss, outputs, params, inputs, batch = linear_regression()
    start = params[0].get_value()
    blind = SGN(loss, params, outputs, inputs, learning_rate=5.0, line_search=False,
                trust_region=False, mode=TEST_MODE).step(*batch)
    assert blind.accepted and np.isnan(blind.loss_after)  # nothing needed the new loss
    params[0].set_value(start)
    info_blind = SGN(loss, params, outputs, inputs, learning_rate=5.0, line_search=False,
                     mode=TEST_MODE).step(*batch)
    assert info_blind.loss_after > info_blind.loss  # the full step goes uphill
    params[0].set_value(start)
    info = SGN(loss, params, outputs, inputs, learning_rate=5.0, mode=TEST_MODE).step(*batch)
    assert info.accepted and info.line_search_tries > 1
    assert info.step_size == 5.0 * 0.5 ** (info.line_search_tries - 1)
    assert info.loss_after < info.loss


def test_trust_region_lowers_damping_when_the_model_is_exact():
    loss, outputs, params, inputs, batch = linear_regression()
    optimizer = SGN(loss, params, outputs, inputs, damping=1e-3, min_damping=1e-6,
                    curvature_fraction=1.0, mode=TEST_MODE)
    info = optimizer.step(*batch)
    assert info.ratio == pytest.approx(1.0, abs=1e-2)
    assert optimizer.damping == pytest.approx(1e-3 * 2 / 3)


def test_trust_region_rejects_a_poor_step_and_raises_damping():
    loss, outputs, params, inputs = build_problem("softmax_cross_entropy", "tanh", "float64")
    optimizer = SGN(loss, params, outputs, inputs, learning_rate=50.0, line_search=False,
                    damping=1e-3, min_damping=1e-6, mode=TEST_MODE)
    before = [p.get_value().tobytes() for p in params]
    info = optimizer.step(*make_batch("softmax_cross_entropy", "float64"))
    # At alpha = 50 the loss rises and the model itself predicts an increase: r is nan.
    assert info.loss_after > info.loss and np.isnan(info.ratio)
    assert not info.accepted
    assert info.reason == "trust-region ratio below the rejection threshold"
    assert [p.get_value().tobytes() for p in params] == before
    assert optimizer.damping == pytest.approx(1.5e-3)


def poisoned_problem():
    """Squared error plus a NaN switched on by the third input."""
    loss, outputs, params, (x, y), batch = linear_regression()
    poison = pt.dscalar("poison")
    loss = loss + pt.switch(poison > 0, np.nan, 0.0)
    return loss, outputs, params, [x, y, poison], batch


def test_nan_loss_is_rejected_and_parameters_stay_byte_identical():
    loss, outputs, params, inputs, batch = poisoned_problem()
    optimizer = SGN(loss, params, outputs, inputs, mode=TEST_MODE)
    optimizer.step(*batch, np.float64(0.0))
    before = params[0].get_value().tobytes()
    damping = optimizer.damping
    info = optimizer.step(*batch, np.float64(1.0))
    assert not info.accepted and info.reason == "non-finite loss or gradient"
    assert params[0].get_value().tobytes() == before
    assert optimizer.damping == pytest.approx(1.5 * damping)
    assert optimizer.step(*batch, np.float64(0.0)).accepted  # training continues


def test_state_dict_resumes_exactly():
    loss, outputs, params, inputs = build_problem("softmax_cross_entropy", "tanh", "float64")
    batches = [make_batch("softmax_cross_entropy", "float64", seed=s) for s in range(6)]
    optimizer = SGN(loss, params, outputs, inputs, momentum=0.9, warm_start=0.5, mode=TEST_MODE)
    assert_resumes_exactly(optimizer, batches)


def test_momentum_and_warm_start_buffers():
    loss, outputs, params, inputs, batch = linear_regression()
    gradient = pytensor.function(inputs, pytensor.grad(loss, params[0]), mode=TEST_MODE)(*batch)
    start = params[0].get_value()
    optimizer = SGN(loss, params, outputs, inputs, momentum=0.9, warm_start=0.95,
                    mode=TEST_MODE)
    info = optimizer.step(*batch)
    state = optimizer.state_dict()["state"]
    np.testing.assert_allclose(state["momentum"][0], 0.1 * gradient, rtol=1e-12)
    np.testing.assert_allclose(state["direction"][0] * info.step_size,
                               params[0].get_value() - start, rtol=1e-12)
