"""Bad input gets a clear error naming the problem, and leaves everything untouched.

Every case here is a row of the bad-input table of the docs (`docs/errors.md`), with the
message the code raises (``test_the_errors_page_shows_every_case_with_the_message_raised``).
"""

import os

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from helpers import TEST_MODE, build_problem, make_batch

from sgn_theano import SGN, adam, curvature, sgd, sgn, validation
from sgn_theano.compat import differentiated_by_pullback

ERRORS_PAGE = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "errors.md")


@pytest.fixture(scope="module")
def problem():
    return build_problem("softmax_cross_entropy", "tanh", "float64")


@pytest.fixture(scope="module")
def optimizer(problem):
    loss, outputs, params, inputs = problem
    return SGN(loss, params, outputs, inputs, momentum=0.5, mode=TEST_MODE)


def snapshot(params, optimizer=None) -> list[bytes]:
    """Bytes of every parameter and every optimizer state array."""
    arrays = [p.get_value() for p in params]
    if optimizer is not None:
        arrays += [a for role in optimizer.state_dict()["state"].values() for a in role]
    return [a.tobytes() for a in arrays]


# (what, constructor options, error, message)
SETTING_CASES = [
    ("`max_cg_iters` < 1", {"max_cg_iters": 0}, ValueError, "`max_cg_iters` must be >= 1"),
    ("`max_cg_iters` not an integer", {"max_cg_iters": 2.5}, TypeError,
     "`max_cg_iters` must be an integer"),
    ("`cg_tol` < 0", {"cg_tol": -1.0}, ValueError, "`cg_tol` must be a finite number"),
    ("`cg_progress_tol` < 0", {"cg_progress_tol": -1e-3}, ValueError, "`cg_progress_tol`"),
    ("`damping` < 0", {"damping": -1.0}, ValueError, "`damping` must be a finite number"),
    ("`damping` outside `[min_damping, max_damping]` with the trust region", {"damping": 1e7},
     ValueError, "`damping` must be a finite number in"),
    ("`damping` NaN", {"damping": float("nan")}, ValueError, "`damping`"),
    ("`min_damping` <= 0", {"min_damping": 0.0}, ValueError, "`min_damping`"),
    ("`min_damping` > `max_damping`", {"min_damping": 1.0, "max_damping": 0.1, "damping": 0.5},
     ValueError, "exceeds `max_damping`"),
    ("`learning_rate` <= 0", {"learning_rate": 0.0}, ValueError, "`learning_rate`"),
    ("`learning_rate` infinite", {"learning_rate": float("inf")}, ValueError,
     "`learning_rate`"),
    ("`rejection_threshold` outside [0, 1/4)", {"rejection_threshold": 0.3}, ValueError,
     "`rejection_threshold`"),
    ("`momentum` outside [0, 1)", {"momentum": 1.0}, ValueError, "`momentum`"),
    ("`warm_start` outside [0, 1]", {"warm_start": 1.5}, ValueError, "`warm_start`"),
    ("`curvature_fraction` outside (0, 1]", {"curvature_fraction": 1.5}, ValueError,
     "`curvature_fraction` must be a finite number in \\(0.0, 1.0\\]"),
    ("`curvature_fraction` zero", {"curvature_fraction": 0.0}, ValueError,
     "`curvature_fraction`"),
    ("`curvature_fraction` NaN", {"curvature_fraction": float("nan")}, ValueError,
     "`curvature_fraction`"),
    ("`trust_region` not a bool", {"trust_region": "yes"}, TypeError,
     "`trust_region` must be True or False"),
    ("unknown `damping_schedule`", {"damping_schedule": "step", "trust_region": False},
     ValueError, "`damping_schedule` must be one of"),
    ("decaying schedule with the trust region on", {"damping_schedule": "cosine",
                                                    "damping_decay_steps": 10},
     ValueError, "needs `trust_region=False`"),
    ("decaying schedule without `damping_decay_steps`",
     {"damping_schedule": "linear", "trust_region": False}, TypeError,
     "`damping_decay_steps` must be an integer"),
    ("`preconditioner` neither a known name nor callable", {"preconditioner": "adam"},
     TypeError, "`preconditioner` must be one of \\('jacobi', 'gradient_squares', "
     "'hutchinson', 'kfac'\\), a callable"),
    ("`kfac_decay` outside [0, 1)", {"kfac_decay": 1.0}, ValueError, "`kfac_decay`"),
    ("`kfac_inverse_interval` below 1", {"kfac_inverse_interval": 0}, ValueError,
     "`kfac_inverse_interval` must be >= 1"),
    ("`preconditioner_decay` outside [0, 1)", {"preconditioner_decay": 1.0}, ValueError,
     "`preconditioner_decay`"),
    ("`preconditioner_exponent` outside [0, 1]", {"preconditioner_exponent": 2.0}, ValueError,
     "`preconditioner_exponent`"),
    ("`preconditioner_epsilon` not positive", {"preconditioner_epsilon": 0.0}, ValueError,
     "`preconditioner_epsilon`"),
    ("`model_momentum` not a bool", {"model_momentum": 1}, TypeError,
     "`model_momentum` must be True or False"),
    ("unknown compile `mode`", {"mode": "NO_SUCH_MODE"}, ValueError, "Unknown compile `mode`"),
]


