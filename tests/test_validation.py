"""Bad input gets a clear error naming the problem, and leaves everything untouched."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from conftest import TEST_MODE, build_problem, make_batch

from sgn_theano import SGN, adam, sgd, sgn


@pytest.fixture(scope="module")
def problem():
    return build_problem("softmax_cross_entropy", "tanh", "float64")


@pytest.fixture(scope="module")
def optimizer(problem):
    loss, outputs, params, inputs = problem
    return SGN(loss, params, outputs, inputs, momentum=0.5, mode=TEST_MODE)


CONSTRUCTOR_CASES = [
    ({"max_cg_iters": 0}, ValueError, "`max_cg_iters` must be >= 1"),
    ({"max_cg_iters": 2.5}, TypeError, "`max_cg_iters` must be an integer"),
    ({"cg_tol": -1.0}, ValueError, "`cg_tol` must be a finite number"),
    ({"damping": -1.0}, ValueError, "`damping` must be a finite number"),
    ({"damping": 1e7}, ValueError, "`damping` must be a finite number in"),
    ({"damping": float("nan")}, ValueError, "`damping`"),
    ({"min_damping": 0.0}, ValueError, "`min_damping`"),
    ({"min_damping": 1.0, "max_damping": 0.1, "damping": 0.5}, ValueError, "exceeds `max_damping`"),
    ({"learning_rate": 0.0}, ValueError, "`learning_rate`"),
    ({"learning_rate": float("inf")}, ValueError, "`learning_rate`"),
    ({"momentum": 1.0}, ValueError, "`momentum`"),
    ({"warm_start": 1.5}, ValueError, "`warm_start`"),
    ({"trust_region": "yes"}, TypeError, "`trust_region` must be True or False"),
    ({"preconditioner": 3}, TypeError, "`preconditioner` must be a callable"),
    ({"mode": "NO_SUCH_MODE"}, ValueError, "Unknown compile `mode`"),
]


@pytest.mark.parametrize("options, error, message", CONSTRUCTOR_CASES)
def test_out_of_range_settings_are_rejected_in_the_constructor(problem, options, error, message):
    loss, outputs, params, inputs = problem
    with pytest.raises(error, match=message):
        SGN(loss, params, outputs, inputs, **options)


def test_graph_errors(problem):
    loss, outputs, params, inputs = problem
    raw = np.zeros(3)
    cases = [
        (dict(params=[raw]), TypeError, "Element 0 of `params`.*not a shared tensor"),
        (dict(params=params + [params[0]]), ValueError, "Elements 0 and 4 of `params` are the same"),
        (dict(params=[]), ValueError, "`params` is empty"),
        (dict(params=params[0]), TypeError, "`params` must be a list"),
        (dict(loss=outputs.sum(axis=1)), ValueError, "`loss` must be a scalar"),
        (dict(loss=pt.sum(params[0] ** 2)), ValueError, "`loss` is not computed from `outputs`"),
        (dict(params=params + [pytensor.shared(np.ones(2), name="stray")]), ValueError,
         "`outputs` do not depend on element 4 of `params` \\(stray\\)"),
        (dict(inputs=inputs[:1]), ValueError, "`loss` needs inputs that are not in `inputs`"),
        (dict(inputs=[inputs[0], params[0]]), TypeError, "Element 1 of `inputs`"),
        (dict(outputs=np.zeros(3)), TypeError, "`outputs` must be a symbolic"),
    ]
    for change, error, message in cases:
        arguments = dict(loss=loss, params=params, outputs=outputs, inputs=inputs) | change
        with pytest.raises(error, match=message):
            SGN(arguments["loss"], arguments["params"], arguments["outputs"], arguments["inputs"])
    with pytest.raises(TypeError, match="must share one dtype"):
        x32 = pt.matrix("x", dtype="float32")
        w64 = pytensor.shared(np.ones((3, 2)), name="w")
        out = pt.cast(x32 @ w64, "float32")
        sgn(pt.mean(out**2), [w64], out)


def batch_cases():
    x, y = make_batch("softmax_cross_entropy", "float64")
    nan_x = x.copy()
    nan_x[0, 0] = np.nan
    inf_x = x.copy()
    inf_x[1, 1] = np.inf
    return [
        ((x,), ValueError, "takes 2 arrays"),
        ((x[:, :, None], y), ValueError, "has 3 dimensions, expected 2"),
        ((x, y.astype(np.float64)), TypeError, "dtype float64, which does not convert"),
        ((x.astype(complex), y), TypeError, "does not convert safely"),
        ((nan_x, y), ValueError, "contains NaN or infinite"),
        ((inf_x, y), ValueError, "contains NaN or infinite"),
        ((x[:0], y[:0]), ValueError, "The batch is empty"),
        ((x, y[:3]), ValueError, "disagree on the batch size"),
        ((np.full(x.shape, "a"), y), TypeError, "does not convert safely"),
    ]


@pytest.mark.parametrize("batch, error, message", batch_cases())
def test_bad_batches_raise_before_anything_changes(optimizer, batch, error, message):
    optimizer.step(*make_batch("softmax_cross_entropy", "float64"))
    before = optimizer.state_dict()
    with pytest.raises(error, match=message):
        optimizer.step(*batch)
    after = optimizer.state_dict()
    for role in before["state"]:
        for a, b in zip(before["state"][role], after["state"][role]):
            assert a.tobytes() == b.tobytes(), role


def test_same_kind_batches_are_converted(optimizer):
    x, y = make_batch("softmax_cross_entropy", "float64")
    assert optimizer.step(x.astype(np.float32), y.astype(np.int64)).accepted
    assert optimizer.step(np.rint(x * 3).astype(np.int64), y).accepted


def test_first_order_updates_validate_like_sgn(problem):
    loss, _, params, _ = problem
    with pytest.raises(TypeError, match="Element 0 of `params`"):
        sgd(loss, [np.zeros(2)], 0.1)
    with pytest.raises(ValueError, match="Got 1 gradients for 4 parameters"):
        sgd([params[0]], params, 0.1)
    with pytest.raises(ValueError, match="`learning_rate`"):
        adam(loss, params, learning_rate=-1.0)
    with pytest.raises(ValueError, match="`beta1`"):
        adam(loss, params, beta1=1.0)
