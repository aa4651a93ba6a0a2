"""Network builders returning ``(outputs, params)``.

``outputs`` are the pre-activation outputs of the last layer (logits), where the
Gauss-Newton split is made; ``params`` is the list of shared variables. Weights are
drawn from :math:`\\mathcal N(0, s^2 / n_{in})` with :math:`s^2 = 2` for relu (He) and 1
otherwise (LeCun), :math:`n_{in}` the fan-in (``k_h k_w C`` for a convolution); biases
start at zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.gradient import disconnected_grad
from pytensor.tensor.variable import TensorVariable

from sgn_theano.models.layers import conv2d, conv_output_size, max_pool2d

__all__ = ["ACTIVATIONS", "LENET5", "VGG_SMALL", "cnn", "lenet5", "mlp", "vgg_small"]


def _relu(x: TensorVariable) -> TensorVariable:
    # ``x * (x > 0)`` rather than ``maximum(x, 0)``: the latter's fused derivative is
    # slow in PyTensor's C backend (measured, see the docs: "Performance"). The mask is disconnected
    # from the gradient: differentiating the comparison gives a zero matrix in floatX
    # (float64), which the CG loop received as an input and added on every iteration.
    return x * disconnected_grad(x > 0)


def _tanh(x: TensorVariable) -> TensorVariable:
    # ``2 sigmoid(2x) - 1``, the same function: PyTensor's C ``tanh`` calls libm's
    # scalar ``tanhf``, several times slower than this on float32 arrays (docs,
    # "Performance"). Its derivative comes from the sigmoid's output, so it is finite
    # for any input.
    two = pt.constant(2, dtype=x.dtype)
    return two * pt.sigmoid(two * x) - pt.constant(1, dtype=x.dtype)


ACTIVATIONS = {"relu": _relu, "tanh": _tanh, "sigmoid": pt.sigmoid}


def mlp(
    inputs: TensorVariable,
    sizes: Sequence[int],
    *,
    activation: Literal["relu", "tanh", "sigmoid"] = "relu",
    seed: int = 0,
    dtype: str | None = None,
) -> tuple[TensorVariable, list]:
    """Fully connected network :math:`z = W_L h_{L-1} + b_L`, :math:`h_l = a(W_l h_{l-1} + b_l)`.

    Weights are drawn from :math:`\\mathcal N(0, s^2 / n_{in})` with :math:`s^2 = 2`
    for relu (He) and 1 otherwise (LeCun); biases start at zero.

    Parameters
    ----------
    inputs : TensorVariable
        Batch of inputs, shape ``(B, sizes[0])``.
    sizes : sequence of int
        Layer widths from input to output, e.g. ``(784, 256, 256, 10)``.
    activation : {"relu", "tanh", "sigmoid"}
        Hidden-layer nonlinearity.
    seed : int
        Seed of the initialisation.
    dtype : str, optional
        Parameter dtype; defaults to ``inputs.dtype``.

    Returns
    -------
    outputs : TensorVariable
        Logits, shape ``(B, sizes[-1])``.
    params : list of shared variables
        ``[W_1, b_1, ..., W_L, b_L]``, ``W_l`` of shape ``(sizes[l-1], sizes[l])``.
    """
    _check_activation(activation)
    if len(sizes) < 2 or any(int(size) < 1 for size in sizes):
        raise ValueError(f"`sizes` must list at least two positive widths, got {sizes!r}.")
    if inputs.type.ndim != 2:
        raise ValueError(f"`inputs` must be a matrix (B, {sizes[0]}), got "
                         f"{inputs.type.ndim} dimensions.")
    layers = [("dense", int(size)) for size in sizes[1:]]
    return _build(inputs, (int(sizes[0]),), layers, activation, seed, dtype or inputs.dtype)


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {sorted(ACTIVATIONS)}, got "
                         f"{activation!r}.")


def _build(inputs, shape, layers, activation, seed, dtype, conv_method="im2col"):
    """Stack ``layers`` on ``inputs`` of per-example ``shape``; see :func:`cnn`."""
    gain = 2.0 if activation == "relu" else 1.0
    rng = np.random.default_rng(seed)
    nonlinearity = ACTIVATIONS[activation]

    def weights(shape_, fan_in, name):
        values = rng.standard_normal(shape_) * np.sqrt(gain / fan_in)
        return pytensor.shared(values.astype(dtype), name=name)

    params, hidden = [], inputs
    for index, (kind, *arguments) in enumerate(layers, start=1):
        last = index == len(layers)
        if kind == "pool":
            (size,) = arguments
            hidden = max_pool2d(hidden, size)
            shape = (shape[0] // size, shape[1] // size, shape[2])
            continue
        if kind == "conv":
            filters, kernel, stride, padding = (*arguments, 1, 0)[:4]
            channels = shape[2]
            kernel_weights = weights((kernel, kernel, channels, filters),
                                     kernel * kernel * channels, f"K{index}")
            bias = pytensor.shared(np.zeros(filters, dtype=dtype), name=f"c{index}")
            hidden = conv2d(hidden, kernel_weights, stride=stride, padding=padding,
                            method=conv_method) + bias
            shape = (conv_output_size(shape[0], kernel, stride, padding),
                     conv_output_size(shape[1], kernel, stride, padding), filters)
            params += [kernel_weights, bias]
        else:
            (units,) = arguments
            if len(shape) > 1:
                hidden = hidden.reshape((hidden.shape[0], -1))
                shape = (int(np.prod(shape)),)
            dense_weights = weights((shape[0], units), shape[0], f"W{index}")
            bias = pytensor.shared(np.zeros(units, dtype=dtype), name=f"b{index}")
            hidden = hidden @ dense_weights + bias
            shape = (units,)
            params += [dense_weights, bias]
        if not last:
            hidden = nonlinearity(hidden)
    return hidden, params


Layer = tuple  # ("conv", filters, kernel[, stride[, padding]]) | ("pool", size) | ("dense", units)

#: LeNet-5 for 28x28x1 images: conv 6@5x5 (padded to 28x28), pool, conv 16@5x5, pool,
#: dense 120, 84, 10.
LENET5: tuple[Layer, ...] = (("conv", 6, 5, 1, 2), ("pool", 2), ("conv", 16, 5), ("pool", 2),
                             ("dense", 120), ("dense", 84), ("dense", 10))

#: A small VGG-style net for 32x32x3 images: 3x3 convs 32-64-64, each followed by 2x2
#: pooling, dense 64, 10.
VGG_SMALL: tuple[Layer, ...] = (("conv", 32, 3, 1, 1), ("pool", 2), ("conv", 64, 3, 1, 1),
                                ("pool", 2), ("conv", 64, 3, 1, 1), ("pool", 2),
                                ("dense", 64), ("dense", 10))


def cnn(
    inputs: TensorVariable,
    input_shape: Sequence[int],
    layers: Sequence[Layer],
    *,
    activation: Literal["relu", "tanh", "sigmoid"] = "relu",
    seed: int = 0,
    dtype: str | None = None,
    conv_method: Literal["im2col", "shifted"] = "im2col",
) -> tuple[TensorVariable, list]:
    """Convolutional network from a list of layers (:mod:`sgn_theano.models.layers`).

    Each ``("conv", F, k[, stride[, padding]])`` and each ``("dense", n)`` but the last
    is followed by the activation; ``("pool", s)`` is non-overlapping max-pooling; the
    feature map is flattened (channels last) before the first dense layer.

    Parameters
    ----------
    inputs : TensorVariable
        ``(B, H, W, C)`` images, or ``(B, H W C)`` rows (as the readers of
        :mod:`sgn_theano.data` return them), reshaped to ``(B, H, W, C)``.
    input_shape : (H, W, C)
        Shape of one image.
    layers : sequence of tuples
        The layers, the last one ``("dense", n_outputs)``; see :data:`LENET5`.
    activation : {"relu", "tanh", "sigmoid"}
    seed : int
        Seed of the initialisation.
    dtype : str, optional
        Parameter dtype; defaults to ``inputs.dtype``.
    conv_method : {"im2col", "shifted"}
        See :func:`sgn_theano.models.layers.conv2d`.

    Returns
    -------
    outputs : TensorVariable
        Logits ``(B, n_outputs)``.
    params : list of shared variables
        Per layer: a conv ``K_i`` ``(k, k, C_in, F)`` and bias ``c_i`` ``(F,)``; a dense
        ``W_i`` ``(n_in, n)`` and ``b_i`` ``(n,)``.
    """
    _check_activation(activation)
    if len(input_shape) != 3 or any(int(size) < 1 for size in input_shape):
        raise ValueError(f"`input_shape` must be (H, W, C), got {input_shape!r}.")
    if not layers or layers[-1][0] != "dense":
        raise ValueError("`layers` must end with a ('dense', n_outputs) layer.")
    shape = tuple(int(size) for size in input_shape)
    lengths = {"conv": (3, 4, 5), "pool": (2,), "dense": (2,)}
    for layer in layers:
        if len(layer) not in lengths.get(layer[0], ()) or not all(
                isinstance(value, int) and value >= (0 if i == 4 else 1)  # padding may be 0
                for i, value in enumerate(layer[1:], start=1)):
            raise ValueError(f"Bad layer {layer!r}: use ('conv', filters, kernel[, stride[, "
                             "padding]]), ('pool', size) or ('dense', units).")
    if inputs.type.ndim == 2:
        inputs = inputs.reshape((inputs.shape[0], *shape))
    elif inputs.type.ndim != 4:
        raise ValueError(f"`inputs` must be (B, H, W, C) or (B, H*W*C), got "
                         f"{inputs.type.ndim} dimensions.")
    return _build(inputs, shape, layers, activation, seed, dtype or inputs.dtype, conv_method)


def lenet5(inputs: TensorVariable, **options) -> tuple[TensorVariable, list]:
    """:func:`cnn` with :data:`LENET5` on 28x28x1 images (MNIST, Fashion-MNIST)."""
    return cnn(inputs, (28, 28, 1), LENET5, **options)


def vgg_small(inputs: TensorVariable, **options) -> tuple[TensorVariable, list]:
    """:func:`cnn` with :data:`VGG_SMALL` on 32x32x3 images (CIFAR-10)."""
    return cnn(inputs, (32, 32, 3), VGG_SMALL, **options)