@pytest.mark.parametrize("what, options, error, message", SETTING_CASES,
                         ids=[case[0] for case in SETTING_CASES])
def test_out_of_range_settings_are_rejected_in_the_constructor(problem, what, options, error,
                                                               message):
    loss, outputs, params, inputs = problem
    before = snapshot(params)
    with pytest.raises(error, match=message):
        SGN(loss, params, outputs, inputs, **options)
    assert snapshot(params) == before


def graph_cases():
    loss, outputs, params, inputs = build_problem("softmax_cross_entropy", "tanh", "float64")
    x32 = pt.matrix("x", dtype="float32")
    w64 = pytensor.shared(np.ones((3, 2)), name="w")
    mixed = pt.cast(x32 @ w64, "float32")
    base = dict(loss=loss, params=params, outputs=outputs, inputs=inputs)
    cases = [
        ("parameter not a shared variable", dict(params=[np.zeros(3)]), TypeError,
         "Element 0 of `params`.*not a shared tensor"),
        ("parameter listed twice", dict(params=params + [params[0]]), ValueError,
         "Elements 0 and 4 of `params` are the same"),
        ("empty `params`", dict(params=[]), ValueError, "`params` is empty"),
        ("`params` not a list", dict(params=params[0]), TypeError, "`params` must be a list"),
        ("non-scalar loss", dict(loss=outputs.sum(axis=1)), ValueError,
         "`loss` must be a scalar"),
        ("loss not computed from `outputs`", dict(loss=pt.sum(params[0] ** 2)), ValueError,
         "`loss` is not computed from `outputs`"),
        ("`outputs` not connected to a parameter",
         dict(params=params + [pytensor.shared(np.ones(2), name="stray")]), ValueError,
         "`outputs` do not depend on element 4 of `params` \\(stray\\)"),
        ("`inputs` missing a free variable of the loss", dict(inputs=inputs[:1]), ValueError,
         "`loss` needs inputs that are not in `inputs`"),
        ("`inputs` holding a shared variable", dict(inputs=[inputs[0], params[0]]), TypeError,
         "Element 1 of `inputs`"),
        ("`inputs` holding a variable the loss does not use",
         dict(inputs=[*inputs, pt.matrix("mask")]), ValueError,
         r"`inputs` holds variables `loss` does not use: \['mask'\]"),
        ("`outputs` not symbolic", dict(outputs=np.zeros(3)), TypeError,
         "`outputs` must be a symbolic"),
        ("parameters and loss of different dtypes",
         dict(loss=pt.mean(mixed**2), params=[w64], outputs=mixed, inputs=[x32]), TypeError,
         "must share one dtype"),
    ]
    return [(what, base | change, error, message) for what, change, error, message in cases]


@pytest.mark.parametrize("what, arguments, error, message", graph_cases(),
                         ids=[case[0] for case in graph_cases()])
