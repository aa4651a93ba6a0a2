"""The library's losses: their values are the formulas a user writes, and the closed
forms they record (the output Hessian's product and square root) are exact."""

import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import LOSSES, TEST_MODE, build_problem, make_batch
from pytensor.gradient import jacobian

from sgn_theano import SGNInputError, SGNInputTypeError, losses
from sgn_theano.curvature import HESSIAN_PRODUCT_TAG, loss_hessian_product, loss_hessian_root


def by_hand(name: str, z: np.ndarray, t: np.ndarray) -> float:
    """The mean loss, written out in numpy."""
    if name == "softmax_cross_entropy":
        shifted = z - z.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -np.mean(log_p[np.arange(len(t)), t])
    if name == "squared_error":
        return 0.5 * np.mean(np.sum((z - t) ** 2, axis=1))
    return np.mean(np.sum(np.logaddexp(0, z) - t * z, axis=1))  # pixels' cross-entropy


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_is_its_formula(name):
    rng = np.random.default_rng(7)
    outputs = pt.matrix("z", dtype="float64")
    targets = pt.ivector("t") if name == "softmax_cross_entropy" else pt.matrix("t")
    value = pytensor.function([outputs, targets], getattr(losses, name)(outputs, targets),
                              mode=TEST_MODE)
    z = rng.normal(size=(4, 3)) * 3
    t = (rng.integers(0, 3, 4).astype("int32") if name == "softmax_cross_entropy"
         else rng.random((4, 3)))
    assert value(z, t) == pytest.approx(by_hand(name, z, t), rel=1e-12)


def test_losses_refuse_misshapen_or_float_labels():
    with pytest.raises(SGNInputError, match="`logits` must have 2 dimensions"):
        losses.softmax_cross_entropy(pt.vector(), pt.ivector())
    with pytest.raises(SGNInputTypeError, match="`labels` must be integers"):
        losses.softmax_cross_entropy(pt.matrix(), pt.vector())


@pytest.mark.parametrize("loss_name", LOSSES)
def test_closed_form_hessian_product_matches_autodiff(loss_name):
    loss, outputs, params, inputs = build_problem(loss_name, "tanh", "float64")
    assert getattr(loss.tag, HESSIAN_PRODUCT_TAG)[0] is outputs
    untagged = loss * 1.0  # a new variable without the recorded closed form
    u = pt.matrix("u", dtype="float64")
    closed = loss_hessian_product(loss, outputs, u)
    automatic = loss_hessian_product(untagged, outputs, u)
    compiled = pytensor.function(inputs + [u], [closed, automatic], mode=TEST_MODE, on_unused_input="ignore")
    x, y = make_batch(loss_name, "float64")
    u_value = np.random.default_rng(3).standard_normal((5, 3))
    closed_value, automatic_value = compiled(x, y, u_value)
    np.testing.assert_allclose(closed_value, automatic_value, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "squared_error",
                                  "binary_cross_entropy"])
def test_library_losses_record_a_square_root_of_their_row_hessians(name):
    rng = np.random.default_rng(6)
    outputs, targets = pt.matrix("z", dtype="float64"), (
        pt.ivector("t") if name == "softmax_cross_entropy" else pt.matrix("t", dtype="float64"))
    loss = getattr(losses, name)(outputs, targets)
    probe = pt.matrix("e", dtype="float64")
    root = pytensor.function([outputs, targets, probe],
                             loss_hessian_root(loss, outputs)(probe), mode=TEST_MODE,
                             on_unused_input="ignore")
    hessian = pytensor.function(
        [outputs, targets], jacobian(pytensor.grad(loss, outputs).flatten(), outputs,
                                     vectorize=True), mode=TEST_MODE, on_unused_input="ignore")
    z = rng.normal(size=(2, 3))
    t = (rng.integers(0, 3, 2).astype("int32") if name == "softmax_cross_entropy"
         else rng.random((2, 3)))
    dense = hessian(z, t).reshape(6, 6) * 2  # the mean loss's, times the rows
    patterns = [np.array(signs) for signs in itertools.product((-1.0, 1.0), repeat=3)]
    for row in range(2):
        roots = [root(z, t, np.tile(signs, (2, 1)))[row] for signs in patterns]
        covariance = np.mean([np.outer(r, r) for r in roots], axis=0)
        np.testing.assert_allclose(covariance, dense[3 * row:3 * row + 3, 3 * row:3 * row + 3],
                                   atol=1e-12)
