"""First-order baselines against their update rules written in numpy."""

import numpy as np
import pytensor
import pytest
from helpers import TEST_MODE, build_problem, make_batch

from sgn_theano import adam, momentum, sgd


@pytest.fixture
def problem():
    loss, outputs, params, inputs = build_problem("squared_error", "tanh", "float64")
    batch = make_batch("squared_error", "float64")
    gradient = pytensor.function(inputs, pytensor.grad(loss, params), mode=TEST_MODE)
    return loss, params, inputs, batch, gradient


def values(params):
    return [p.get_value() for p in params]


def test_sgd(problem):
    loss, params, inputs, batch, gradient = problem
    start, grads = values(params), gradient(*batch)
    pytensor.function(inputs, loss, updates=sgd(loss, params, 0.1), mode=TEST_MODE)(*batch)
    for p, p0, g in zip(params, start, grads):
        np.testing.assert_allclose(p.get_value(), p0 - 0.1 * g, rtol=1e-12)


def test_momentum_two_steps(problem):
    loss, params, inputs, batch, gradient = problem
    step = pytensor.function(inputs, loss, updates=momentum(loss, params, 0.1, 0.9), mode=TEST_MODE)
    p0 = values(params)
    g0 = gradient(*batch)
    step(*batch)
    g1 = gradient(*batch)
    step(*batch)
    for p, start, a, b in zip(params, p0, g0, g1):
        v1 = -0.1 * a
        v2 = 0.9 * v1 - 0.1 * b
        np.testing.assert_allclose(p.get_value(), start + v1 + v2, rtol=1e-10)


def test_adam_first_step_is_learning_rate_times_sign(problem):
    # Lasagne's form: epsilon is added to sqrt(v) before the bias correction, so on the
    # first step it acts as epsilon / sqrt(1 - beta2).
    loss, params, inputs, batch, gradient = problem
    start, grads = values(params), gradient(*batch)
    pytensor.function(inputs, loss, updates=adam(loss, params, 0.01), mode=TEST_MODE)(*batch)
    for p, p0, g in zip(params, start, grads):
        expected = p0 - 0.01 * g / (np.abs(g) + 1e-8 / np.sqrt(1 - 0.999))
        np.testing.assert_allclose(p.get_value(), expected, rtol=1e-6, atol=1e-12)


def test_shared_learning_rate_changes_without_recompiling(problem):
    loss, params, inputs, batch, gradient = problem
    rate = pytensor.shared(np.float64(0.0))
    step = pytensor.function(inputs, loss, updates=sgd(loss, params, rate), mode=TEST_MODE)
    start = values(params)
    step(*batch)
    assert all(np.array_equal(p.get_value(), s) for p, s in zip(params, start))
    rate.set_value(0.5)
    grads = gradient(*batch)
    step(*batch)
    for p, s, g in zip(params, start, grads):
        np.testing.assert_allclose(p.get_value(), s - 0.5 * g, rtol=1e-12)