def test_graph_errors(what, arguments, error, message):
    params = [p for p in arguments["params"] if hasattr(p, "get_value")] if isinstance(
        arguments["params"], list) else []
    before = snapshot(params)
    with pytest.raises(error, match=message):
        SGN(arguments["loss"], arguments["params"], arguments["outputs"], arguments["inputs"],
            mode=TEST_MODE)
    assert snapshot(params) == before


def batch_cases():
    x, y = make_batch("softmax_cross_entropy", "float64")
    nan_x = x.copy()
    nan_x[0, 0] = np.nan
    inf_x = x.copy()
    inf_x[1, 1] = np.inf
    return [
        ("wrong number of batch arrays", (x,), ValueError, "takes 2 arrays"),
        ("batch array with the wrong number of dimensions", (x[:, :, None], y), ValueError,
         "has 3 dimensions, expected 2"),
        ("float labels for integer `y`", (x, y.astype(np.float64)), TypeError,
         "dtype float64, which does not convert"),
        ("complex batch", (x.astype(complex), y), TypeError, "does not convert safely"),
        ("string batch", (np.full(x.shape, "a"), y), TypeError, "does not convert safely"),
        ("NaN in the batch", (nan_x, y), ValueError, "contains NaN or infinite"),
        ("inf in the batch", (inf_x, y), ValueError, "contains NaN or infinite"),
        ("empty batch", (x[:0], y[:0]), ValueError, "The batch is empty"),
        ("arrays of different batch sizes", (x, y[:3]), ValueError,
         "disagree on the batch size"),
        ("label >= number of classes", (x, np.where(y == 0, 3, y).astype(np.int32)),
         ValueError, "A label is out of range"),
        ("negative label", (x, np.where(y == 0, -1, y).astype(np.int32)), ValueError,
         "A label is out of range"),
    ]


@pytest.mark.parametrize("what, batch, error, message", batch_cases(),
                         ids=[case[0] for case in batch_cases()])
def test_bad_batches_raise_before_anything_changes(optimizer, what, batch, error, message):
    optimizer.step(*make_batch("softmax_cross_entropy", "float64"))
    before = snapshot(optimizer.params, optimizer)
    with pytest.raises(error, match=message):
        optimizer.step(*batch)
    assert snapshot(optimizer.params, optimizer) == before


def state_cases(problem):
    loss, outputs, params, inputs = problem
    other = build_problem("softmax_cross_entropy", "tanh", "float64", sizes=(3, 5, 3))
    foreign = SGN(other[0], other[2], other[1], other[3], momentum=0.5, mode=TEST_MODE)
    tweaked = SGN(loss, params, outputs, inputs, momentum=0.9, mode=TEST_MODE)
    return [
        ("state dict of another model", foreign.state_dict(), "is it from another model"),
        ("state dict of an optimizer with other settings", tweaked.state_dict(),
         r"other settings: \['momentum'\]"),
        ("not a state dict", {"params": []}, "must be a dict from `SGN.state_dict"),
    ]


def test_bad_state_dicts_are_refused_and_change_nothing(problem, optimizer):
    optimizer.step(*make_batch("softmax_cross_entropy", "float64"))
    cases = state_cases(problem)
    before = snapshot(optimizer.params, optimizer)
    for _, state, message in cases:
        with pytest.raises(ValueError, match=message):
            optimizer.load_state_dict(state)
        assert snapshot(optimizer.params, optimizer) == before


def raised(call) -> BaseException:
    """The error ``call()`` raises (the cases of this file all raise)."""
    try:
        call()
    except Exception as error:  # noqa: BLE001 - any kind is recorded
        return error
    raise AssertionError("no error raised")


