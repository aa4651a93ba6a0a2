"""Recurrent networks written with ``scan``, as users write them: SGN builds on them at
any number of CG iterations within a memory cap, and K-FAC gives their weights shared
across steps Kronecker blocks, checked against backpropagation through time in numpy."""

import subprocess
import sys
import textwrap

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import TEST_MODE

from sgn_theano import SGN, softmax_cross_entropy, squared_error
from sgn_theano.curvature import loss_hessian_operator, loss_hessian_root
from sgn_theano.preconditioning.kronecker_factored import factor_statistics
from sgn_theano.preconditioning.layer_detection import find_layers
from sgn_theano.preconditioning.loop_layers import layers_in_loops

#: A tanh RNN over the rows of a 28 x 28 image, read out from its last state, the
#: library's loss (whose closed-form Hessian product is rebuilt on the curvature rows):
#: the network whose three-iteration build took 24 GB when each CG product copied the
#: graph of its vector (PyTensor's rewrites then concatenate the stack traces of the
#: copies' nodes onto one shared constant, tripling its list per rewrite). PyTensor
#: skips a rewrite that fails and warns, so the cap alone would not fail the build.
BUILD_RNN = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
    import numpy as np, pytensor, pytensor.tensor as pt
    pytensor.config.on_opt_error = "raise"  # a rewrite out of memory fails the build
    from sgn_theano import SGN, softmax_cross_entropy
    rng = np.random.default_rng(0)
    def shared(*shape):
        return pytensor.shared((0.1 * rng.standard_normal(shape)).astype("float32"))
    w, u, b, v, c = shared(28, 8), shared(8, 8), shared(8), shared(8, 10), shared(10)
    x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
    rows = x.reshape((x.shape[0], 28, 28)).dimshuffle(1, 0, 2)
    states = pytensor.scan(lambda row, h: pt.tanh(pt.dot(row, w) + pt.dot(h, u) + b),
                           sequences=[rows], outputs_info=[pt.zeros((x.shape[0], 8), "float32")],
                           return_updates=False)
    logits = pt.dot(states[-1], v) + c
    sgn = SGN(softmax_cross_entropy(logits, y), [w, u, b, v, c], logits, [x, y],
              max_cg_iters=int(sys.argv[1]), preconditioner=None, model_momentum=False)
    info = sgn.step(rng.random((10, 784)).astype("float32"),
                    rng.integers(0, 10, 10).astype("int32"))
    assert info.accepted and info.loss_after < info.loss, info
""")


# k=3 (the 24 GB build) takes a minute on a cold compile cache: in the slow run.
@pytest.mark.parametrize("cg_iterations", [pytest.param(3, marks=pytest.mark.slow), 50])
def test_an_rnn_builds_in_2_gb(cg_iterations):
    run = subprocess.run([sys.executable, "-c", BUILD_RNN, str(cg_iterations)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]


def _rnn(rng, non_sequences: bool):
    """A tanh RNN over the steps of ``x`` (batch, steps, features), read out from its
    last state; its weights in the inner function's closure or passed as non-sequences."""
    def shared(*shape, name):
        return pytensor.shared(0.5 * rng.standard_normal(shape), name=name)
    w, u, b = shared(4, 6, name="w"), shared(6, 6, name="u"), shared(6, name="b")
    v, c = shared(6, 3, name="v"), shared(3, name="c")
    x = pt.tensor3("x")
    if non_sequences:
        states = pytensor.scan(lambda row, h, w, u, b: pt.tanh(row @ w + h @ u + b),
                               sequences=[x.dimshuffle(1, 0, 2)],
                               outputs_info=[pt.zeros((x.shape[0], 6))],
                               non_sequences=[w, u, b], return_updates=False)
    else:
        states = pytensor.scan(lambda row, h: pt.tanh(row @ w + h @ u + b),
                               sequences=[x.dimshuffle(1, 0, 2)],
                               outputs_info=[pt.zeros((x.shape[0], 6))], return_updates=False)
    return x, states[-1] @ v + c, [w, u, b, v, c]


