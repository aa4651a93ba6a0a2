"""Shapes JAX can see (:mod:`sgn_theano.compilation.jax_shapes`): sizes, reshapes, slice
bounds and checks computed from a batch size the graph does not fix, in JAX mode."""

from __future__ import annotations

import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.raise_op import Assert

from helpers import NEEDS_JAX
from sgn_theano import SGN, adam, compile_mode, softmax_cross_entropy
from sgn_theano.errors import SGNInputError
from sgn_theano.models import mlp

pytestmark = NEEDS_JAX


def test_reshapes_and_slices_from_computed_sizes_in_jax_mode():
    # `x.shape[0] * 2` and `x.shape[0] // 2` are arithmetic on a shape: JAX traced them
    # and refused them as a reshape's size and as a slice bound.
    x = pt.matrix("x", dtype="float32")
    folded = x.reshape((x.shape[0] * 2, x.shape[1] // 2))
    half = x[: x.shape[0] // 2]
    function = pytensor.function([x], [folded.sum(axis=1), half * 2],
                                 mode=compile_mode("JAX"))
    for rows in (6, 3):  # a batch size the graph does not fix
        value = np.arange(rows * 4, dtype="float32").reshape(rows, 4)
        sums, doubled = function(value)
        np.testing.assert_allclose(sums, value.reshape(rows * 2, 2).sum(axis=1))
        np.testing.assert_allclose(doubled, value[: rows // 2] * 2)


def test_a_scan_over_a_reshaped_batch_trains_with_adam_in_jax_mode():
    # A plain `scan` RNN over the rows of flattened images, as users write it: its number
    # of steps is computed from the reshape. Its first loss is numpy's; Adam lowers it.
    x, y = pt.matrix("x", dtype="float64"), pt.ivector("y")
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(4, 5)) / 2, rng.normal(size=(5, 5)) / 3,
              rng.normal(size=(5, 3)) / 2]
    w, u, v = [pytensor.shared(value.copy()) for value in values]
    rows = x.reshape((x.shape[0], -1, 4)).dimshuffle(1, 0, 2)
    states = pytensor.scan(lambda row, h: pt.tanh(row @ w + h @ u), sequences=[rows],
                           outputs_info=[pt.zeros((x.shape[0], 5))], return_updates=False)
    logits = states[-1] @ v
    loss = -pt.mean(pt.special.log_softmax(logits, axis=1)[pt.arange(y.shape[0]), y])
    train = pytensor.function([x, y], loss, updates=adam(loss, [w, u, v], 0.05),
                              mode=compile_mode("JAX"))
    x_train, y_train = rng.normal(size=(8, 12)), rng.integers(0, 3, 8).astype("int32")
    h = np.zeros((8, 5))
    for step in range(3):
        h = np.tanh(x_train[:, 4 * step:4 * step + 4] @ values[0] + h @ values[1])
    z = h @ values[2]
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    losses = [float(train(x_train[:rows], y_train[:rows])) for rows in (8, 8, 8, 5, 8)]
    np.testing.assert_allclose(losses[0], -log_p[np.arange(8), y_train].mean(), rtol=1e-10)
    assert losses[4] < losses[0], losses


def test_a_shape_check_runs_while_jax_traces():
    # PyTensor's broadcast check compares two batch sizes: computed at trace time, it
    # raises where it used to be dropped with a warning.
    x, z = pt.matrix("x"), pt.matrix("z")
    checked = Assert("the batches differ")(x, pt.eq(x.shape[0], z.shape[0]))
    function = pytensor.function([x, z], checked + z, mode=compile_mode("JAX"))
    np.testing.assert_allclose(function(np.ones((2, 3)), np.ones((2, 3))), 2 * np.ones((2, 3)))
    with pytest.raises(AssertionError, match="the batches differ"):
        function(np.ones((2, 3)), np.ones((4, 3)))


def test_a_check_on_traced_values_warns_once():
    x = pt.vector("x")
    checked = Assert("x must be positive")(x, pt.all(x > 0))
    with pytest.warns(UserWarning, match="x must be positive"):
        pytensor.function([x], checked * 2, mode=compile_mode("JAX"))(np.ones(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pytensor.function([x], checked * 3, mode=compile_mode("JAX"))(np.ones(3))


def test_a_label_out_of_range_raises_in_jax_mode_with_the_state_untouched():
    """JAX cannot raise inside the step: the loss of a bad label is NaN there, SGN rejects
    the step and raises the error C mode raises, with the state as it was; building and
    stepping print no warning."""
    x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
    logits, params = mlp(x, [6, 5, 3], seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer = SGN(softmax_cross_entropy(logits, y), params, logits, [x, y],
                        mode=compile_mode("JAX"))
        rng = np.random.default_rng(0)
        x_batch = rng.normal(size=(20, 6)).astype("float32")
        y_batch = rng.integers(0, 3, 20).astype("int32")
        optimizer.step(x_batch, y_batch)
    saved = optimizer.state_dict()
    with pytest.raises(SGNInputError, match="label is out of range"):
        optimizer.step(x_batch, np.where(y_batch == 2, 3, y_batch).astype("int32"))
    after = optimizer.state_dict()
    for role, arrays in saved["state"].items():
        assert [a.tobytes() for a in arrays] == [a.tobytes() for a in after["state"][role]], role
    assert optimizer.step_count == 1
    assert np.isfinite(optimizer.step(x_batch, y_batch).loss)


def test_a_reshape_to_a_shape_from_array_values_names_the_node():
    x = pt.matrix("x")
    rows = pt.cast(x[0, 0], "int64")  # a size read from the data: JAX cannot trace it
    function = pytensor.function([x], x.reshape((rows, -1)), mode=compile_mode("JAX"))
    with pytest.raises(NotImplementedError, match="depends on the values of arrays"):
        function(np.full((2, 3), 3.0))


class HostOnlyDouble(Op):
    """An op with a Python implementation only, as a user may write one."""

    def make_node(self, x):
        return Apply(self, [x], [x.type()])

    def perform(self, node, inputs, outputs):
        outputs[0][0] = 2 * inputs[0]


def test_an_op_jax_cannot_translate_is_named_with_what_to_do():
    x = pt.matrix("x")
    with pytest.raises(NotImplementedError, match="JAX mode cannot compile HostOnlyDouble.*"
                                                  "mode 'C' or 'NUMBA'"):
        pytensor.function([x], HostOnlyDouble()(x).sum(), mode=compile_mode("JAX"))


def test_kfac_with_cg_in_a_loop_traces_in_jax_mode():
    # More than ten CG iterations run in a loop, whose buffers are allocated with a size
    # computed from the batch: PyTensor 2.38's JAX backend could not trace it.
    x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
    logits, params = mlp(x, [6, 5, 3], seed=0)
    optimizer = SGN(softmax_cross_entropy(logits, y), params, logits, [x, y],
                    mode=compile_mode("JAX"), max_cg_iters=12)
    rng = np.random.default_rng(0)
    for rows in (20, 13):
        info = optimizer.step(rng.normal(size=(rows, 6)).astype("float32"),
                              rng.integers(0, 3, rows).astype("int32"))
        assert np.isfinite(info.loss) and info.cg_iterations >= 1
