"""Trust-region damping rule and ratio, on hand-made cases and as a property."""

import math

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import TEST_MODE
from hypothesis import given
from hypothesis import strategies as st

from sgn_theano.damping import (
    SCHEDULES,
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
