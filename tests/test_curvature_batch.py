"""Curvature mini-batches: Gauss-Newton products on the first rows of the batch only,
checked against dense solves with ``G`` built from those rows."""

import math

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.graph.traversal import ancestors, applys_between
from hypothesis import given
from hypothesis import strategies as st
from test_cg import reference_cg
from test_optimizer import DAMPING, SIZES

from helpers import TEST_MODE, build_problem, dense_gauss_newton, flatten, make_batch
from sgn_theano import SGN, SGNConfig, sgn
from sgn_theano.compilation.loop_invariants import loops_compiled_in
from sgn_theano.cg import UNROLLED_MAX_ITERS
from sgn_theano.curvature import (
    HESSIAN_PRODUCT_TAG,
    HESSIAN_ROOT_TAG,
    curvature_batch,
    curvature_rows,
    first_rows,
)
from sgn_theano.models import cnn, mlp

BATCH = 10


def hand_written(loss_name):
    """A network and a loss written in plain PyTensor (no closed-form Hessian recorded on
    the loss): tanh for the classifier, ``pt.maximum(h, 0)`` for the regression."""
    rng = np.random.default_rng(0)
    x = pt.matrix("x", dtype="float64")
    (inputs, hidden, classes) = SIZES
    w1 = pytensor.shared(rng.standard_normal((inputs, hidden)), name="w1")
    b1 = pytensor.shared(0.1 * rng.standard_normal(hidden), name="b1")
    w2 = pytensor.shared(rng.standard_normal((hidden, classes)) / hidden, name="w2")
    pre_activation = x @ w1 + b1
    hidden_layer = (pt.tanh(pre_activation) if loss_name == "softmax_cross_entropy"
                    else pt.maximum(pre_activation, 0))
    outputs, params = hidden_layer @ w2, [w1, b1, w2]
    if loss_name == "softmax_cross_entropy":
        y = pt.ivector("y")
        rows = pt.arange(y.shape[0])
        loss = -pt.mean(pt.special.log_softmax(outputs, axis=1)[rows, y])
    else:
        y = pt.matrix("y", dtype="float64")
        loss = 0.5 * pt.mean(pt.sum((outputs - y) ** 2, axis=1))
    return loss, outputs, params, [x, y]


def problems():
    """(id, loss name, builder, fraction of the 10 rows, rows it gives), fractions spread
    over the problems (one of 1 row, one not a multiple of 1/10)."""
    fractions = iter([(0.4, 4), (0.05, 1), (0.25, 3), (0.3, 3)])
    for loss_name in ("softmax_cross_entropy", "squared_error"):
        yield (f"library {loss_name}", loss_name, lambda name=loss_name: build_problem(
            name, "tanh", "float64", sizes=SIZES), *next(fractions))
        yield (f"hand-written {loss_name}", loss_name,
               lambda name=loss_name: hand_written(name), *next(fractions))


PROBLEMS = list(problems())


def sub_batch_direction(problem, batch, rows, rhs=None):
    """``-(G_rows + rho I)^{-1} g`` (or ``(G_rows + rho I)^{-1} rhs``), ``g`` on the batch."""
    loss, outputs, params, inputs = problem
    dense = dense_gauss_newton(loss, outputs, params, inputs)
    gradient = dense(*batch)[1]
    matrix = dense(*[array[:rows] for array in batch])[0]
    rhs = -gradient if rhs is None else rhs
    return np.linalg.solve(matrix + DAMPING * np.eye(len(gradient)), rhs), gradient


EXACT = dict(max_cg_iters=60, cg_tol=0.0, damping=DAMPING, trust_region=False,
             line_search=False, preconditioner=None, model_momentum=False, mode=TEST_MODE)


@pytest.mark.parametrize("what, loss_name, build, fraction, rows", PROBLEMS,
                         ids=[p[0] for p in PROBLEMS])
