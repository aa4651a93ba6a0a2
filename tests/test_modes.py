"""The SGN step through PyTensor's optimized backends: C (linked to OpenBLAS) and NUMBA,
and JAX where it is installed. Each compiles a real rewritten graph."""

import importlib.util

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from test_optimizer import DAMPING, exact_direction

from helpers import NEEDS_JAX, count_device_reads, flatten, unflatten
from sgn_theano import SGN, softmax_cross_entropy
from sgn_theano.models import mlp
from sgn_theano.compilation.modes import compile_mode


@pytest.mark.parametrize("mode_name", [
    "C", pytest.param("NUMBA", marks=pytest.mark.slow),  # NUMBA's JIT of a step: minutes
    pytest.param("JAX", marks=NEEDS_JAX)])
def test_exact_step_in_each_backend(mode_name):
    # Plain CG in a loop (60 iterations: a scan, or JAX's while loop) against the dense
    # solve. (With K-FAC inside a looped CG, PyTensor 2.38's JAX backend cannot trace the
    # loop's buffers: docs, "Compile modes"; the default, one PCG iteration, is unrolled.)
    (loss, outputs, params, inputs), batch, direction = exact_direction()
    before = flatten(p.get_value() for p in params)
    optimizer = SGN(loss, params, outputs, inputs, max_cg_iters=60, cg_tol=0.0,
                    curvature_fraction=1.0, damping=DAMPING, trust_region=False, line_search=False,
                    preconditioner=None, model_momentum=False, mode=compile_mode(mode_name))
    assert optimizer.step(*batch).accepted
    np.testing.assert_allclose(flatten(p.get_value() for p in params) - before, direction,
                               rtol=1e-7, atol=1e-10)
    # The full method, with a curvature mini-batch of 3 of the 5 rows: the first step's
    # momentum average is the gradient, so the direction is the exact sub-batch one.
    for p, value in zip(params, unflatten(before, params)):
        p.set_value(value)
    sub_batch_direction = exact_direction(rows=3)[2]
    optimizer = SGN(loss, params, outputs, inputs, momentum=0.5, curvature_fraction=0.6,
                    max_cg_iters=60, cg_tol=0.0, damping=DAMPING, preconditioner=None,
                    model_momentum=False, mode=compile_mode(mode_name))
    info = optimizer.step(*batch)
    assert info.accepted and np.isfinite(info.ratio) and info.loss_after < info.loss
    np.testing.assert_allclose(flatten(p.get_value() for p in params) - before,
                               info.step_size * sub_batch_direction, rtol=1e-7, atol=1e-10)
    # An error raised inside the compiled step (a label out of range) must leave every
    # state array byte-identical, even where the backend updates shared memory in place.
    if mode_name == "JAX":
        return  # PyTensor's JAX backend drops runtime assertions (see docs/modes.md)
    before = [a.tobytes() for role in optimizer.state_dict()["state"].values() for a in role]
    x, y = batch
    with pytest.raises(ValueError, match="A label is out of range"):
        optimizer.step(x, np.full_like(y, 2))
    after = [a.tobytes() for role in optimizer.state_dict()["state"].values() for a in role]
    assert after == before


def test_unknown_mode_name():
    with pytest.raises(ValueError, match="Unknown mode 'GPU'"):
        compile_mode("GPU")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_mode_in_float32_with_a_batch_over_127_rows():
    # Two PyTensor JAX-backend traps: int8 bounds handed to jnp.arange (the loss's row
    # index) overflowed for batches of 128 rows and more; and float32 sums came back in
    # float64, which broke the float32 CG loop (see
    # sgn_theano.compilation.modes.fix_jax_reductions).
    x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
    logits, params = mlp(x, [3, 4, 3], seed=0)
    loss = softmax_cross_entropy(logits, y)
    rng = np.random.default_rng(0)
    batch = (rng.standard_normal((300, 3)).astype(np.float32),
             rng.integers(0, 3, 300).astype(np.int32))
    info = SGN(loss, params, logits, [x, y], mode="JAX").step(*batch)
    assert info.accepted and info.loss_after < info.loss


