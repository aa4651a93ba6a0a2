"""Armijo backtracking on hand-made one-dimensional losses."""

import pytensor
import pytensor.tensor as pt
import pytest
from helpers import TEST_MODE
from hypothesis import given, settings
from hypothesis import strategies as st

from sgn_theano.line_search import armijo_backtracking


def compile_search(early_exit=True):
    """phi(a) = q a^2 + s a (phi(0) = 0, phi'(0) = s), searched from a0."""
    curvature, slope, start = pt.dscalar("q"), pt.dscalar("s"), pt.dscalar("a0")
    result = armijo_backtracking(lambda a: curvature * a**2 + slope * a,
                                 pt.constant(0.0, dtype="float64"), slope, initial_step=start,
                                 early_exit=early_exit)
    function = pytensor.function([curvature, slope, start], list(result), mode=TEST_MODE)
    return lambda q, s, a0: tuple(v.item() for v in function(q, s, a0))


@pytest.fixture(scope="module")
def search():
    return compile_search()


def test_without_early_exit_the_result_is_the_same(search):
    full = compile_search(early_exit=False)
    for q, s, a0 in [(1.0, -1.0, 4.0), (1.0, -1.0, 0.5), (1.0, 1.0, 1.0), (3.0, -0.1, 100.0)]:
        assert full(q, s, a0) == search(q, s, a0)


def test_shrinks_until_sufficient_decrease(search):
    # a^2 - a: Armijo holds for a <= 1 - 1e-4; from 4 the tries are 4, 2, 1, 0.5.
    step, loss, tries, success = search(1.0, -1.0, 4.0)
    assert (step, tries, success) == (0.5, 4, True)
    assert loss == pytest.approx(0.25 - 0.5)


def test_first_step_accepted_when_good(search):
    assert search(1.0, -1.0, 0.5)[2:] == (1, True)


def test_ascent_direction_fails_after_all_tries(search):
    step, _, tries, success = search(1.0, 1.0, 1.0)
    assert (tries, success) == (10, False)
    assert step == pytest.approx(0.5**9)


def test_non_finite_loss_never_accepted():
    result = armijo_backtracking(lambda a: pt.log(a - 10.0), pt.constant(0.0, "float64"),
                                 pt.constant(-1.0, "float64"), initial_step=1.0, max_tries=3)
    step, _, tries, success = pytensor.function([], list(result), mode=TEST_MODE)()
    assert (int(tries), bool(success)) == (3, False)


@pytest.mark.parametrize("kwargs, message", [
    ({"shrink": 1.0}, r"`shrink` must be a finite number in \(0.0, 1.0\)"), ({"sufficient_decrease": 0.0}, "`sufficient_decrease`"),
    ({"max_tries": 0}, "`max_tries` must be >= 1")])
def test_invalid_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        armijo_backtracking(lambda a: a, pt.constant(0.0), pt.constant(-1.0), initial_step=1.0,
                            **kwargs)


@settings(max_examples=40, deadline=None)
@given(q=st.floats(-5, 50), s=st.floats(-10, 10), a0=st.floats(1e-3, 100))
def test_property_returns_armijo_step_or_reports_failure(search, q, s, a0):
    step, loss, tries, success = search(q, s, a0)
    assert 1 <= tries <= 10
    assert loss == pytest.approx(q * step**2 + s * step)
    if success:
        assert loss <= 1e-4 * step * s + 1e-12 and s < 0
    else:
        assert tries == 10
