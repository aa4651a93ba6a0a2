"""The stages of the SGN step, each on its own (no whole step compiled), and the
state record they read (the options: ``test_sgn_config.py``)."""

import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import TEST_MODE

from sgn_theano import SGNConfig
from sgn_theano.sgn_state import SGNState
from sgn_theano.damping import INCREASE_FACTOR
from sgn_theano.step_stages import (
    Rejection,
    StepInfo,
    StepOutputs,
    choose_step_size,
    next_damping,
    rejection_status,
    right_hand_side,
    trust_ratio,
)


def shared_params(rng, shapes=((2, 3), (3,))):
    return [pytensor.shared(rng.standard_normal(shape), name=f"p{i}")
            for i, shape in enumerate(shapes)]


def test_state_holds_the_roles_the_options_use(rng):
    params = shared_params(rng)
    plain = SGNState.create(params, SGNConfig(preconditioner=None, model_momentum=False),
                            "float64")
    assert list(plain.roles()) == ["params", "damping", "step_count"]
    assert plain.momentum == [] and plain.momentum_count is None and plain.direction == []
    full = SGNState.create(params, SGNConfig(momentum=0.9, warm_start=0.5, preconditioner=None,
                                             model_momentum=False), "float64")
    roles = full.roles()
    assert list(roles) == ["params", "damping", "step_count", "momentum", "momentum_count",
                           "direction"]
    assert [len(roles[role]) for role in roles] == [2, 1, 1, 2, 1, 2]
    assert [m.get_value().shape for m in full.momentum] == [(2, 3), (3,)]
    assert full.damping.get_value() == 0.1 and full.damping.dtype == "float64"


def test_rejection_status_is_the_first_failed_check():
    order = list(Rejection)[1:]
    flags = [pt.scalar(rejection.name, dtype="bool") for rejection in order]
    status = pytensor.function(flags, rejection_status(list(zip(order, flags))), mode=TEST_MODE)
    for passed in itertools.product([True, False], repeat=len(order)):
        failed = [rejection for rejection, ok in zip(order, passed) if not ok]
        expected = failed[0] if failed else Rejection.ACCEPTED
        assert Rejection(int(status(*passed))) is expected


def test_step_info_takes_the_outputs_by_name():
    reasons = {rejection.reason for rejection in Rejection}
    assert len(reasons) == len(Rejection) and Rejection.ACCEPTED.reason == ""
    values = StepOutputs(loss=np.float32(2.0), loss_after=np.float32(1.5), damping=0.1,
                         ratio=0.8, step_size=0.5, cg_iterations=np.int64(3),
                         cg_residual_norm=1e-3, line_search_tries=np.int64(2),
                         status=np.int8(Rejection.NO_SUFFICIENT_DECREASE))
    info = StepInfo.from_outputs(values)
    assert info.loss == 2.0 and info.loss_after == 1.5 and info.step_size == 0.5
    assert info.cg_iterations == 3 and type(info.cg_iterations) is int
    assert info.line_search_tries == 2 and not info.accepted
    assert info.reason == "line search found no sufficient decrease"
    assert StepInfo.from_outputs(values._replace(status=np.int8(0))).accepted


def test_right_hand_side_is_the_bias_corrected_average(rng):
    params = shared_params(rng)
    state = SGNState.create(params, SGNConfig(momentum=0.9, preconditioner=None), "float64")
    averages = [rng.standard_normal(p.get_value().shape) for p in params]
    for m, value in zip(state.momentum, averages):
        m.set_value(value)
    state.momentum_count.set_value(np.int64(4))
    gradients = [pt.tensor(dtype="float64", shape=(None,) * p.ndim) for p in params]
    finite = pt.scalar("finite", dtype="bool")
    rhs, updates = right_hand_side(gradients, finite, state, SGNConfig(momentum=0.9))
    compute = pytensor.function([*gradients, finite], rhs, updates=updates, mode=TEST_MODE)
    g = [rng.standard_normal(a.shape) for a in averages]
    b = compute(*g, True)
    for bi, m, gi in zip(b, averages, g):
        np.testing.assert_allclose(bi, -(0.9 * m + 0.1 * gi) / (1 - 0.9**5))
    assert state.momentum_count.get_value() == 5
    np.testing.assert_allclose(state.momentum[0].get_value(), 0.9 * averages[0] + 0.1 * g[0])
    before = [m.get_value() for m in state.momentum]
    compute(*g, False)  # a non-finite gradient leaves the buffers and the count alone
    assert state.momentum_count.get_value() == 5
    for m, value in zip(state.momentum, before):
        np.testing.assert_array_equal(m.get_value(), value)


