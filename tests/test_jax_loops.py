"""Loops that stop early in JAX mode (sgn_theano.compilation.jax_loops): while loops, the same
results as the C mode, and the state kept on the device."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import NEEDS_JAX
from pytensor.scan.utils import until

from sgn_theano import SGN, conjugate_gradient, softmax_cross_entropy
from sgn_theano.models import mlp
from sgn_theano.compilation.modes import compile_mode, loops_can_exit_early

pytestmark = NEEDS_JAX


def jaxpr_of(function) -> str:
    """The jaxpr of a PyTensor function compiled in JAX mode, as text."""
    import jax
    from pytensor.link.jax.dispatch import jax_funcify

    graph = function.maker.fgraph
    values = [np.asarray(container.storage[0]) for container in function.input_storage]
    return str(jax.make_jaxpr(jax_funcify(graph))(*values))


def test_cg_in_jax_mode_is_a_while_loop_that_stops_where_c_does():
    rng = np.random.default_rng(0)
    factor = rng.standard_normal((6, 6))
    matrix = factor @ factor.T + 6 * np.eye(6)
    a, b = pt.constant(matrix), pytensor.shared(rng.standard_normal(6))
    result = conjugate_gradient(lambda v: [a @ v[0]], [b], max_iters=200, tol=1e-10)
    outputs = [result.x[0], result.iterations]
    jax_function = pytensor.function([], outputs, mode=compile_mode("JAX"))
    (x_jax, iterations_jax), (x_c, iterations_c) = (
        jax_function(), pytensor.function([], outputs, mode=compile_mode("C"))())
    assert loops_can_exit_early(compile_mode("JAX"))
    assert iterations_jax == iterations_c <= 6  # of 200 allowed
    np.testing.assert_allclose(x_jax, x_c, rtol=1e-10)
    np.testing.assert_allclose(matrix @ np.asarray(x_jax), b.get_value(), atol=1e-8)
    text = jaxpr_of(jax_function)
    assert "while[" in text and "scan[" not in text


def test_a_while_scan_with_outputs_that_are_not_fed_back_is_refused():
    values = pt.vector("values")
    trace = pytensor.scan(lambda v: (v * 2, until(v > 10)), sequences=[values],
                          return_updates=False)
    with pytest.raises(NotImplementedError, match="every output is loop state"):
        pytensor.function([values], trace, mode=compile_mode("JAX"))(np.arange(20.0))


@pytest.fixture(scope="module")
def early_stopping_steps():
    """One heavily damped SGN step with a tolerance (CG stops after a few of its 60
    iterations), default and fixed, in JAX and in C mode: (info, parameters, storage).
    In float64, so that the two modes' different rounding cannot move a residual across
    the tolerance and change the iteration count on some CPU. The fixed step runs a
    network and a loss written in plain PyTensor, the default step the library's."""
    rng = np.random.default_rng(1)
    batch = (rng.standard_normal((300, 8)), rng.integers(0, 4, 300).astype(np.int32))
    results = {}
    for mode_name in ("JAX", "C"):
        for default in (True, False):
            x, y = pt.matrix("x", dtype="float64"), pt.ivector("y")
            if default:
                logits, params = mlp(x, [8, 16, 4], seed=0)
                loss = softmax_cross_entropy(logits, y)
            else:
                init = np.random.default_rng(2)
                params = [pytensor.shared(init.standard_normal((8, 16)) * 0.3, name="w1"),
                          pytensor.shared(np.zeros(16), name="b1"),
                          pytensor.shared(init.standard_normal((16, 4)) * 0.3, name="w2")]
                logits = pt.maximum(x @ params[0] + params[1], 0) @ params[2]
                loss = -pt.mean(pt.special.log_softmax(logits, axis=1)[pt.arange(y.shape[0]),
                                                                       y])
            optimizer = SGN(loss, params, logits, [x, y],
                            max_cg_iters=60, cg_tol=1e-3, damping=100.0, min_damping=100.0,
                            trust_region=default, line_search=default, mode=mode_name)
            info = optimizer.step(*batch)
            results[mode_name, default] = (info, [np.asarray(p.get_value()) for p in params],
                                           params[0].container.storage[0])
    return results


@pytest.mark.slow
@pytest.mark.parametrize("default", [True, False], ids=["default", "fixed"])
def test_sgn_step_in_jax_mode_stops_cg_early_and_matches_the_c_mode(early_stopping_steps,
                                                                     default):
    (jax_info, jax_params, _), (c_info, c_params, _) = (
        early_stopping_steps["JAX", default], early_stopping_steps["C", default])
    assert jax_info.cg_iterations == c_info.cg_iterations < 60
    assert jax_info.line_search_tries == c_info.line_search_tries
    assert jax_info.accepted and c_info.accepted
    for ours, theirs in zip(jax_params, c_params):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_parameters_stay_on_the_jax_device_between_steps(early_stopping_steps):
    import jax

    _, _, storage = early_stopping_steps["JAX", True]
    assert isinstance(storage, jax.Array)  # not copied back to a numpy array
