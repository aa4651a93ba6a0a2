"""Network builders returning ``(outputs, params)``.

``outputs`` are the pre-activation outputs of the last layer (logits), where the
Gauss-Newton split is made; ``params`` is the list of shared variables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.variable import TensorVariable

__all__ = ["ACTIVATIONS", "mlp"]


def _relu(x: TensorVariable) -> TensorVariable:
    # ``x * (x > 0)`` rather than ``maximum(x, 0)``: the latter's fused derivative is
    # slow in PyTensor's C backend (measured, see the README).
    return x * (x > 0)


ACTIVATIONS = {"relu": _relu, "tanh": pt.tanh, "sigmoid": pt.sigmoid}


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
    if activation not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {sorted(ACTIVATIONS)}, got "
                         f"{activation!r}.")
    if len(sizes) < 2 or any(int(size) < 1 for size in sizes):
        raise ValueError(f"`sizes` must list at least two positive widths, got {sizes!r}.")
    if inputs.type.ndim != 2:
        raise ValueError(f"`inputs` must be a matrix (B, {sizes[0]}), got "
                         f"{inputs.type.ndim} dimensions.")
    dtype = dtype or inputs.dtype
    gain = 2.0 if activation == "relu" else 1.0
    rng = np.random.default_rng(seed)
    nonlinearity = ACTIVATIONS[activation]
    params, hidden = [], inputs
    layers = list(zip(sizes[:-1], sizes[1:]))
    for index, (fan_in, fan_out) in enumerate(layers, start=1):
        weights = pytensor.shared(
            (rng.standard_normal((fan_in, fan_out)) * np.sqrt(gain / fan_in)).astype(dtype),
            name=f"W{index}")
        bias = pytensor.shared(np.zeros(fan_out, dtype=dtype), name=f"b{index}")
        params += [weights, bias]
        hidden = hidden @ weights + bias
        if index < len(layers):
            hidden = nonlinearity(hidden)
    return hidden, params
