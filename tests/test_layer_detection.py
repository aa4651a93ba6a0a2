"""Layers found in users' graphs for K-FAC: plain PyTensor (``@``, ``pt.dot``, ``W.T``,
``+ b``), the library's networks and im2col convolutions, and the diagonal fallback."""

import numpy as np
import pytensor
import pytensor.tensor as pt
from helpers import TEST_MODE

from sgn_theano.models import lenet5, mlp
from sgn_theano.preconditioning.layer_detection import find_layers


def _shared(rng, shape, name):
    return pytensor.shared(rng.normal(size=shape), name=name)


def _blocks(layers, params):
    return {line.split(":")[0]: line.split(": ")[1].split(" (")[0]
            for line in layers.describe(params)}


def test_plain_pytensor_layers_are_found_and_the_rest_is_diagonal():
    rng = np.random.default_rng(0)
    x = pt.matrix("x")
    w0, b0 = _shared(rng, (4, 5), "w0"), _shared(rng, (5,), "b0")
    w1t, b1 = _shared(rng, (3, 5), "w1t"), _shared(rng, (3,), "b1")
    w2, scale = _shared(rng, (3, 2), "w2"), _shared(rng, (2,), "scale")
    w3 = _shared(rng, (2, 2), "w3")
    h = x @ w0 + b0
    h = h * (h > 0)
    h = pt.tanh(pt.dot(h, w1t.T) + b1)
    z = (h @ w2) * scale + h @ w2  # w2 used twice: no Kronecker block
    z = pt.maximum(z, 0) @ w3  # no bias
    params = [w0, b0, w1t, b1, w2, scale, w3]
    layers = find_layers(z, params)
    assert _blocks(layers, params) == {
        "w0": "Kronecker layer 0", "b0": "Kronecker layer 0", "w1t": "Kronecker layer 1",
        "b1": "Kronecker layer 1", "w2": "diagonal", "scale": "diagonal",
        "w3": "Kronecker layer 2"}
    assert [layer.view for layer in layers.layers] == ["plain", "transposed", "plain"]
    assert [layer.shape for layer in layers.layers] == [(4, 5), (5, 3), (2, 2)]
    assert layers.layers[2].bias is None and layers.layers[2].factor_shapes == ((2, 2), (2, 2))
    assert layers.diagonal == [w2, scale]
    # the layer's input and pre-activation are the graph's: a = relu(z) rows, a @ w3
    fn = pytensor.function([x], [layers.layers[2].inputs, layers.layers[2].preactivations, z],
                           mode=TEST_MODE)
    a, s, out = fn(rng.normal(size=(6, 4)))
    np.testing.assert_allclose(s, out)
    np.testing.assert_allclose(a @ w3.get_value(), s)


def test_a_bias_used_twice_is_left_diagonal():
    rng = np.random.default_rng(1)
    x = pt.matrix("x")
    w, b = _shared(rng, (3, 3), "w"), _shared(rng, (3,), "b")
    z = x @ w + b + b
    layers = find_layers(z, [w, b])
    assert layers.layers[0].bias is None and layers.diagonal == [b]


def test_library_networks_and_convolutions():
    x = pt.matrix("x")
    outputs, params = lenet5(x)
    layers = find_layers(outputs, params)
    assert layers.diagonal == []
    assert [layer.view for layer in layers.layers] == ["reshaped"] * 2 + ["plain"] * 3
    assert [layer.shape for layer in layers.layers[:2]] == [(25, 6), (150, 16)]
    conv = layers.layers[1]
    block = pt.tensor4("block")
    value = np.arange(np.prod(conv.weight.get_value().shape), dtype="float64").reshape(
        conv.weight.get_value().shape)
    back = pytensor.function([block], conv.as_weight(conv.as_matrix(block)), mode=TEST_MODE)
    np.testing.assert_array_equal(back(value), value)
    outputs, params = mlp(x, (3, 4, 2))
    assert find_layers(outputs, params).diagonal == []