@NEEDS_JAX
def test_jax_mode_keeps_float32_zeros_float32():
    # PyTensor's JAX Alloc broadcast a Python float: float32 zeros (a convolution's
    # padding) came back in float64, and a CNN's gradient with them
    # (sgn_theano.compilation.modes.fix_jax_alloc).
    x = pt.vector("x", dtype="float32")
    padded = pt.set_subtensor(pt.zeros((x.shape[0] + 2,), dtype="float32")[1:-1], x)
    function = pytensor.function([x], [padded, pt.full((2,), 3, dtype="float32")],
                                 mode=compile_mode("JAX"))
    assert [np.asarray(value).dtype for value in function(np.ones(3, np.float32))] == [
        np.float32, np.float32]


@NEEDS_JAX
def test_a_jax_mode_step_reads_one_array_back_from_the_device(monkeypatch):
    """A JAX-mode :meth:`SGN.step` (K-FAC, the default) reads one array back to the host:
    the compiled step returns one packed vector of diagnostics, and nothing else reads
    device values (no ``get_value`` of the state), at the steps that refresh K-FAC's
    inverses too (after steps 1 and 11 here: a compiled function of no output), counted
    by :func:`helpers.count_device_reads`."""
    x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
    logits, params = mlp(x, [6, 5, 3], seed=0)
    optimizer = SGN(softmax_cross_entropy(logits, y), params, logits, [x, y],
                    mode=compile_mode("JAX"))
    reads, refreshes = count_device_reads(optimizer, monkeypatch)
    rng = np.random.default_rng(0)
    identity = optimizer.state.factor_inverses[0].get_value()
    for step in range(1, 13):
        reads.clear()
        info = optimizer.step(rng.normal(size=(20, 6)).astype("float32"),
                              rng.integers(0, 3, 20).astype("int32"))
        assert np.isfinite(info.loss)
        assert reads == ["output"], (step, reads)
    assert len(refreshes) == 2  # after steps 1 and 11
    refreshed = optimizer.state.factor_inverses[0].get_value()
    assert np.isfinite(refreshed).all() and not np.allclose(refreshed, identity)
    assert optimizer.step_count == int(optimizer.state.step_count.get_value()) == 12


@NEEDS_JAX
def test_a_jax_mode_step_takes_device_arrays_where_they_are(monkeypatch):
    """Batches already on a JAX device are not copied to the host: the step matches the
    step on the same numpy arrays, and a device batch with a NaN raises the error a numpy
    one does, with every state array as it was."""
    import jax

    from pytensor.tensor.type import TensorType
    from sgn_theano.errors import SGNInputError

    def optimizer():
        x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
        logits, params = mlp(x, [6, 5, 3], seed=0)
        return SGN(softmax_cross_entropy(logits, y), params, logits, [x, y],
                   mode=compile_mode("JAX"))

    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(20, 6)).astype("float32"),
                rng.integers(0, 3, 20).astype("int32")) for _ in range(3)]
    on_host, on_device = optimizer(), optimizer()
    filtered = []
    original_filter = TensorType.filter
    monkeypatch.setattr(TensorType, "filter", lambda self, data, *a, **k: filtered.append(
        type(data)) or original_filter(self, data, *a, **k))
    for index, batch in enumerate(batches):
        expected = on_host.step(*batch)
        filtered.clear()
        assert on_device.step(*[jax.device_put(array) for array in batch]) == expected
        if index:  # (the first step reads one row, once per batch shape: the probe's shape)
            assert filtered == []  # PyTensor's input check, which copies to the host, skipped
    saved = on_device.state_dict()
    x, y = batches[0]
    with pytest.raises(SGNInputError, match=r"batch array 0 \(x\) contains NaN"):
        on_device.step(jax.device_put(np.where(x > 1, np.nan, x)), jax.device_put(y))
    after = on_device.state_dict()
    for role, arrays in saved["state"].items():
        assert [a.tobytes() for a in arrays] == [a.tobytes() for a in after["state"][role]], role
    assert on_device.step_count == 3