def test_right_hand_side_without_momentum_is_minus_the_gradient(rng):
    params = shared_params(rng)
    gradients = [pt.vector("g")]
    rhs, updates = right_hand_side(gradients, pt.as_tensor_variable(np.array(True)),
                                   SGNState.create(params, SGNConfig(preconditioner=None), "float64"), SGNConfig())
    assert not updates
    np.testing.assert_array_equal(
        pytensor.function(gradients, rhs[0], mode=TEST_MODE)(np.arange(3.0)), -np.arange(3.0))


@pytest.mark.parametrize("threshold", [0.0, 0.2])
def test_trust_ratio_is_actual_over_predicted_change(threshold):
    change, alpha, slope, curvature = (pt.scalar(name, dtype="float64")
                                       for name in ("change", "alpha", "slope", "curvature"))
    ratio, ok = trust_ratio(change, alpha, slope, curvature,
                            SGNConfig(rejection_threshold=threshold))
    compute = pytensor.function([change, alpha, slope, curvature], [ratio, ok], mode=TEST_MODE)
    r, accepted = compute(-0.3, 0.5, -2.0, 1.0)
    predicted = 0.5 * -2.0 + 0.25 * 1.0 / 2
    assert r == pytest.approx(-0.3 / predicted) and accepted == (r >= threshold)
    r, accepted = compute(-0.3, 0.5, 2.0, 1.0)  # the model predicts no decrease
    assert np.isnan(r) and not accepted


@pytest.mark.parametrize("accepted", [True, False])
def test_scheduled_damping_is_raised_after_a_rejected_step(rng, accepted):
    config = SGNConfig(trust_region=False, damping_schedule="linear", damping=1.0,
                       min_damping=0.1, damping_decay_steps=9, preconditioner=None)
    state = SGNState.create(shared_params(rng), config, "float64")
    state.step_count.set_value(np.int64(2))
    rho = pt.scalar("rho", dtype="float64")
    damping = pytensor.function([rho], next_damping(rho, pt.constant(np.nan), pt.constant(
        accepted), state, config), mode=TEST_MODE)
    scheduled = 1.0 + (0.1 - 1.0) * 3 / 9  # the value of step 3 of the linear decay
    for current in (0.2, 0.6, 5.0):
        expected = scheduled if accepted else min(max(scheduled,
                                                      INCREASE_FACTOR * current), 1e6)
        assert damping(current) == pytest.approx(expected)


def test_fixed_step_without_trust_region_evaluates_nothing(rng):
    (param,) = shared_params(rng, shapes=((3,),))
    loss = pt.sum(param**2)
    direction = [-2 * param]
    size = choose_step_size(loss, [param], direction, pt.constant(-1.0),
                            SGNConfig(line_search=False, trust_region=False, learning_rate=0.25),
                            early_exit=True)
    step_size, loss_after, tries, success = pytensor.function([], list(size), mode=TEST_MODE)()
    assert step_size == 0.25 and np.isnan(loss_after) and tries == 0 and success
    with_region = choose_step_size(loss, [param], direction, pt.constant(-1.0),
                                   SGNConfig(line_search=False, learning_rate=0.25),
                                   early_exit=True)
    expected = np.sum((0.5 * param.get_value()) ** 2)  # theta - 0.25 * 2 theta
    assert pytensor.function([], with_region.loss_after, mode=TEST_MODE)() == pytest.approx(
        expected)