def test_class_step_solves_with_the_sub_batch_matrix(what, loss_name, build, fraction, rows):
    problem = build()
    loss, outputs, params, inputs = problem
    batch = make_batch(loss_name, "float64", batch=BATCH, features=2, classes=2)
    direction, _ = sub_batch_direction(problem, batch, rows)
    before = flatten(p.get_value() for p in params)
    info = SGN(loss, params, outputs, inputs, curvature_fraction=fraction, **EXACT).step(*batch)
    assert info.accepted
    np.testing.assert_allclose(flatten(p.get_value() for p in params) - before, direction,
                               rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("what, loss_name, build, fraction, rows", PROBLEMS[:2],
                         ids=[p[0] for p in PROBLEMS[:2]])
def test_updates_function_solves_with_the_sub_batch_matrix(what, loss_name, build, fraction,
                                                           rows):
    problem = build()
    loss, outputs, params, inputs = problem
    batch = make_batch(loss_name, "float64", batch=BATCH, features=2, classes=2)
    direction, _ = sub_batch_direction(problem, batch, rows)
    before = flatten(p.get_value() for p in params)
    with loops_compiled_in(TEST_MODE):
        updates = sgn(loss, params, outputs, max_cg_iters=60, damping=DAMPING,
                      learning_rate=0.5, curvature_fraction=fraction)
    pytensor.function(inputs, loss, updates=updates, mode=TEST_MODE)(*batch)
    np.testing.assert_allclose(flatten(p.get_value() for p in params) - before,
                               0.5 * direction, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("preconditioner", ["jacobi", "kfac"])
def test_warm_start_and_preconditioner_keep_the_sub_batch_solution(preconditioner):
    # Exact CG finds the same solution from any start and with any SPD preconditioner:
    # on the second step the warm start and the preconditioner are both in play.
    problem = build_problem("softmax_cross_entropy", "tanh", "float64", sizes=SIZES)
    loss, outputs, params, inputs = problem
    batches = [make_batch("softmax_cross_entropy", "float64", batch=BATCH, features=2,
                          classes=2, seed=seed) for seed in (0, 1)]
    optimizer = SGN(loss, params, outputs, inputs, curvature_fraction=0.3, warm_start=0.5,
                    **{**EXACT, "preconditioner": preconditioner})
    optimizer.step(*batches[0])
    direction, _ = sub_batch_direction(problem, batches[1], 3)
    before = flatten(p.get_value() for p in params)
    optimizer.step(*batches[1])
    np.testing.assert_allclose(flatten(p.get_value() for p in params) - before, direction,
                               rtol=1e-6, atol=1e-10)


def test_momentum_right_hand_side_with_the_sub_batch_matrix():
    problem = build_problem("squared_error", "tanh", "float64", sizes=SIZES)
    loss, outputs, params, inputs = problem
    batches = [make_batch("squared_error", "float64", batch=BATCH, features=2, classes=2,
                          seed=seed) for seed in (0, 1)]
    optimizer = SGN(loss, params, outputs, inputs, curvature_fraction=0.5, momentum=0.9,
                    **EXACT)
    first_gradient = sub_batch_direction(problem, batches[0], 5)[1]
    optimizer.step(*batches[0])
    second_gradient = sub_batch_direction(problem, batches[1], 5)[1]
    average = (0.9 * 0.1 * first_gradient + 0.1 * second_gradient) / (1 - 0.9**2)
    direction, _ = sub_batch_direction(problem, batches[1], 5, rhs=-average)
    before = flatten(p.get_value() for p in params)
    optimizer.step(*batches[1])
    np.testing.assert_allclose(flatten(p.get_value() for p in params) - before, direction,
                               rtol=1e-7, atol=1e-10)


def test_tiny_cnn_step_solves_with_the_sub_batch_matrix():
    x, y = pt.tensor4("x", dtype="float64"), pt.ivector("y")
    outputs, params = cnn(x, (4, 4, 1), [("conv", 2, 3), ("pool", 2), ("dense", 2)],
                          activation="tanh", seed=2, dtype="float64")
    loss = -pt.mean(pt.special.log_softmax(outputs, axis=1)[pt.arange(y.shape[0]), y])
    rng = np.random.default_rng(3)
    batch = (rng.standard_normal((6, 4, 4, 1)), rng.integers(0, 2, 6).astype(np.int32))
    direction, _ = sub_batch_direction((loss, outputs, params, [x, y]), batch, 2)
    before = flatten(p.get_value() for p in params)
    SGN(loss, params, outputs, [x, y], curvature_fraction=1 / 3, **EXACT).step(*batch)
    np.testing.assert_allclose(flatten(p.get_value() for p in params) - before, direction,
                               rtol=1e-7, atol=1e-10)


def test_fraction_is_part_of_the_saved_configuration():
    # What `SGN.state_dict` saves and `load_state_dict` compares (tests of those use it).
    assert SGNConfig(curvature_fraction=0.5).to_dict()["curvature_fraction"] == 0.5
    assert SGNConfig().to_dict()["curvature_fraction"] == 0.1


def test_sub_batch_graph_is_the_loss_of_the_first_rows():
    loss, outputs, params, (x, y) = hand_written("squared_error")
    sub_loss, sub_outputs = curvature_batch(loss, outputs, first_rows([x, y], 0.3))
    batch = make_batch("squared_error", "float64", batch=BATCH, features=2, classes=2)
    evaluate = pytensor.function([x, y], [loss, sub_loss, sub_outputs], mode=TEST_MODE)
    full, sub, rows = evaluate(*batch)
    first_three = evaluate(*[array[:3] for array in batch])[0]
    assert rows.shape == (3, 2) and sub == pytest.approx(first_three, rel=1e-12)
    assert curvature_batch(loss, outputs, {}) == (loss, outputs)
    with pytest.raises(ValueError, match="`curvature_fraction`"):
        sgn(loss, params, outputs, curvature_fraction=-0.5)


def test_closed_forms_on_the_rows_take_their_vector_as_it_is():
    """The rows' closed-form Hessian product and root put the vector itself in their
    graph, not a copy of the graph behind it: in CG that graph holds every earlier
    iteration, and a copy per product grew a recurrent network's step to gigabytes."""
    loss, outputs, params, (x, y) = build_problem("softmax_cross_entropy", "tanh", "float64",
                                                  sizes=SIZES)
    sub_loss, sub_outputs = curvature_batch(loss, outputs, first_rows([x, y], 0.3))
    # a vector with a graph of its own: one arctan, which the network does not use
    direction = pt.arctan(pt.dot(x[:3], params[0]))[:, :SIZES[-1]]
    for name in (HESSIAN_PRODUCT_TAG, HESSIAN_ROOT_TAG):
        product = getattr(sub_loss.tag, name)[1](direction)
        assert direction in ancestors([product]), name
        assert sum(node.op == pt.arctan(x).owner.op for node in applys_between([x], [product])
                   ) == 1, name
    batch = make_batch("softmax_cross_entropy", "float64", batch=BATCH, features=SIZES[0],
                       classes=SIZES[-1])
    u = np.random.default_rng(0).standard_normal((3, SIZES[-1]))
    stand_in = pt.matrix("u", dtype="float64")
    rows_form, whole_form = (pytensor.function([x, y, stand_in], [
        getattr(tagged.tag, HESSIAN_PRODUCT_TAG)[1](stand_in)], mode=TEST_MODE,
        on_unused_input="ignore") for tagged in (sub_loss, loss))
    np.testing.assert_allclose(rows_form(*batch, u)[0],
                               whole_form(*[array[:3] for array in batch], u)[0], rtol=1e-12)


@given(st.integers(1, 100_000), st.data())
def test_rows_are_the_ceiling_of_the_fraction(batch_size, data):
    rows = data.draw(st.integers(1, batch_size))
    assert curvature_rows(rows / batch_size, batch_size) == rows  # k/B of B rows is k rows
    assert curvature_rows(rows / batch_size, np.int64(batch_size)) == rows
    fraction = data.draw(st.floats(1e-6, 1.0))
    expected = math.ceil(fraction * batch_size)
    assert curvature_rows(fraction, batch_size) in (max(1, expected - 1), max(1, expected))
    assert 1 <= curvature_rows(fraction, batch_size) <= batch_size


def test_symbolic_rows_match_the_python_rows():
    size = pt.iscalar("size")
    fractions = [0.3, 0.1, 1 / 3, 0.999, 1e-4, 0.5]
    compiled = pytensor.function([size], [curvature_rows(f, size) for f in fractions],
                                 mode=TEST_MODE)
    for batch_size in (1, 7, 10, 1000, 60000):
        assert list(compiled(batch_size)) == [curvature_rows(f, batch_size) for f in fractions]


@pytest.mark.parametrize("preconditioner", [None, "kfac"])
def test_inputs_with_a_static_batch_size_take_the_same_step(preconditioner):
    batch = make_batch("squared_error", "float64", batch=BATCH, features=2, classes=2)
    changes = []
    for shape in ((None, 2), (BATCH, 2)):
        x, y = pt.matrix("x", dtype="float64", shape=shape), pt.matrix("y", dtype="float64")
        outputs, params = mlp(x, SIZES, activation="tanh", seed=0, dtype="float64")
        loss = 0.5 * pt.mean(pt.sum((outputs - y) ** 2, axis=1))
        before = flatten(p.get_value() for p in params)
        SGN(loss, params, outputs, [x, y], curvature_fraction=0.3,
            **{**EXACT, "preconditioner": preconditioner}).step(*batch)
        changes.append(flatten(p.get_value() for p in params) - before)
    np.testing.assert_allclose(changes[1], changes[0], rtol=1e-12)
    assert np.abs(changes[0]).max() > 0


@pytest.mark.parametrize("what, loss_name, build, fraction, rows", PROBLEMS[:2],
                         ids=[p[0] for p in PROBLEMS[:2]])
def test_unrolled_cg_on_the_sub_batch_matrix_matches_dense_cg(what, loss_name, build,
                                                               fraction, rows):
    # Few iterations are written out, so each product's input is built from the whole
    # batch's gradient: the sub-batch Hessian (the library's closed form, or autodiff of a
    # hand-written loss) must not swap that gradient's outputs.
    problem = build()
    loss, outputs, params, inputs = problem
    batch = make_batch(loss_name, "float64", batch=BATCH, features=2, classes=2)
    dense = dense_gauss_newton(loss, outputs, params, inputs)
    gradient = dense(*batch)[1]
    matrix = dense(*[array[:rows] for array in batch])[0] + DAMPING * np.eye(len(gradient))
    expected = reference_cg(matrix, -gradient, UNROLLED_MAX_ITERS)
    before = flatten(p.get_value() for p in params)
    info = SGN(loss, params, outputs, inputs, curvature_fraction=fraction,
               **{**EXACT, "max_cg_iters": UNROLLED_MAX_ITERS}).step(*batch)
    assert info.accepted and info.cg_iterations == UNROLLED_MAX_ITERS
    np.testing.assert_allclose(flatten(p.get_value() for p in params) - before, expected,
                               rtol=1e-7, atol=1e-10)
