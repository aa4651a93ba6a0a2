"""Trust-region damping rule and ratio, on hand-made cases and as a property."""

import math

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import TEST_MODE
from hypothesis import given
from hypothesis import strategies as st

from sgn_theano import SGN, squared_error
from sgn_theano.damping import (
    SCHEDULES,
    damping_floor,
    model_decrease_ratio,
    scheduled_damping,
    trust_region_damping,
)


@pytest.fixture(scope="module")
def rule():
    damping, ratio = pt.dscalar("damping"), pt.dscalar("ratio")
    updated = trust_region_damping(damping, ratio, min_damping=1e-6, max_damping=1e6)
    return pytensor.function([damping, ratio], updated, mode=TEST_MODE)


@pytest.mark.parametrize("ratio, factor", [
    (0.1, 1.5), (-3.0, 1.5), (0.2499, 1.5), (0.25, 1.0), (0.5, 1.0), (0.75, 1.0),
    (0.76, 2 / 3), (2.0, 2 / 3), (math.nan, 1.5), (math.inf, 1.5), (-math.inf, 1.5)])
def test_rule_on_hand_made_ratios(rule, ratio, factor):
    assert float(rule(1e-2, ratio)) == pytest.approx(1e-2 * factor)


def test_rule_clips_to_bounds(rule):
    assert float(rule(1e6, 0.0)) == 1e6
    assert float(rule(1e-6, 1.0)) == 1e-6


@given(damping=st.floats(1e-6, 1e6), ratio=st.one_of(st.floats(allow_nan=True), st.just(math.nan)))
def test_property_damping_stays_within_bounds(rule, damping, ratio):
    updated = float(rule(damping, ratio))
    assert 1e-6 <= updated <= 1e6


def test_ratio_of_actual_to_predicted_change():
    actual, predicted = pt.dscalar(), pt.dscalar()
    ratio = pytensor.function([actual, predicted], model_decrease_ratio(actual, predicted),
                              mode=TEST_MODE)
    assert float(ratio(-0.5, -1.0)) == 0.5
    assert np.isnan(ratio(-0.5, 0.0))  # no predicted decrease: treated as a bad step
    assert np.isnan(ratio(-0.5, 2.0))


@pytest.fixture(scope="module")
def schedules():
    step = pt.lscalar("step")
    functions = {}
    for name in SCHEDULES:
        rho = scheduled_damping(step, initial=1.0, final=0.01, steps=10, schedule=name)
        functions[name] = pytensor.function([step], rho, mode=TEST_MODE,
                                            on_unused_input="ignore")  # constant
    return functions


@pytest.mark.parametrize("name, expected", [
    ("constant", lambda u: 1.0),
    ("linear", lambda u: 0.01 + 0.99 * (1 - u)),
    ("cosine", lambda u: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * u))),
])
def test_schedules_decay_to_the_final_damping_and_stay(schedules, name, expected):
    for step in [0, 1, 5, 9, 10, 11, 1000]:
        u = min(step / 10, 1.0)
        assert float(schedules[name](step)) == pytest.approx(expected(u), rel=1e-12)


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="Unknown damping schedule 'exponential'"):
        scheduled_damping(pt.lscalar(), initial=1.0, final=0.1, steps=5, schedule="exponential")


@pytest.mark.parametrize("rows, floor", [(1, 0.1), (100, 0.1), (200, 0.05), (1000, 0.01)])
def test_the_floor_falls_as_one_over_the_curvature_rows_beyond_the_reference(rows, floor):
    curvature_rows = pt.dscalar("rows")
    function = pytensor.function([curvature_rows], [damping_floor(0.1, curvature_rows, 100),
                                                    damping_floor(0.1, curvature_rows, None)],
                                 mode=TEST_MODE)
    scaled, fixed = function(rows)
    assert float(scaled) == pytest.approx(floor) and float(fixed) == pytest.approx(0.1)


@pytest.mark.parametrize("batch, reference_rows, floor", [
    (400, 100, 0.025), (400, None, 0.1), (80, 100, 0.1)])
def test_sgn_damping_falls_to_the_floor_of_its_curvature_rows(batch, reference_rows, floor):
    """Linear least squares: every step's ratio is near 1, so the trust region lowers
    the damping (by 2/3 a step) until it meets the floor of the step's curvature rows
    (here every row: ``curvature_fraction=1``), and never goes below it."""
    rng = np.random.default_rng(0)
    x, targets = pt.matrix("x"), pt.matrix("t")
    weights = pytensor.shared(rng.normal(size=(3, 2)), name="w")
    outputs = x @ weights
    optimizer = SGN(squared_error(outputs, targets), [weights], outputs, [x, targets],
                    curvature_fraction=1.0, min_damping_rows=reference_rows,
                    preconditioner=None, model_momentum=False, mode=TEST_MODE)
    inputs = rng.normal(size=(batch, 3))
    truth = rng.normal(size=(3, 2))
    dampings = []
    for _ in range(12):
        noisy = inputs @ truth + 0.1 * rng.normal(size=(batch, 2))
        assert optimizer.step(inputs, noisy).accepted
        dampings.append(optimizer.damping)
    assert min(dampings) == pytest.approx(floor)
    assert dampings[-1] == pytest.approx(floor)