def _numpy_factors(params, x, probe):
    """K-FAC's expanded factors of the RNN by backpropagation through time in numpy:
    ``A`` the mean of ``[a, 1] [a, 1]^T`` over rows and steps, ``S`` the sum over steps of
    ``delta^T delta`` over the rows, ``delta`` the backward pass of ``probe`` at the
    pre-activations (a squared error's Hessian root is the identity)."""
    w, u, b, v, c = (param.get_value() for param in params)
    rows, steps, _ = x.shape
    states = [np.zeros((rows, 6))]
    for t in range(steps):
        states.append(np.tanh(x[:, t] @ w + states[-1] @ u + b))
    back, deltas = probe @ v.T, []
    for t in reversed(range(steps)):
        deltas.append(back * (1 - states[t + 1] ** 2))
        back = deltas[-1] @ u.T
    ones = np.ones((rows, 1))
    input_rows = np.concatenate([np.hstack([x[:, t], ones]) for t in range(steps)])
    state_rows = np.concatenate(states[:-1])
    output_factor = sum(delta.T @ delta for delta in deltas) / rows
    last = np.hstack([states[-1], ones])
    return [input_rows.T @ input_rows / len(input_rows), output_factor,
            state_rows.T @ state_rows / len(state_rows), output_factor,
            last.T @ last / rows, probe.T @ probe / rows]


@pytest.mark.parametrize("non_sequences", [False, True], ids=["closure", "non-sequences"])
def test_weights_shared_across_steps_get_expanded_kronecker_factors(non_sequences):
    rng = np.random.default_rng(3)
    x, outputs, params = _rnn(rng, non_sequences)
    targets = pt.matrix("t")
    loss = squared_error(outputs, targets)
    (new_loss, new_outputs), in_loops = layers_in_loops(loss, outputs, params)
    layers = find_layers(new_outputs, params, in_loops)
    assert [line.split(" (")[0] for line in layers.describe(params)] == [
        "w: Kronecker layer 0", "u: Kronecker layer 1", "b: Kronecker layer 0",
        "v: Kronecker layer 2", "c: Kronecker layer 2"]
    assert "shared across the steps of a scan" in layers.describe(params)[1]
    assert layers.diagonal == []
    probe = pt.matrix("probe")
    statistics = factor_statistics(layers.layers, new_outputs, probe,
                                   loss_hessian_operator(new_loss, new_outputs),
                                   loss_hessian_root(new_loss, new_outputs))
    evaluate = pytensor.function([x, targets, probe], [loss, new_loss, *statistics],
                                 mode=TEST_MODE, on_unused_input="ignore")
    batch, target_values = rng.standard_normal((7, 5, 4)), rng.standard_normal((7, 3))
    probe_values = rng.choice([-1.0, 1.0], size=(7, 3))
    loss_value, rebuilt_loss, *factors = evaluate(batch, target_values, probe_values)
    assert rebuilt_loss == pytest.approx(loss_value, rel=1e-12)  # the loop computes the same
    for factor, expected in zip(factors, _numpy_factors(params, batch, probe_values),
                                strict=True):
        np.testing.assert_allclose(factor, expected, rtol=1e-10, atol=1e-12)


def test_sgn_at_its_defaults_trains_an_rnn_with_loop_layers():
    rng = np.random.default_rng(4)
    x, logits, params = _rnn(rng, non_sequences=False)
    y = pt.ivector("y")
    optimizer = SGN(softmax_cross_entropy(logits, y), params, logits, [x, y], mode=TEST_MODE)
    assert optimizer.layers.diagonal == []
    batch = rng.standard_normal((40, 5, 4)), rng.integers(0, 3, 40).astype("int32")
    first = optimizer.step(*batch)
    for _ in range(14):
        info = optimizer.step(*batch)
    assert first.accepted and np.isfinite(info.loss)
    assert info.loss < 0.5 * first.loss, (first, info)