def messages_raised(problem, optimizer) -> dict:
    """``{what: "`Type`: message"}`` of every case of this file, raised afresh: the
    message's first line (PyTensor 2.38 appends the failing node's details to an error
    raised while a compiled function runs)."""
    loss, outputs, params, inputs = problem
    calls = {what: (lambda options=options: SGN(loss, params, outputs, inputs, **options))
             for what, options, _, _ in SETTING_CASES}
    calls |= {what: (lambda a=arguments: SGN(a["loss"], a["params"], a["outputs"], a["inputs"],
                                             mode=TEST_MODE))
              for what, arguments, _, _ in graph_cases()}
    calls |= {what: (lambda batch=batch: optimizer.step(*batch))
              for what, batch, _, _ in batch_cases()}
    calls |= {what: (lambda state=state: optimizer.load_state_dict(state))
              for what, state, _ in state_cases(problem)}
    errors = {what: raised(call) for what, call in calls.items()}
    return {what: f"`{type(error).__name__}`: {str(error).splitlines()[0]}"
            for what, error in errors.items()}


def documented_message(page: str, what: str) -> str | None:
    """The "what the user sees" cell of the errors page's row for ``what``."""
    for line in page.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if cells[0] == what:
            return cells[-1]
    return None


def test_the_errors_page_shows_every_case_with_the_message_raised(problem, optimizer):
    """Each case of this file is a row of the docs' errors page, and its message column
    is what the code raises: verbatim, or with ``...`` standing for a cut (a long
    PyTensor message)."""
    with open(ERRORS_PAGE) as stream:
        page = stream.read()
    actual = messages_raised(problem, optimizer)
    assert len(actual) >= 50
    for what, message in actual.items():
        shown = documented_message(page, what)
        assert shown is not None, f"no row for {what!r}"
        pieces, position = shown.split("..."), 0
        for piece in pieces:  # the shown pieces appear in order in the real message
            found = message.find(piece.strip(), position)
            assert found >= 0, f"{what!r}: shows {shown!r}, raises {message!r}"
            position = found + len(piece.strip())
        if len(pieces) == 1:
            assert shown == message, f"{what!r}: shows {shown!r}, raises {message!r}"


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
    with pytest.raises(ValueError, match="`damping`"):
        sgn(loss, params, problem[1], damping=-1.0)


@pytest.mark.parametrize("options", [{}, {"preconditioner": "hutchinson",
                                          "model_momentum": True}],
                         ids=["defaults", "every-product"])
def test_the_graph_is_checked_once_at_the_door(problem, monkeypatch, options):
    """``SGN(...)`` checks ``loss`` and its graph once; the step builder's many curvature
    products call unchecked internals."""
    calls = {"check_loss": 0, "check_computed_from": 0, "check_matching_blocks": 0}
    for name in calls:
        def counted(*args, _name=name, _check=getattr(validation, name)):
            calls[_name] += 1
            return _check(*args)
        for module in (validation, curvature):  # where the checks are looked up
            monkeypatch.setattr(module, name, counted)
    loss, outputs, params, inputs = problem
    SGN(loss, params, outputs, inputs, mode=TEST_MODE, **options)
    assert calls == {"check_loss": 1, "check_computed_from": 1, "check_matching_blocks": 0}


class _Cube(Op):
    """``x ** 3`` elementwise, whose derivative (:class:`_CubeSlope`) has none."""

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        return Apply(self, [x], [x.type()])

    def perform(self, node, inputs, output_storage):
        output_storage[0][0] = inputs[0] ** 3

    def pullback(self, inputs, outputs, cotangents):
        return [cotangents[0] * _CubeSlope()(inputs[0])]


class _CubeSlope(_Cube):
    def perform(self, node, inputs, output_storage):
        output_storage[0][0] = 3 * inputs[0] ** 2

    def pullback(self, inputs, outputs, cotangents):
        return [grad_not_implemented(self, 0, inputs[0])]


def test_a_loss_pytensor_cannot_differentiate_twice_is_named(problem):
    _, outputs, params, inputs = problem
    cube = differentiated_by_pullback(_Cube)
    differentiated_by_pullback(_CubeSlope)
    labels = inputs[1]
    loss = pt.mean(cube()(outputs)[pt.arange(labels.shape[0]), labels])
    before = snapshot(params)
    with pytest.raises(ValueError, match="cannot differentiate `loss` twice"):
        SGN(loss, params, outputs, inputs, mode=TEST_MODE)
    assert snapshot(params) == before
