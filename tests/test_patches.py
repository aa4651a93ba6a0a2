"""The patch ops against numpy loops, their adjointness, and their derivatives."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import BACKENDS, TEST_MODE

from sgn_theano.compat import pushforward
from sgn_theano.compilation.modes import compile_mode
from sgn_theano.models.patches import ExtractPatches, FoldPatches, extract_patches

#: (image height, width, kernel height, width, stride): ragged edges included
GEOMETRIES = [(5, 5, 3, 3, 1), (7, 6, 3, 2, 2), (8, 8, 2, 2, 3), (4, 4, 4, 4, 1)]


def reference_patches(images, kernel_h, kernel_w, stride):
    batch, height, width, channels = images.shape
    rows, columns = (height - kernel_h) // stride + 1, (width - kernel_w) // stride + 1
    out = np.zeros((batch, rows, columns, kernel_h * kernel_w * channels), images.dtype)
    for i in range(rows):
        for j in range(columns):
            window = images[:, i * stride : i * stride + kernel_h,
                            j * stride : j * stride + kernel_w, :]
            out[:, i, j, :] = window.reshape(batch, -1)  # (u, v, c), channels fastest
    return out


def patch_functions(mode, height, width, kernel_h, kernel_w, stride, dtype="float64"):
    """Compiled ``images -> patches`` and ``patches -> folded images`` (of a constant
    size, as JAX needs)."""
    images, patches = pt.tensor4("images", dtype=dtype), pt.tensor4("patches", dtype=dtype)
    extract = pytensor.function([images], ExtractPatches(kernel_h, kernel_w, stride)(images),
                                mode=mode)
    fold = pytensor.function([patches],
                             FoldPatches(kernel_h, kernel_w, stride)(patches, height, width),
                             mode=mode)
    return extract, fold


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_patches_match_numpy_and_fold_is_their_adjoint(geometry):
    height, width, kernel_h, kernel_w, stride = geometry
    extract, fold = patch_functions(TEST_MODE, *geometry)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, height, width, 3))
    patches = extract(images)
    np.testing.assert_array_equal(patches, reference_patches(images, kernel_h, kernel_w, stride))
    cotangent = rng.standard_normal(patches.shape)
    folded = fold(cotangent)
    assert folded.shape == images.shape
    # <E x, P> = <x, E^T P>: fold is the adjoint of extract.
    np.testing.assert_allclose(np.vdot(patches, cotangent), np.vdot(images, folded), rtol=1e-12)


@pytest.mark.parametrize("mode_name", BACKENDS)
@pytest.mark.parametrize("geometry", [GEOMETRIES[1], GEOMETRIES[2]], ids=["stride2", "stride3"])
def test_patch_ops_in_each_backend_match_numpy_and_keep_float32(mode_name, geometry):
    height, width, kernel_h, kernel_w, stride = geometry
    extract, fold = patch_functions(compile_mode(mode_name), *geometry, dtype="float32")
    rng = np.random.default_rng(1)
    images = rng.standard_normal((2, height, width, 3)).astype(np.float32)
    patches = extract(images)
    assert patches.dtype == np.float32
    np.testing.assert_array_equal(patches, reference_patches(images, kernel_h, kernel_w, stride))
    cotangent = rng.standard_normal(patches.shape).astype(np.float32)
    reference_fold = patch_functions(TEST_MODE, *geometry)[1]
    folded = fold(cotangent)
    assert folded.dtype == np.float32
    np.testing.assert_allclose(folded, reference_fold(cotangent.astype(np.float64)),
                               rtol=1e-5, atol=1e-6)
    # the same function again, on a new batch size (outputs are reused when they fit)
    np.testing.assert_array_equal(extract(images[:1]), patches[:1])


@pytest.mark.parametrize("mode_name", ["FAST_COMPILE", "C", "NUMBA"])
def test_images_smaller_than_the_kernel_and_folds_of_the_wrong_size_are_refused(mode_name):
    extract, fold = patch_functions(compile_mode(mode_name), 5, 5, 3, 3, 1)
    with pytest.raises(ValueError):
        extract(np.zeros((1, 2, 5, 1)))
    with pytest.raises(ValueError):  # 3x3 patches of a 3x3 kernel need 5x5 images, not 4x4
        patch_functions(compile_mode(mode_name), 4, 4, 3, 3, 1)[1](np.zeros((1, 3, 3, 9)))


@pytest.mark.parametrize("mode_name", ["FAST_COMPILE", *BACKENDS])
def test_gradient_and_forward_product_match_finite_differences_in_each_backend(mode_name):
    """The gradient of a non-linear function of the patches and of their fold (through
    each op's pullback), and the forward-mode product (the double pullback), against
    central differences, compiled in each backend."""
    mode = compile_mode(mode_name)
    rng = np.random.default_rng(4)
    x, direction = rng.standard_normal((2, 1, 7, 6, 2))
    images = pt.tensor4("images", shape=x.shape)
    patches = extract_patches(images, (3, 2), 2)
    folded = FoldPatches(3, 2, 2)(pt.tanh(patches), 7, 6)
    value = (pt.sin(patches) ** 2).sum() + (folded * images).sum()
    (gradient,) = pytensor.grad(value, [images])
    tangent = pushforward(folded, images, pt.constant(direction))
    evaluate, differentiate = (pytensor.function([images], outputs, mode=mode)
                               for outputs in (value, [gradient, tangent]))
    analytic_gradient, analytic_tangent = differentiate(x)
    step = 1e-6
    numeric_gradient = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        shift = np.zeros_like(x)
        shift[index] = step
        numeric_gradient[index] = (evaluate(x + shift) - evaluate(x - shift)) / (2 * step)
    np.testing.assert_allclose(analytic_gradient, numeric_gradient, rtol=1e-6, atol=1e-7)
    fold_at = pytensor.function([images], folded, mode=TEST_MODE)
    numeric_tangent = (fold_at(x + step * direction) - fold_at(x - step * direction)) / (2 * step)
    np.testing.assert_allclose(analytic_tangent, numeric_tangent, rtol=1e-6, atol=1e-7)


def test_derivatives_of_each_op_are_the_other_one():
    images = pt.tensor4("images")
    patches = extract_patches(images, (3, 2), 2)
    (gradient,) = pytensor.grad(None, [images], known_grads={patches: pt.ones_like(patches)})
    assert isinstance(gradient.owner.op, FoldPatches)
    # Linear, so the double pullback (PyTensor's pushforward) is the op again; the
    # numbers: the directional derivative of a linear map is the map of the direction.
    direction = pt.tensor4("direction")
    tangent = pushforward(patches, images, direction)
    rng = np.random.default_rng(2)
    x, v = rng.standard_normal((2, 2, 7, 6, 3))
    np.testing.assert_allclose(
        pytensor.function([images, direction], tangent, mode=TEST_MODE,
                          on_unused_input="ignore")(x, v),
        reference_patches(v, 3, 2, 2), rtol=1e-12)
    pytensor.gradient.verify_grad(lambda z: extract_patches(z, (3, 2), 2).sum() ** 2, [x[:1]],
                                  rng=rng, mode=TEST_MODE)


def test_static_shapes_are_carried_and_bad_ranks_refused():
    patches = extract_patches(pt.tensor4(shape=(None, 28, 28, 1)), (5, 5), 1)
    assert patches.type.shape == (None, 24, 24, 25)
    folded = FoldPatches(5, 5, 1)(patches, 28, 28)
    assert folded.type.shape == (None, 28, 28, 1)
    with pytest.raises(ValueError, match="`images` must be \\(B, H, W, C\\)"):
        extract_patches(pt.matrix(), (2, 2))
    with pytest.raises(ValueError, match="`patches` must be"):
        FoldPatches(2, 2, 1)(pt.matrix(), 3, 3)
