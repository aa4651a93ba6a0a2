"""The networks ``sgn-bench`` writes in plain PyTensor (``sgn_theano.bench.tasks``): the
LSTM and the layer-normalized MLP against their forward passes in numpy."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt

from helpers import TEST_MODE
from sgn_theano.bench.tasks import plain_lstm, plain_mlp


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_the_lstm_is_the_textbook_lstm_over_image_rows():
    x = pt.matrix("x", dtype="float64")
    outputs, params = plain_lstm(x, (4, 3, 2), seed=0)
    w, u, b, v, c = [param.get_value() for param in params]
    np.testing.assert_array_equal(b[3:6], 1.0)  # the forget gate's bias
    images = np.random.default_rng(1).normal(size=(5, 12))  # 3 rows of 4 per image
    h = cell = np.zeros((5, 3))
    for step in range(3):
        gates = images[:, 4 * step:4 * step + 4] @ w + h @ u + b
        cell = sigmoid(gates[:, 3:6]) * cell + sigmoid(gates[:, :3]) * np.tanh(gates[:, 6:9])
        h = sigmoid(gates[:, 9:]) * np.tanh(cell)
    computed = pytensor.function([x], outputs, mode=TEST_MODE)(images)
    np.testing.assert_allclose(computed, h @ v + c, rtol=1e-10)


def test_layer_normalization_normalizes_each_hidden_layer_over_its_units():
    x = pt.matrix("x", dtype="float32")
    outputs, params = plain_mlp(x, (6, 5, 3), "tanh", seed=0, layer_norm=True)
    assert [param.name for param in params] == ["W0", "b0", "gamma0", "beta0", "W1", "b1"]
    w0, b0, gain, shift, w1, b1 = [param.get_value() for param in params]
    gain[:] = np.linspace(0.5, 2, 5)
    shift[:] = np.linspace(-1, 1, 5)
    params[2].set_value(gain)
    params[3].set_value(shift)
    inputs = np.random.default_rng(2).normal(size=(4, 6)).astype("float32")
    s = inputs @ w0 + b0
    normalized = (s - s.mean(axis=1, keepdims=True)) / np.sqrt(s.var(axis=1, keepdims=True)
                                                             + 1e-5)
    expected = np.tanh(gain * normalized + shift) @ w1 + b1
    computed = pytensor.function([x], outputs, mode=TEST_MODE)(inputs)
    np.testing.assert_allclose(computed, expected, rtol=1e-4, atol=1e-5)
