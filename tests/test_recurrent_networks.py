"""Recurrent networks written with ``scan``, as users write them: SGN builds on them at
any number of CG iterations within a memory cap."""

import subprocess
import sys
import textwrap

import pytest

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


@pytest.mark.parametrize("cg_iterations", [3, 50])
def test_an_rnn_builds_in_2_gb(cg_iterations):
    run = subprocess.run([sys.executable, "-c", BUILD_RNN, str(cg_iterations)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
