"""Image patches (im2col) and their adjoint as PyTensor ops of their own.

A convolution is a matrix product of the patches of its input with the filters
(:func:`sgn_theano.models.layers.conv2d`). Built from ``k_h k_w`` strided slices, the patches
and their three derivatives (the gradient, and the two products of a Gauss-Newton
``G v``) made graphs of hundreds of slicing nodes per convolution, which PyTensor took
tens of seconds to rewrite. Here they are two nodes:

* :class:`ExtractPatches`, :math:`P = E(x)`: ``(B, H, W, C) -> (B, H', W', k_h k_w C)``,
  with :math:`P_{b,i,j,(u,v,c)} = x_{b,\\, s i + u,\\, s j + v,\\, c}`;
* :class:`FoldPatches`, its adjoint :math:`E^\\top`: each patch entry added back where
  it came from (a scatter-add).

Both are linear, so the pullback of each is the other, and the double pullback that
PyTensor's ``pushforward`` builds is one of them too. Each has three implementations:

* C code for the C backend: in channels-last images the ``k_w C`` numbers of one kernel
  row of a patch are contiguous, so extracting is one ``memcpy`` per patch and kernel
  row, and folding the matching loop of additions;
* compiled loops for NUMBA (:func:`register_numba`);
* JAX versions for JAX mode (:func:`register_jax`);

and ``perform`` (numpy: one strided view and one copy; ``k_h k_w`` strided additions)
for PyTensor's Python linker. The NUMBA and JAX versions are registered with
:func:`sgn_theano.compilation.modes.register_backend_preparer`, which calls them when
the library prepares that backend (importing this module imports neither).
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from numpy.lib.stride_tricks import sliding_window_view
from pytensor.gradient import disconnected_type
from pytensor.graph.basic import Apply
from pytensor.link.c.op import COp
from pytensor.tensor.exceptions import NotScalarConstantError
from pytensor.tensor.variable import TensorVariable

from sgn_theano.compat import differentiated_by_pullback
from sgn_theano.compilation.modes import register_backend_preparer

__all__ = ["ExtractPatches", "FoldPatches", "extract_patches", "register_jax", "register_numba"]


def _patch_count(size, kernel: int, stride: int):
    """Patches along one axis, :math:`\\lfloor (n - k) / s \\rfloor + 1`, for a static
    or a symbolic size (``None``, an unknown static size, stays ``None``)."""
    return None if size is None else (size - kernel) // stride + 1


class _PatchOp(COp):
    __props__ = ("kernel_h", "kernel_w", "stride")

    def __init__(self, kernel_h: int, kernel_w: int, stride: int):
        self.kernel_h, self.kernel_w, self.stride = int(kernel_h), int(kernel_w), int(stride)

    def _window_slices(self, height: int, width: int):
        """For each offset ``(u, v)``, the slices of the input that its patches read."""
        s = self.stride
        return [(u, v, slice(u, u + s * (height - 1) + 1, s), slice(v, v + s * (width - 1) + 1, s))
                for u in range(self.kernel_h) for v in range(self.kernel_w)]

    def c_headers(self, **kwargs):
        return ["<string.h>"]

    def c_code_cache_version(self):
        return (3,)

    def _c_code(self, body: str, source: str, output: str, **names) -> str:
        """``body`` with ``names`` filled in (``%(name)s``), ``%(open)s`` by
        :data:`_OPEN_C` for the input array ``source`` and ``%(allocate)s`` by
        :data:`_ALLOCATE_C` for the array ``output``."""
        constants = {"fail": names["fail"], "kernel_h": self.kernel_h,
                     "kernel_w": self.kernel_w, "stride": self.stride}
        return body % dict(names, **constants,
                           open=_OPEN_C % dict(constants, input=source),
                           allocate=_ALLOCATE_C % dict(constants, output=output))


@differentiated_by_pullback
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

    def c_code(self, node, name, inputs, outputs, sub):
        return self._c_code(_EXTRACT_C, inputs[0], outputs[0], images=inputs[0],
                            patches=outputs[0], fail=sub["fail"])

    def pullback(self, inputs, outputs, cotangents):
        (images,) = inputs
        fold = FoldPatches(self.kernel_h, self.kernel_w, self.stride)
        return [fold(cotangents[0], images.shape[1], images.shape[2])]


@differentiated_by_pullback
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

    def c_code(self, node, name, inputs, outputs, sub):
        patches, height, width = inputs
        return self._c_code(_FOLD_C, patches, outputs[0], patches=patches, height=height,
                            width=width, images=outputs[0], fail=sub["fail"])

    def connection_pattern(self, node):
        return [[True], [False], [False]]

    def pullback(self, inputs, outputs, cotangents):
        extract = ExtractPatches(self.kernel_h, self.kernel_w, self.stride)
        return [extract(cotangents[0]), disconnected_type(), disconnected_type()]


#: C code of both ops: ``source``, the input array made contiguous (released by each
#: op's code), its shape ``dims``, and the kernel's constants.
_OPEN_C = """
    PyArrayObject* source = PyArray_GETCONTIGUOUS(%(input)s);
    if (source == NULL) %(fail)s
    const npy_intp* dims = PyArray_DIMS(source);
    const npy_intp kernel_h = %(kernel_h)s, kernel_w = %(kernel_w)s, stride = %(stride)s;"""

#: C code of both ops: ``output`` reused when it has the shape ``shape`` (of a C array in
#: scope) and the dtype of ``source``, else allocated.
_ALLOCATE_C = """
    if (%(output)s == NULL || PyArray_TYPE(%(output)s) != PyArray_TYPE(source)
            || !PyArray_CHKFLAGS(%(output)s, NPY_ARRAY_C_CONTIGUOUS)
            || !PyArray_CompareLists(PyArray_DIMS(%(output)s), shape, 4)) {
        Py_XDECREF(%(output)s);
        %(output)s = (PyArrayObject*) PyArray_EMPTY(4, shape, PyArray_TYPE(source), 0);
        if (%(output)s == NULL) { Py_DECREF(source); %(fail)s }
    }"""

#: C body of :class:`ExtractPatches`: one ``memcpy`` of ``k_w C`` numbers per patch and
#: kernel row (contiguous in channels-last images); the output is reused when its shape
#: is unchanged.
_EXTRACT_C = """
{
%(open)s
    const npy_intp batch = dims[0], height = dims[1], width = dims[2], channels = dims[3];
    if (height < kernel_h || width < kernel_w) {
        PyErr_Format(PyExc_ValueError, "ExtractPatches: a %(kernel_h)sx%(kernel_w)s kernel "
                     "does not fit in %%ldx%%ld images", (long) height, (long) width);
        Py_DECREF(source);
        %(fail)s
    }
    npy_intp shape[4] = {batch, (height - kernel_h) / stride + 1,
                         (width - kernel_w) / stride + 1, kernel_h * kernel_w * channels};
%(allocate)s
    const npy_intp item = PyArray_ITEMSIZE(source);
    const size_t run = (size_t) (kernel_w * channels * item);
    const char* from = PyArray_BYTES(source);
    char* to = PyArray_BYTES(%(patches)s);
    for (npy_intp b = 0; b < batch; ++b)
        for (npy_intp i = 0; i < shape[1]; ++i)
            for (npy_intp j = 0; j < shape[2]; ++j)
                for (npy_intp u = 0; u < kernel_h; ++u, to += run)
                    memcpy(to, from + ((b * height + i * stride + u) * width + j * stride)
                                      * channels * item, run);
    Py_DECREF(source);
}
"""

#: C body of :class:`FoldPatches`: the output zeroed, then each kernel row of each patch
#: added where :data:`_EXTRACT_C` read it.
_FOLD_C = """
{
%(open)s
    const npy_intp batch = dims[0], rows = dims[1], columns = dims[2], size = dims[3];
    const npy_intp channels = size / (kernel_h * kernel_w);
    const npy_intp height = (npy_intp) ((npy_int64*) PyArray_DATA(%(height)s))[0];
    const npy_intp width = (npy_intp) ((npy_int64*) PyArray_DATA(%(width)s))[0];
    if (channels * kernel_h * kernel_w != size || (rows > 0 && (rows - 1) * stride + kernel_h > height)
            || (columns > 0 && (columns - 1) * stride + kernel_w > width)) {
        PyErr_Format(PyExc_ValueError, "FoldPatches: %%ldx%%ld patches of %%ld numbers do "
                     "not come from %%ldx%%ld images with a %(kernel_h)sx%(kernel_w)s kernel "
                     "and stride %(stride)s", (long) rows, (long) columns, (long) size,
                     (long) height, (long) width);
        Py_DECREF(source);
        %(fail)s
    }
    npy_intp shape[4] = {batch, height, width, channels};
%(allocate)s
    memset(PyArray_DATA(%(images)s), 0, PyArray_NBYTES(%(images)s));
    const npy_intp run = kernel_w * channels;
    const dtype_%(patches)s* from = (const dtype_%(patches)s*) PyArray_DATA(source);
    dtype_%(images)s* to = (dtype_%(images)s*) PyArray_DATA(%(images)s);
    for (npy_intp b = 0; b < batch; ++b)
        for (npy_intp i = 0; i < rows; ++i)
            for (npy_intp j = 0; j < columns; ++j)
                for (npy_intp u = 0; u < kernel_h; ++u, from += run) {
                    dtype_%(images)s* target =
                        to + ((b * height + i * stride + u) * width + j * stride) * channels;
                    for (npy_intp t = 0; t < run; ++t) target[t] += from[t];
                }
    Py_DECREF(source);
}
"""


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


_NUMBA_REGISTERED = False


def _numba_window_loop(op, fold: bool):
    """The NUMBA loops of both ops: each patch's ``C`` numbers of one offset ``(u, v)``
    copied from the images (extract) or added back into them (``fold``)."""
    from pytensor.link.numba.dispatch import basic as numba_basic

    kernel_h, kernel_w, stride = op.kernel_h, op.kernel_w, op.stride

    @numba_basic.numba_njit
    def loop(images, patches):
        batch, rows, columns, _ = patches.shape
        channels = images.shape[3]
        for b in range(batch):
            for i in range(rows):
                for j in range(columns):
                    for u in range(kernel_h):
                        for v in range(kernel_w):
                            start = (u * kernel_w + v) * channels
                            window = patches[b, i, j, start : start + channels]
                            if fold:
                                images[b, i * stride + u, j * stride + v, :] += window
                            else:
                                window[:] = images[b, i * stride + u, j * stride + v, :]
    return loop


def register_numba() -> None:
    """Give PyTensor's NUMBA backend compiled loops for these ops (idempotent; imports
    numba): the loops of the C code (a kernel row of a patch at a time), instead of
    ``perform`` run in numba's object mode."""
    global _NUMBA_REGISTERED
    if _NUMBA_REGISTERED:
        return
    from pytensor.link.numba.dispatch import basic as numba_basic

    @numba_basic.register_funcify_default_op_cache_key(ExtractPatches)
    def _extract_in_numba(op, node=None, **kwargs):
        kernel_h, kernel_w, stride = op.kernel_h, op.kernel_w, op.stride
        copy_windows = _numba_window_loop(op, fold=False)

        @numba_basic.numba_njit
        def extract(images):
            batch, height, width, channels = images.shape
            if height < kernel_h or width < kernel_w:
                raise ValueError("ExtractPatches: the kernel does not fit in the images")
            rows, columns = (height - kernel_h) // stride + 1, (width - kernel_w) // stride + 1
            patches = np.empty((batch, rows, columns, kernel_h * kernel_w * channels),
                               dtype=images.dtype)
            copy_windows(images, patches)
            return patches
        return extract

    @numba_basic.register_funcify_default_op_cache_key(FoldPatches)
    def _fold_in_numba(op, node=None, **kwargs):
        kernel_h, kernel_w, stride = op.kernel_h, op.kernel_w, op.stride
        add_windows = _numba_window_loop(op, fold=True)

        @numba_basic.numba_njit
        def fold(patches, height, width):
            batch, rows, columns, size = patches.shape
            channels = size // (kernel_h * kernel_w)
            height, width = height.item(), width.item()
            if (channels * kernel_h * kernel_w != size
                    or (rows > 0 and (rows - 1) * stride + kernel_h > height)
                    or (columns > 0 and (columns - 1) * stride + kernel_w > width)):
                raise ValueError("FoldPatches: the patches do not come from images of "
                                 "this size")
            images = np.zeros((batch, height, width, channels), dtype=patches.dtype)
            add_windows(images, patches)
            return images
        return fold

    _NUMBA_REGISTERED = True


