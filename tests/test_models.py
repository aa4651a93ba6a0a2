"""The MLP builder: shapes, initialisation scale, activations and errors."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.graph.traversal import ancestors
from helpers import TEST_MODE

from sgn_theano.models import ACTIVATIONS, mlp


@pytest.mark.parametrize("activation, gain", [("relu", 2.0), ("tanh", 1.0), ("sigmoid", 1.0)])
def test_shapes_dtype_and_initialisation(activation, gain):
    x = pt.matrix("x", dtype="float32")
    outputs, params = mlp(x, [300, 200, 5], activation=activation, seed=1)
    assert [p.get_value().shape for p in params] == [(300, 200), (200,), (200, 5), (5,)]
    assert all(p.dtype == "float32" for p in params)
    assert np.std(params[0].get_value()) == pytest.approx(np.sqrt(gain / 300), rel=0.05)
    assert not params[1].get_value().any()
    value = pytensor.function([x], outputs, mode=TEST_MODE)(np.ones((4, 300), np.float32))
    assert value.shape == (4, 5) and value.dtype == np.float32


def test_relu_matches_numpy_and_seed_fixes_weights():
    x = pt.matrix("x")
    outputs, params = mlp(x, [3, 4, 2], activation="relu", seed=3)
    w1, b1, w2, b2 = [p.get_value() for p in params]
    data = np.random.default_rng(0).standard_normal((5, 3))
    expected = np.maximum(data @ w1 + b1, 0) @ w2 + b2
    np.testing.assert_allclose(pytensor.function([x], outputs, mode=TEST_MODE)(data), expected)
    again = mlp(pt.matrix(), [3, 4, 2], activation="relu", seed=3)[1]
    assert all(np.array_equal(p.get_value(), q.get_value()) for p, q in zip(params, again))


@pytest.mark.parametrize("dtype, atol", [("float32", 2e-7), ("float64", 1e-15)])
def test_tanh_is_tanh_with_a_finite_derivative_everywhere(dtype, atol):
    z = pt.vector("z", dtype=dtype)
    activation = ACTIVATIONS["tanh"](z)
    function = pytensor.function([z], [activation, pytensor.grad(activation.sum(), z)],
                                 mode=TEST_MODE)
    points = np.concatenate([np.linspace(-20, 20, 4001), [-1e30, -100, 100, 1e30]])
    value, derivative = function(points.astype(dtype))
    assert value.dtype == dtype
    np.testing.assert_allclose(value, np.tanh(points), rtol=0, atol=atol)
    np.testing.assert_allclose(derivative, 1 - np.tanh(points) ** 2, rtol=0, atol=10 * atol)


def test_relu_derivative_is_the_mask_and_stays_float32():
    z = pt.vector("z", dtype="float32")
    (derivative,) = pytensor.grad(ACTIVATIONS["relu"](z).sum(), [z])
    assert derivative.dtype == "float32"
    # no float64 zeros from differentiating the comparison (they reached the CG loop)
    assert all(v.dtype != "float64" for v in ancestors([derivative])
               if hasattr(v, "dtype"))
    points = np.array([-2.0, -1e-3, 1e-3, 3.0], np.float32)
    np.testing.assert_array_equal(pytensor.function([z], derivative, mode=TEST_MODE)(points),
                                  [0, 0, 1, 1])


def test_errors():
    with pytest.raises(ValueError, match="`activation` must be one of"):
        mlp(pt.matrix(), [3, 2], activation="gelu")
    with pytest.raises(ValueError, match="`sizes` must list at least two"):
        mlp(pt.matrix(), [3])
    with pytest.raises(ValueError, match="`inputs` must be a matrix"):
        mlp(pt.tensor3(), [3, 2])
