"""Helpers of the tests: tiny problems with dense reference matrices, and checks.

Correctness tests compile in ``FAST_COMPILE`` (Python linker: no C compilation, so a
fresh CI machine is not slowed by compiler calls; :class:`sgn_theano.SGN` compiles its
loops in its mode too); ``test_modes.py`` runs the same checks through the optimized C,
NUMBA and JAX backends. (``conftest.py`` has set the compile directory before this
module imports PyTensor.)
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import jacobian

from sgn_theano import losses
from sgn_theano.compilation.modes import compile_mode
from sgn_theano.models import mlp

#: PyTensor's Python linker (no C code compiled) with softmax inlined: a graph softmax
#: would otherwise be JIT-compiled by NUMBA, PyTensor's default, on its first call.
TEST_MODE = compile_mode("FAST_COMPILE")
#: For the tests that need JAX mode.
NEEDS_JAX = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                               reason="jax is not installed")
#: The optimized backends, for the tests that run a check through each of them.
BACKENDS = ["C", "NUMBA", pytest.param("JAX", marks=NEEDS_JAX)]
LOSSES = ("softmax_cross_entropy", "squared_error", "binary_cross_entropy")
TOLERANCE = {"float64": 1e-8, "float32": 2e-4}


def make_batch(loss_name: str, dtype: str, batch: int = 5, features: int = 3,
               classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, features)).astype(dtype)
    if loss_name == "softmax_cross_entropy":
        y = rng.integers(0, classes, batch).astype(np.int32)
    elif loss_name == "squared_error":
        y = rng.standard_normal((batch, classes)).astype(dtype)
    else:
        y = rng.random((batch, classes)).astype(dtype)
    return x, y


def build_problem(loss_name: str, activation: str, dtype: str, sizes=(3, 4, 3), seed: int = 0):
    """A small MLP, its loss, and the symbolic inputs ``[x, y]``."""
    x = pt.matrix("x", dtype=dtype)
    y = pt.ivector("y") if loss_name == "softmax_cross_entropy" else pt.matrix("y", dtype=dtype)
    outputs, params = mlp(x, sizes, activation=activation, seed=seed, dtype=dtype)
    loss = getattr(losses, loss_name)(outputs, y)
    return loss, outputs, params, [x, y]


def dense_gauss_newton(loss, outputs, params, inputs):
    """Compile ``(x, y) -> (G, g)`` with ``G = J^T H_L J`` built from dense Jacobians."""
    flat_outputs = outputs.flatten()
    # vectorize: one batched backward pass, not a scan (whose body would compile in C)
    jacobians = [jacobian(flat_outputs, p, vectorize=True).reshape((flat_outputs.shape[0], -1))
                 for p in params]
    full_jacobian = pt.concatenate(jacobians, axis=1)
    output_gradient = pytensor.grad(loss, outputs).flatten()
    hessian = jacobian(output_gradient, outputs, vectorize=True).reshape(
        (flat_outputs.shape[0], flat_outputs.shape[0]))
    gradient = pt.concatenate([g.flatten() for g in pytensor.grad(loss, params)])
    matrix = full_jacobian.T @ hessian @ full_jacobian
    return pytensor.function(inputs, [matrix, gradient], mode=TEST_MODE, on_unused_input="ignore")


def assert_resumes_exactly(optimizer, batches, split: int = 3) -> dict:
    """Step ``optimizer`` through ``batches``, then again from its ``state_dict`` after
    the first ``split``: every state array must come out with the same bytes. Returns
    the final state dict."""
    for batch in batches[:split]:
        optimizer.step(*batch)
    saved = optimizer.state_dict()
    for batch in batches[split:]:
        optimizer.step(*batch)
    uninterrupted = optimizer.state_dict()
    optimizer.load_state_dict(saved)
    assert optimizer.step_count == split
    for batch in batches[split:]:
        optimizer.step(*batch)
    resumed = optimizer.state_dict()
    assert set(resumed["state"]) == set(uninterrupted["state"])
    for role, arrays in uninterrupted["state"].items():
        assert len(resumed["state"][role]) == len(arrays), role
        for a, b in zip(arrays, resumed["state"][role], strict=True):
            assert a.tobytes() == b.tobytes(), role
    return resumed


def evaluated(variables) -> list:
    """The values of symbolic ``variables`` that take no input, computed in TEST_MODE."""
    return pytensor.function([], list(variables), mode=TEST_MODE)()


def flatten(arrays) -> np.ndarray:
    return np.concatenate([np.ravel(a) for a in arrays])


def unflatten(vector: np.ndarray, params) -> list[np.ndarray]:
    blocks, start = [], 0
    for p in params:
        value = p.get_value()
        blocks.append(vector[start : start + value.size].reshape(value.shape).astype(value.dtype))
        start += value.size
    return blocks


def count_device_reads(optimizer, monkeypatch) -> tuple[list, list]:
    """Count where a JAX-mode :class:`~sgn_theano.SGN` reads values back from the device:
    each device array its compiled step or K-FAC refresh returns (``"output"``,
    ``"refresh output"``), and each ``get_value`` of a shared variable (its name). JAX on
    the CPU shares host memory, so the reads are counted where they would happen on a
    GPU. Returns ``(reads, refreshes)``, lists the steps append to."""
    import jax

    reads, refreshes = [], []
    get_value = pytensor.compile.sharedvalue.SharedVariable.get_value
    monkeypatch.setattr(pytensor.compile.sharedvalue.SharedVariable, "get_value",
                        lambda self, *a, **k: reads.append(self.name) or get_value(self, *a, **k))
    compiled, refresh = optimizer._step, optimizer.inverse_refresh

    def counted(*arguments):
        returned = compiled(*arguments)
        reads.extend(["output"] * sum(isinstance(value, jax.Array) for value in (
            returned if isinstance(returned, (list, tuple)) else [returned])))
        return returned

    def counted_refresh():
        returned = refresh()
        refreshes.append(returned)
        reads.extend(["refresh output"] * len(returned))

    optimizer._step = counted
    if refresh is not None:
        optimizer.inverse_refresh = counted_refresh
    return reads, refreshes
