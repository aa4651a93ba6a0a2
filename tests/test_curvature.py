"""Gauss-Newton products against dense J^T H_L J, for every loss, tanh and relu, f64 and f32."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import (LOSSES, TEST_MODE, TOLERANCE, build_problem, dense_gauss_newton,
                      flatten, make_batch, unflatten)

from sgn_theano import (gauss_newton_product, jacobian_vector_product, loss_hessian_product,
                        vector_jacobian_product)


def relative_error(actual, expected):
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("loss_name", LOSSES)
def test_gauss_newton_product_matches_dense_matrix(loss_name, activation, dtype):
    loss, outputs, params, inputs = build_problem(loss_name, activation, dtype)
    vectors = [p.type() for p in params]
    product = gauss_newton_product(loss, outputs, params, vectors)
    assert [v.dtype for v in product] == [dtype] * len(params)  # no silent upcast
    compiled = pytensor.function(inputs + vectors, product, mode=TEST_MODE, on_unused_input="ignore")
    dense_matrix, _ = dense_gauss_newton(loss, outputs, params, inputs)(*make_batch(loss_name, dtype))
    x, y = make_batch(loss_name, dtype)
    rng = np.random.default_rng(7)
    for _ in range(3):
        v = rng.standard_normal(dense_matrix.shape[0])
        result = flatten(compiled(x, y, *unflatten(v, params)))
        expected = dense_matrix.astype(np.float64) @ v.astype(dtype).astype(np.float64)
        assert relative_error(result, expected) < TOLERANCE[dtype]


def test_dense_gauss_newton_is_positive_semidefinite():
    loss, outputs, params, inputs = build_problem("softmax_cross_entropy", "tanh", "float64")
    matrix, _ = dense_gauss_newton(loss, outputs, params, inputs)(
        *make_batch("softmax_cross_entropy", "float64"))
    assert np.linalg.eigvalsh(matrix).min() > -1e-12


def test_jacobian_products_match_dense_jacobian():
    loss, outputs, params, inputs = build_problem("squared_error", "tanh", "float64")
    tangents = [p.type() for p in params]
    cotangent = pt.matrix("u", dtype="float64")
    jv = jacobian_vector_product(outputs, params, tangents)
    jtu = vector_jacobian_product(outputs, params, cotangent)
    flat = outputs.flatten()
    dense = pt.concatenate(
        [pytensor.gradient.jacobian(flat, p, vectorize=True).reshape((flat.shape[0], -1))
         for p in params], axis=1)
    compiled = pytensor.function(inputs + tangents + [cotangent], [jv, *jtu, dense],
                                 mode=TEST_MODE, on_unused_input="ignore")
    x, y = make_batch("squared_error", "float64")
    rng = np.random.default_rng(5)
    n = sum(p.get_value().size for p in params)
    v, u = rng.standard_normal(n), rng.standard_normal((5, 3))
    jv_value, *jtu_value, matrix = compiled(x, y, *unflatten(v, params), u)
    np.testing.assert_allclose(jv_value.ravel(), matrix @ v, rtol=1e-10)
    np.testing.assert_allclose(flatten(jtu_value), matrix.T @ u.ravel(), rtol=1e-10)


def test_product_errors_name_the_argument():
    loss, outputs, params, _ = build_problem("squared_error", "tanh", "float64")
    with pytest.raises(ValueError, match="`tangents` has 1 entries but there are 4"):
        jacobian_vector_product(outputs, params, [params[0].type()])
    with pytest.raises(ValueError, match="Element 1 of `tangents` has 2 dimensions"):
        jacobian_vector_product(outputs, params, [p.type() for p in params[:1]]
                                + [pt.matrix()] + [p.type() for p in params[2:]])
    with pytest.raises(ValueError, match="`loss` is not computed from `outputs`"):
        loss_hessian_product(pt.sum(params[0]), outputs, pt.matrix(dtype="float64"))
    with pytest.raises(ValueError, match="`loss` must be a scalar"):
        loss_hessian_product(outputs.sum(axis=0), outputs, pt.matrix(dtype="float64"))
    unrelated = pytensor.shared(np.ones(2), name="unrelated")
    with pytest.raises(ValueError, match="do not depend on every parameter"):
        vector_jacobian_product(outputs, params + [unrelated], pt.matrix(dtype="float64"))