_JAX_REGISTERED = False


def register_jax() -> None:
    """Give PyTensor's JAX backend these ops (idempotent; imports JAX).

    :class:`ExtractPatches` becomes the ``k_h k_w`` strided slices of the images, one
    per kernel position, joined along the features (position slowest, channels
    fastest): data movement only, which XLA fuses into one copy. (XLA's
    ``conv_general_dilated_patches``, a convolution with one-hot filters, does
    ``k_h k_w C`` multiply-adds per patch feature: LeNet-5's gradient took 574 ms at
    batch 1000 on 2 CPU cores with it, 3.7 times the C mode's.) :class:`FoldPatches` is
    its transpose (``jax.linear_transpose``: the slices added back in place). JAX needs
    static shapes: ``FoldPatches`` takes ``H`` and ``W`` from its output type.
    """
    global _JAX_REGISTERED
    if _JAX_REGISTERED:
        return
    import jax
    from pytensor.link.jax.dispatch import jax_funcify

    def extract_with(op):
        kernel_h, kernel_w, stride = op.kernel_h, op.kernel_w, op.stride

        def extract(images):
            rows = (images.shape[1] - kernel_h) // stride + 1
            columns = (images.shape[2] - kernel_w) // stride + 1
            return jax.numpy.concatenate(
                [images[:, u:u + (rows - 1) * stride + 1:stride,
                        v:v + (columns - 1) * stride + 1:stride, :]
                 for u in range(kernel_h) for v in range(kernel_w)], axis=3)
        return extract

    @jax_funcify.register(ExtractPatches)
    def _extract_in_jax(op, node=None, **kwargs):
        return extract_with(op)

    @jax_funcify.register(FoldPatches)
    def _fold_in_jax(op, node=None, **kwargs):
        _, height, width, _ = node.outputs[0].type.shape
        if height is None or width is None:
            raise NotImplementedError("JAX mode needs the image size of a convolution to be "
                                      "static: give the input images a fixed shape.")
        extract = extract_with(op)

        def fold(patches, *_sizes):
            images = jax.ShapeDtypeStruct(
                (patches.shape[0], height, width,
                 patches.shape[3] // (op.kernel_h * op.kernel_w)), patches.dtype)
            (folded,) = jax.linear_transpose(extract, images)(patches)
            return folded
        return fold

    _JAX_REGISTERED = True


register_backend_preparer("NUMBA", register_numba)
register_backend_preparer("JAX", register_jax)
