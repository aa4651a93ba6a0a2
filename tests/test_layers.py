"""Convolution and pooling against direct numpy loops; the CNN builder; G v on a CNN."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import NEEDS_JAX, TEST_MODE, TOLERANCE, dense_gauss_newton, flatten, unflatten

from sgn_theano import SGN, gauss_newton_product, softmax_cross_entropy
from sgn_theano.models.layers import conv2d, max_pool2d
from sgn_theano.models import LENET5, VGG_SMALL, cnn, lenet5, vgg_small
from sgn_theano.compilation.modes import compile_mode


def reference_conv(images, filters, stride, padding):
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    kh, kw, _, count = filters.shape
    height = (padded.shape[1] - kh) // stride + 1
    width = (padded.shape[2] - kw) // stride + 1
    out = np.zeros((images.shape[0], height, width, count))
    for i in range(height):
        for j in range(width):
            window = padded[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j, :] = np.einsum("buvc,uvcf->bf", window, filters)
    return out


@pytest.mark.parametrize("method", ["im2col", "shifted"])
@pytest.mark.parametrize("stride, padding, kernel", [(1, 0, 3), (2, 1, 3), (1, 2, 5), (3, 0, 2)])
def test_conv2d_matches_direct_loops(method, stride, padding, kernel):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, 9, 8, 3))
    filters = rng.standard_normal((kernel, kernel, 3, 4))
    x = pt.tensor4("x")
    w = pytensor.shared(filters)
    result = pytensor.function([x], conv2d(x, w, stride=stride, padding=padding, method=method),
                               mode=TEST_MODE)(images)
    np.testing.assert_allclose(result, reference_conv(images, filters, stride, padding),
                               rtol=1e-12, atol=1e-12)


def test_max_pool_matches_numpy_and_drops_the_ragged_edge():
    images = np.random.default_rng(1).standard_normal((2, 7, 6, 3))
    x = pt.tensor4("x")
    result = pytensor.function([x], max_pool2d(x, 2), mode=TEST_MODE)(images)
    expected = images[:, :6, :6, :].reshape(2, 3, 2, 3, 2, 3).max(axis=(2, 4))
    np.testing.assert_array_equal(result, expected)


def test_presets_have_the_documented_shapes():
    outputs, params = lenet5(pt.matrix("x", dtype="float32"))
    assert outputs.dtype == "float32"  # no silent upcast anywhere in the graph
    assert [p.get_value().shape for p in params] == [
        (5, 5, 1, 6), (6,), (5, 5, 6, 16), (16,), (400, 120), (120,), (120, 84), (84,),
        (84, 10), (10,)]
    assert all(p.dtype == "float32" for p in params)
    outputs, params = vgg_small(pt.tensor4("x", dtype="float32"))
    assert outputs.dtype == "float32"
    assert [p.get_value().shape for p in params][::2] == [
        (3, 3, 3, 32), (3, 3, 32, 64), (3, 3, 64, 64), (1024, 64), (64, 10)]
    assert LENET5[-1] == ("dense", 10) and VGG_SMALL[-1] == ("dense", 10)


def test_lenet_forward_on_flat_rows_equals_numpy():
    rng = np.random.default_rng(2)
    rows = rng.random((3, 784))
    x = pt.matrix("x")
    outputs, params = lenet5(x, activation="tanh", seed=4)
    k1, c1, k2, c2, w3, b3, w4, b4, w5, b5 = [p.get_value() for p in params]
    h = np.tanh(reference_conv(rows.reshape(3, 28, 28, 1), k1, 1, 2) + c1)
    h = h.reshape(3, 14, 2, 14, 2, 6).max(axis=(2, 4))
    h = np.tanh(reference_conv(h, k2, 1, 0) + c2)
    h = h.reshape(3, 5, 2, 5, 2, 16).max(axis=(2, 4)).reshape(3, -1)
    expected = np.tanh(np.tanh(h @ w3 + b3) @ w4 + b4) @ w5 + b5
    np.testing.assert_allclose(pytensor.function([x], outputs, mode=TEST_MODE)(rows), expected,
                               rtol=1e-10)


def test_he_initialisation_scale_uses_the_kernel_fan_in():
    _, params = cnn(pt.tensor4(), (8, 8, 3), [("conv", 64, 3), ("dense", 2)], seed=0)
    assert np.std(params[0].get_value()) == pytest.approx(np.sqrt(2 / 27), rel=0.05)


#: Every backend in float64 with relu; float32 with tanh where float32 is most fragile
#: (the Python linker, and JAX, whose reductions return float64 unless fixed).
CNN_PRODUCT_CASES = [
    ("float64", "relu", "FAST_COMPILE"),
    ("float64", "relu", "C"),
    pytest.param("float64", "relu", "NUMBA", marks=pytest.mark.slow),  # a minute of JIT
    pytest.param("float64", "relu", "JAX", marks=NEEDS_JAX),
    ("float32", "tanh", "FAST_COMPILE"),
    pytest.param("float32", "tanh", "JAX", marks=NEEDS_JAX),
]


@pytest.mark.parametrize("dtype, activation, mode_name", CNN_PRODUCT_CASES)
def test_gauss_newton_product_on_a_tiny_cnn_matches_dense_matrix(dtype, activation, mode_name):
    # a static batch shape, which JAX mode needs for its convolutions
    x, y = pt.tensor4("x", dtype=dtype, shape=(4, 6, 6, 2)), pt.ivector("y")
    layers = [("conv", 2, 3, 1, 1), ("pool", 2), ("conv", 2, 2, 2, 0), ("dense", 3)]
    outputs, params = cnn(x, (6, 6, 2), layers, activation=activation, seed=5, dtype=dtype)
    loss = softmax_cross_entropy(outputs, y)
    rng = np.random.default_rng(3)
    batch = (rng.standard_normal((4, 6, 6, 2)).astype(dtype), np.array([0, 1, 2, 1], np.int32))
    matrix, _ = dense_gauss_newton(loss, outputs, params, [x, y])(*batch)
    vectors = [pt.tensor(dtype=dtype, shape=(None,) * p.type.ndim) for p in params]
    product = pytensor.function([x, y, *vectors],
                                gauss_newton_product(loss, outputs, params, vectors),
                                mode=compile_mode(mode_name), on_unused_input="ignore")
    v = rng.standard_normal(matrix.shape[0])
    blocks = product(*batch, *unflatten(v, params))
    assert all(np.asarray(block).dtype == dtype for block in blocks)
    result = flatten(blocks)
    np.testing.assert_allclose(result, matrix @ v, rtol=TOLERANCE[dtype] * 10,
                               atol=TOLERANCE[dtype])


def test_errors_name_the_problem():
    x = pt.tensor4()
    with pytest.raises(ValueError, match="`method` must be one of"):
        conv2d(x, pytensor.shared(np.zeros((3, 3, 1, 1))), method="fft")
    with pytest.raises(ValueError, match="`stride` must be >= 1"):
        conv2d(x, pytensor.shared(np.zeros((3, 3, 1, 1))), stride=0)
    with pytest.raises(ValueError, match="must have 4 dimensions"):
        conv2d(pt.matrix(), pytensor.shared(np.zeros((3, 3, 1, 1))))
    with pytest.raises(ValueError, match="must end with a \\('dense'"):
        cnn(x, (8, 8, 1), [("conv", 2, 3)])
    with pytest.raises(ValueError, match="Bad layer \\('conv', 2\\)"):
        cnn(x, (8, 8, 1), [("conv", 2), ("dense", 2)])
    with pytest.raises(ValueError, match="`input_shape` must be \\(H, W, C\\)"):
        cnn(x, (8, 8), [("dense", 2)])
    with pytest.raises(ValueError, match="`size` must be >= 1"):
        max_pool2d(x, 0)


def tiny_cnn():
    x, y = pt.tensor4("x", dtype="float64"), pt.ivector("y")
    outputs, params = cnn(x, (5, 5, 1), [("conv", 2, 3, 2, 1), ("pool", 3), ("dense", 3)],
                          activation="tanh", seed=6, dtype="float64")
    return softmax_cross_entropy(outputs, y), outputs, params, [x, y]


@pytest.fixture(scope="module")
def tiny_cnn_solution():
    """A batch, and the exact damped SGN direction on it from the dense G (computed once:
    the dense Jacobians of a CNN are slow to build)."""
    loss, outputs, params, inputs = tiny_cnn()
    rng = np.random.default_rng(4)
    batch = (rng.standard_normal((4, 5, 5, 1)), np.array([0, 1, 2, 0], np.int32))
    matrix, gradient = dense_gauss_newton(loss, outputs, params, inputs)(*batch)
    return batch, -np.linalg.solve(matrix + 0.1 * np.eye(len(gradient)), gradient)


@pytest.mark.parametrize("mode", ["FAST_COMPILE", pytest.param("C", marks=pytest.mark.slow)])
def test_sgn_step_on_a_tiny_cnn_equals_the_dense_solution(mode, tiny_cnn_solution):
    # The CG loop body slices the images with symbolic bounds (padding, pooling): scalar
    # loop invariants that must be handed to the loop as tensors (a regression test).
    # C too: the patch ops have a C-mode implementation of their own (NUMBA's and JAX's
    # are checked on the ops alone in test_patches.py, and in a CNN's G v in every mode
    # above; a whole NUMBA step on a CNN takes minutes to JIT). Not JAX: PyTensor's JAX
    # scan needs reshape shapes it can see inside the loop, and the CG loop receives them
    # as invariants, even with static image shapes.
    batch, expected = tiny_cnn_solution
    loss, outputs, params, inputs = tiny_cnn()  # fresh parameters for each mode
    before = flatten(p.get_value() for p in params)
    SGN(loss, params, outputs, inputs, max_cg_iters=40, cg_tol=0.0, damping=0.1,
        curvature_fraction=1.0, trust_region=False, line_search=False, mode=mode).step(*batch)
    np.testing.assert_allclose(flatten(p.get_value() for p in params) - before, expected,
                               rtol=1e-7, atol=1e-10)
