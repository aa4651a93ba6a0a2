"""Softmax and log-softmax inlined in the C backend: no Python op left, same values."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.tensor.special import LogSoftmax, Softmax

from sgn_theano.compat import GRAPH_SOFTMAX_OPS
from sgn_theano.compilation.modes import compile_mode

pytestmark = pytest.mark.skipif(not GRAPH_SOFTMAX_OPS,
                                reason="this PyTensor's softmax ops have C code of their own")


def test_c_mode_inlines_softmax_and_keeps_values():
    z, y = pt.matrix("z", dtype="float64"), pt.ivector("y")
    loss = -pt.mean(pt.special.log_softmax(z, axis=1)[pt.arange(y.shape[0]), y])
    outputs = [loss, pytensor.grad(loss, z), pt.special.softmax(z, axis=1)]
    rng = np.random.default_rng(0)
    values = (100 * rng.standard_normal((6, 4)), rng.integers(0, 4, 6).astype("int32"))
    inlined = pytensor.function([z, y], outputs, mode=compile_mode("C"))
    assert not any(isinstance(node.op, (Softmax, LogSoftmax))
                   for node in inlined.maker.fgraph.apply_nodes)
    reference = pytensor.function([z, y], outputs, mode="FAST_COMPILE")
    for got, expected in zip(inlined(*values), reference(*values)):
        assert np.all(np.isfinite(got))  # stable for logits of size 100
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
