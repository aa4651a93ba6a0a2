"""Image patches (im2col) and their adjoint as PyTensor ops of their own.

A convolution is a matrix product of the patches of its input with the filters
(:func:`sgn_theano.layers.conv2d`). Built from ``k_h k_w`` strided slices, the patches
and their three derivatives (the gradient, and the two products of a Gauss-Newton
``G v``) made graphs of hundreds of slicing nodes per convolution, which PyTensor took
tens of seconds to rewrite. Here they are two nodes:

* :class:`ExtractPatches`, :math:`P = E(x)`: ``(B, H, W, C) -> (B, H', W', k_h k_w C)``,
  with :math:`P_{b,i,j,(u,v,c)} = x_{b,\\, s i + u,\\, s j + v,\\, c}`;
* :class:`FoldPatches`, its adjoint :math:`E^\\top`: each patch entry added back where
  it came from (a scatter-add).

Both are linear, so the pullback of each is the other, and the double pullback that
PyTensor's ``pushforward`` builds is one of them too. ``perform`` uses numpy (one
strided view and one copy; ``k_h k_w`` strided additions), which the C backend calls
and NUMBA runs in object mode; :func:`register_jax` gives JAX mode XLA's versions.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from numpy.lib.stride_tricks import sliding_window_view
from pytensor.gradient import disconnected_type
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.tensor.exceptions import NotScalarConstantError
from pytensor.tensor.variable import TensorVariable

__all__ = ["ExtractPatches", "FoldPatches", "extract_patches", "register_jax"]


def _patch_count(size, kernel: int, stride: int):
    """Patches along one axis, :math:`\\lfloor (n - k) / s \\rfloor + 1`, for a static
    or a symbolic size (``None``, an unknown static size, stays ``None``)."""
    return None if size is None else (size - kernel) // stride + 1


class _PatchOp(Op):
    __props__ = ("kernel_h", "kernel_w", "stride")

    def __init__(self, kernel_h: int, kernel_w: int, stride: int):
        self.kernel_h, self.kernel_w, self.stride = int(kernel_h), int(kernel_w), int(stride)

    def _window_slices(self, height: int, width: int):
        """For each offset ``(u, v)``, the slices of the input that its patches read."""
        s = self.stride
        return [(u, v, slice(u, u + s * (height - 1) + 1, s), slice(v, v + s * (width - 1) + 1, s))
                for u in range(self.kernel_h) for v in range(self.kernel_w)]


class ExtractPatches(_PatchOp):
    """``images (B, H, W, C) -> patches (B, H', W', k_h k_w C)``, channels fastest."""

    def make_node(self, images):
        images = pt.as_tensor_variable(images)
        if images.type.ndim != 4:
            raise ValueError(f"`images` must be (B, H, W, C), got {images.type.ndim} dims.")
        batch, height, width, channels = images.type.shape
        shape = (batch, _patch_count(height, self.kernel_h, self.stride),
                 _patch_count(width, self.kernel_w, self.stride),
                 None if channels is None else channels * self.kernel_h * self.kernel_w)
        return Apply(self, [images], [pt.tensor(dtype=images.dtype, shape=shape)])

    def perform(self, node, inputs, output_storage):
        (images,) = inputs
        windows = sliding_window_view(images, (self.kernel_h, self.kernel_w), axis=(1, 2))
        windows = windows[:, :: self.stride, :: self.stride]  # (B, H', W', C, k_h, k_w)
        batch, height, width = windows.shape[:3]
        output_storage[0][0] = np.ascontiguousarray(
            windows.transpose(0, 1, 2, 4, 5, 3)).reshape(batch, height, width, -1)

    def infer_shape(self, fgraph, node, shapes):
        batch, height, width, channels = shapes[0]
        return [(batch, _patch_count(height, self.kernel_h, self.stride),
                 _patch_count(width, self.kernel_w, self.stride),
                 channels * (self.kernel_h * self.kernel_w))]

    def pullback(self, inputs, outputs, cotangents):
        (images,) = inputs
        fold = FoldPatches(self.kernel_h, self.kernel_w, self.stride)
        return [fold(cotangents[0], images.shape[1], images.shape[2])]


class FoldPatches(_PatchOp):
    """The adjoint of :class:`ExtractPatches`: ``patches (B, H', W', k_h k_w C)`` and the
    image size ``H, W`` -> ``(B, H, W, C)``, each patch entry added where it was read."""

    def make_node(self, patches, height, width):
        patches = pt.as_tensor_variable(patches)
        height, width = (pt.as_tensor_variable(size, dtype="int64") for size in (height, width))
        if patches.type.ndim != 4:
            raise ValueError(f"`patches` must be (B, H', W', k_h k_w C), got "
                             f"{patches.type.ndim} dims.")
        channels = patches.type.shape[3]
        shape = (patches.type.shape[0], _static(height), _static(width),
                 None if channels is None else channels // (self.kernel_h * self.kernel_w))
        return Apply(self, [patches, height, width],
                     [pt.tensor(dtype=patches.dtype, shape=shape)])

    def perform(self, node, inputs, output_storage):
        patches, height, width = inputs
        batch, rows, columns, size = patches.shape
        channels = size // (self.kernel_h * self.kernel_w)
        windows = patches.reshape(batch, rows, columns, self.kernel_h, self.kernel_w, channels)
        images = np.zeros((batch, int(height), int(width), channels), dtype=patches.dtype)
        for u, v, along_h, along_w in self._window_slices(rows, columns):
            images[:, along_h, along_w, :] += windows[:, :, :, u, v, :]
        output_storage[0][0] = images

    def infer_shape(self, fgraph, node, shapes):
        batch, _, _, size = shapes[0]
        _, height, width = node.inputs
        return [(batch, height, width, size // (self.kernel_h * self.kernel_w))]

    def connection_pattern(self, node):
        return [[True], [False], [False]]

    def pullback(self, inputs, outputs, cotangents):
        extract = ExtractPatches(self.kernel_h, self.kernel_w, self.stride)
        return [extract(cotangents[0]), disconnected_type(), disconnected_type()]


def _static(size: TensorVariable):
    """The value of a constant size, else ``None``."""
    try:
        return int(pt.get_underlying_scalar_constant_value(size))
    except NotScalarConstantError:
        return None


def extract_patches(images: TensorVariable, kernel: tuple[int, int], stride: int = 1):
    """The ``k_h x k_w`` patches of ``images`` every ``stride`` pixels (see
    :class:`ExtractPatches`): ``(B, H, W, C) -> (B, H', W', k_h k_w C)`` with
    :math:`H' = \\lfloor (H - k_h) / s \\rfloor + 1`, likewise :math:`W'`."""
    return ExtractPatches(kernel[0], kernel[1], stride)(images)


_JAX_REGISTERED = False


def register_jax() -> None:
    """Give PyTensor's JAX backend these ops (idempotent; imports JAX).

    :class:`ExtractPatches` becomes the same strided slices concatenated, and
    :class:`FoldPatches` the matching scatter-adds, which XLA fuses. JAX needs static
    shapes: ``FoldPatches`` takes ``H`` and ``W`` from its output type.
    """
    global _JAX_REGISTERED
    if _JAX_REGISTERED:
        return
    import jax.numpy as jnp
    from pytensor.link.jax.dispatch import jax_funcify

    @jax_funcify.register(ExtractPatches)
    def _extract_in_jax(op, node=None, **kwargs):
        def extract(images):
            rows = (images.shape[1] - op.kernel_h) // op.stride + 1
            columns = (images.shape[2] - op.kernel_w) // op.stride + 1
            return jnp.concatenate([images[:, along_h, along_w, :] for _, _, along_h, along_w
                                    in op._window_slices(rows, columns)], axis=3)
        return extract

    @jax_funcify.register(FoldPatches)
    def _fold_in_jax(op, node=None, **kwargs):
        _, height, width, _ = node.outputs[0].type.shape
        if height is None or width is None:
            raise NotImplementedError("JAX mode needs the image size of a convolution to be "
                                      "static: give the input images a fixed shape.")

        def fold(patches, *_sizes):
            batch, rows, columns, size = patches.shape
            channels = size // (op.kernel_h * op.kernel_w)
            windows = patches.reshape(batch, rows, columns, op.kernel_h, op.kernel_w, channels)
            images = jnp.zeros((batch, height, width, channels), dtype=patches.dtype)
            for u, v, along_h, along_w in op._window_slices(rows, columns):
                images = images.at[:, along_h, along_w, :].add(windows[:, :, :, u, v, :])
            return images
        return fold

    _JAX_REGISTERED = True
