"""Convolution and pooling on NHWC tensors.

PyTensor 3 has no neural-network ``conv2d`` or pooling op (``tensor.nnet`` is gone and
``signal.convolve2d`` calls scipy in Python, one image at a time). The convolution is
the patches of its input (:mod:`sgn_theano.models.patches`, an op with its adjoint) times the
filters; pooling is a reshape and a max. PyTensor differentiates both (gradients, and
the forward-mode products of :mod:`sgn_theano.curvature`). The patch ops run in every
backend (C, NUMBA, JAX); an SGN step on a CNN does not run in JAX mode yet (docs, "Compile modes").

Images are ``(B, H, W, C)`` (channels last): a patch of a ``k_h x k_w`` window is then
a contiguous run of ``k_h k_w C`` numbers, and no transpose is needed around the product.
"""

from __future__ import annotations

from typing import Literal

import pytensor.tensor as pt
from pytensor.tensor.variable import TensorVariable

from sgn_theano.models.patches import extract_patches

__all__ = ["CONV_METHODS", "conv2d", "conv_output_size", "max_pool2d"]

#: How :func:`conv2d` computes the convolution (see its docstring).
CONV_METHODS = ("im2col", "shifted")


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis:
    :math:`\\lfloor (n + 2p - k) / s \\rfloor + 1`."""
    return (size + 2 * padding - kernel) // stride + 1


def conv2d(
    images: TensorVariable,
    filters: TensorVariable,
    *,
    stride: int = 1,
    padding: int = 0,
    method: Literal["im2col", "shifted"] = "im2col",
) -> TensorVariable:
    """2-D cross-correlation (what deep learning calls convolution), channels last.

    .. math::

        y_{b,i,j,f} = \\sum_{u < k_h} \\sum_{v < k_w} \\sum_{c}
            x^{\\text{pad}}_{b,\\, s i + u,\\, s j + v,\\, c} \\, w_{u,v,c,f}

    with :math:`x^{\\text{pad}}` the input zero-padded by ``padding`` on each side.

    Parameters
    ----------
    images : TensorVariable
        :math:`x`, shape ``(B, H, W, C)``.
    filters : TensorVariable
        :math:`w`, shape ``(k_h, k_w, C, F)``.
    stride, padding : int
        :math:`s \\ge 1` and :math:`p \\ge 0`, the same on both axes.
    method : {"im2col", "shifted"}
        ``"im2col"``: the patches ``(B, H', W', k_h k_w C)`` of the input
        (:func:`sgn_theano.models.patches.extract_patches`, one op) multiplied by the filters
        reshaped to ``(k_h k_w C, F)``: one large matrix product.
        ``"shifted"``: the sum over :math:`(u, v)` of one product per strided slice of
        the input, with no patch buffer (and a graph of :math:`k_h k_w` slices).

    Returns
    -------
    TensorVariable
        ``(B, H', W', F)`` with :math:`H' = \\lfloor (H + 2p - k_h) / s \\rfloor + 1`,
        likewise :math:`W'`.
    """
    if images.type.ndim != 4 or filters.type.ndim != 4:
        raise ValueError(f"`images` (B, H, W, C) and `filters` (k_h, k_w, C, F) must have 4 "
                         f"dimensions, got {images.type.ndim} and {filters.type.ndim}.")
    if method not in CONV_METHODS:
        raise ValueError(f"`method` must be one of {CONV_METHODS}, got {method!r}.")
    if stride < 1 or padding < 0:
        raise ValueError(f"`stride` must be >= 1 and `padding` >= 0, got {stride} and "
                         f"{padding}.")
    # Static sizes: the kernel's are needed; the others make every shape static for
    # JAX mode, whose reshapes need concrete sizes.
    sizes = filters.type.shape
    if None in sizes and hasattr(filters, "get_value"):
        sizes = filters.get_value(borrow=True).shape
    kernel_h, kernel_w = sizes[:2]
    if kernel_h is None or kernel_w is None:
        raise ValueError("`filters` must have a static kernel size: a shared variable, or "
                         "a tensor with a known shape.")
    if padding:
        # zeros + set_subtensor rather than pt.pad, which upcasts float32 to float64
        shape = images.shape
        padded = pt.zeros((shape[0], shape[1] + 2 * padding, shape[2] + 2 * padding, shape[3]),
                          dtype=images.dtype)
        images = pt.set_subtensor(padded[:, padding:-padding, padding:-padding, :], images)
    # (k_h, k_w, C, F), each size static where it is known
    filter_shape = [filters.shape[axis] if size is None else size
                    for axis, size in enumerate(sizes)]
    if method == "im2col":
        patches = extract_patches(images, (kernel_h, kernel_w), stride)
        matrix = filters.reshape((-1, filter_shape[3]))
        return pt.tensordot(patches, matrix, axes=[[3], [0]])
    height = (images.shape[1] - kernel_h) // stride + 1
    width = (images.shape[2] - kernel_w) // stride + 1
    slices = [
        images[:, u : u + stride * (height - 1) + 1 : stride,
               v : v + stride * (width - 1) + 1 : stride, :]
        for u in range(kernel_h) for v in range(kernel_w)
    ]
    taps = filters.reshape((kernel_h * kernel_w, *filter_shape[2:]))
    return pt.add(*[pt.tensordot(piece, taps[index], axes=[[3], [0]])
                    for index, piece in enumerate(slices)])


def max_pool2d(images: TensorVariable, size: int) -> TensorVariable:
    """Non-overlapping ``size x size`` max-pooling, channels last.

    .. math::

        y_{b,i,j,c} = \\max_{u, v < s} x_{b,\\, s i + u,\\, s j + v,\\, c}

    by reshaping ``(B, H, W, C)`` to ``(B, H/s, s, W/s, s, C)`` and taking the max over
    the two window axes; rows and columns beyond the last whole window are dropped
    (as ``floor`` pooling does).

    Returns
    -------
    TensorVariable
        ``(B, H // s, W // s, C)``.
    """
    if images.type.ndim != 4:
        raise ValueError(f"`images` must be (B, H, W, C), got {images.type.ndim} dimensions.")
    if size < 1:
        raise ValueError(f"`size` must be >= 1, got {size}.")
    height, width = images.shape[1] // size, images.shape[2] // size
    cropped = images[:, : height * size, : width * size, :]
    windows = cropped.reshape((images.shape[0], height, size, width, size, images.shape[3]))
    return pt.max(windows, axis=(2, 4))
