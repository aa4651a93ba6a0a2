"""The preconditioners by name (the registry) and the probe drawn on the host; the
diagonal and Kronecker-factored products themselves are in ``test_curvature_diagonal.py``
and ``test_kronecker_factored.py``."""

import numpy as np
import pytest
from helpers import TEST_MODE, build_problem, make_batch

from sgn_theano import SGN, SGNConfig
from sgn_theano.preconditioning.host_probe import HostProbe
from sgn_theano.preconditioning.registry import PRECONDITIONERS


@pytest.fixture(scope="module")
def problem():
    return build_problem("softmax_cross_entropy", "tanh", "float64")


def state_roles(optimizer) -> set:
    return {role for role, arrays in optimizer.state_dict()["state"].items() if arrays}


@pytest.mark.parametrize("name", sorted(PRECONDITIONERS))
def test_each_named_preconditioner_keeps_what_its_entry_says_and_steps(problem, name):
    loss, outputs, params, inputs = problem
    entry = PRECONDITIONERS[name]
    optimizer = SGN(loss, params, outputs, inputs, preconditioner=name, mode=TEST_MODE)
    roles = state_roles(optimizer)
    if not entry.kronecker_factored:  # (K-FAC averages a diagonal for layers it cannot find)
        assert ("diagonal" in roles) == entry.averages_diagonal
    assert ({"factors", "factor_inverses"} <= roles) == entry.kronecker_factored
    assert len(optimizer._probe.inputs) == (entry.probe is not None)
    before = [p.get_value() for p in params]
    info = optimizer.step(*make_batch("softmax_cross_entropy", "float64"))
    assert info.accepted and info.loss_after < info.loss
    for param, value in zip(params, before):
        param.set_value(value)  # the next case starts where this one did


@pytest.mark.parametrize("name", ["hutchinson", "kfac"])
def test_the_host_probe_is_a_rademacher_draw_of_the_step_count(problem, name):
    """A flat vector of the parameters' size for Hutchinson, the curvature rows' outputs
    for K-FAC; the same step draws the same signs, another step others."""
    loss, outputs, params, inputs = problem
    probe = HostProbe(SGNConfig(preconditioner=name), outputs, params, inputs, "float64")
    x, y = make_batch("softmax_cross_entropy", "float64", batch=8)
    size = sum(p.get_value().size for p in params)
    expected = (size,) if name == "hutchinson" else (8, 3)  # 8 rows, 3 classes
    (first,) = probe.arrays([x, y], 5, 0, 8, 8)
    assert first.shape == expected and set(np.unique(first)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(probe.arrays([x, y], 5, 0, 8, 8)[0], first)
    assert not np.array_equal(probe.arrays([x, y], 6, 0, 8, 8)[0], first)


def test_processes_cut_their_rows_from_one_draw_for_the_whole_batch(problem):
    """Two shards of 3 and 5 curvature rows take rows [0, 3) and [3, 8) of the draw one
    process makes for all 8: data-parallel K-FAC sees the probe one process would."""
    loss, outputs, params, inputs = problem
    probe = HostProbe(SGNConfig(preconditioner="kfac"), outputs, params, inputs, "float64")
    x, y = make_batch("softmax_cross_entropy", "float64", batch=8)
    (whole,) = probe.arrays([x, y], 2, 0, 8, 8)
    (first,) = probe.arrays([x[:3], y[:3]], 2, 0, 3, 8)
    (second,) = probe.arrays([x[3:], y[3:]], 2, 3, 5, 8)
    np.testing.assert_array_equal(np.concatenate([first, second]), whole)


def test_without_a_named_preconditioner_there_is_no_probe(problem):
    loss, outputs, params, inputs = problem
    for chosen in (None, "jacobi", "gradient_squares", lambda blocks: blocks):
        probe = HostProbe(SGNConfig(preconditioner=chosen), outputs, params, inputs, "float64")
        assert probe.inputs == [] and probe.arrays([], 0, 0, 1, 1) == []
