"""K-FAC steps (SGN's default preconditioner) on degenerate batches: one class, constant
inputs, a layer whose inputs are all zero (dead relu units). Each step stays finite and is
accepted or refused by the usual rules; the factor inverses survive a rank-deficient
input factor :math:`A`."""

import numpy as np
import pytensor.tensor as pt
import pytest
from helpers import TEST_MODE, evaluated

from sgn_theano import SGN, softmax_cross_entropy
from sgn_theano.models import mlp
from sgn_theano.preconditioning.kronecker_factored import damped_inverses
from sgn_theano.step_stages import Rejection

ROWS, FEATURES, HIDDEN, CLASSES = 20, 6, 5, 3
STEPS = 12  # the inverses are refreshed after steps 1 and 11 (interval 10)


def relu_classifier(dead_hidden_units: bool = False, hand_written_loss: bool = False):
    """An MLP 6-5-3 relu with the library's loss (or the same loss written by hand, whose
    output factor K-FAC estimates in two passes), and a default SGN on it. With
    ``dead_hidden_units`` the hidden layer's bias is so negative that every hidden unit
    is zero on every row: the second layer's inputs are all zero."""
    x, y = pt.matrix("x", dtype="float64"), pt.ivector("y")
    logits, params = mlp(x, [FEATURES, HIDDEN, CLASSES], activation="relu", seed=0,
                         dtype="float64")
    if dead_hidden_units:
        params[1].set_value(np.full(HIDDEN, -1e3))
    loss = (-pt.mean(pt.special.log_softmax(logits, axis=1)[pt.arange(y.shape[0]), y])
            if hand_written_loss else softmax_cross_entropy(logits, y))
    optimizer = SGN(loss, params, logits, [x, y], curvature_fraction=0.5, mode=TEST_MODE)
    return optimizer, params


def degenerate_batch(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, FEATURES))
    y = rng.integers(0, CLASSES, ROWS).astype(np.int32)
    if kind == "one class":
        y[:] = 1
    elif kind == "constant inputs":
        x[:] = 0.5
    elif kind == "zero inputs":
        x[:] = 0.0
    return x, y


def assert_steps_follow_the_rules(optimizer, params, kind: str) -> list:
    """Take :data:`STEPS` default steps on degenerate batches: every diagnostic finite where
    defined, an accepted step lowers the batch loss (Armijo), a refused one names its
    reason and leaves the parameters byte-identical; parameters, factors and inverses
    stay finite."""
    infos = []
    for seed in range(STEPS):
        before = [p.get_value().copy() for p in params]
        info = optimizer.step(*degenerate_batch(kind, seed))
        infos.append(info)
        assert np.isfinite(info.loss) and np.isfinite(info.damping), info
        assert np.isfinite(info.cg_residual_norm), info
        if info.accepted:
            assert info.loss_after <= info.loss, info
        else:
            assert info.reason in {rejection.reason for rejection in Rejection} - {""}, info
            for p, value in zip(params, before):
                np.testing.assert_array_equal(p.get_value(), value)
        for variable in (*params, *optimizer.state.factors, *optimizer.state.factor_inverses):
            assert np.isfinite(variable.get_value()).all(), variable.name
    return infos


@pytest.mark.parametrize("hand_written_loss", [False, True], ids=["library", "hand-written"])
@pytest.mark.parametrize("kind", ["one class", "constant inputs", "zero inputs"])
def test_kfac_steps_on_degenerate_batches(kind, hand_written_loss):
    optimizer, params = relu_classifier(hand_written_loss=hand_written_loss)
    infos = assert_steps_follow_the_rules(optimizer, params, kind)
    if kind == "one class":  # a learnable batch: the loss of the one class goes down
        assert sum(info.accepted for info in infos) >= STEPS // 2
        assert infos[-1].loss < infos[0].loss
    if kind != "one class":  # constant rows: the input factor has rank one
        input_factor = optimizer.state.factors[0].get_value()
        assert np.linalg.matrix_rank(input_factor, tol=1e-10) == 1


def test_kfac_steps_with_dead_relu_units():
    optimizer, params = relu_classifier(dead_hidden_units=True)
    first_layer = [p.get_value().copy() for p in params[:2]]
    infos = assert_steps_follow_the_rules(optimizer, params, "random")
    assert any(info.accepted for info in infos)  # the output layer's bias still learns
    # The second layer's input factor sees zero activations and the constant 1 of its bias.
    second_input_factor = optimizer.state.factors[2].get_value()
    assert np.count_nonzero(second_input_factor) == 1
    for p, value in zip(params[:2], first_layer):  # no gradient reaches the first layer
        np.testing.assert_array_equal(p.get_value(), value)


@pytest.mark.parametrize("rank", [0, 1, 3])
def test_damped_inverses_of_rank_deficient_input_factors(rank):
    rng = np.random.default_rng(rank)
    rows = rng.normal(size=(rank, 6))
    input_factor = rows.T @ rows  # 6 x 6 of rank `rank`
    root = rng.normal(size=(3, 3))
    output_factor = root @ root.T
    damping = 1e-4
    a_inverse, s_inverse = evaluated(damped_inverses(input_factor, output_factor, damping))
    input_scale = np.trace(input_factor) / 6 or 1.0  # a zero trace counts as one
    ratio = np.sqrt(input_scale / (np.trace(output_factor) / 3))
    gamma = np.sqrt(damping)
    np.testing.assert_allclose(a_inverse, np.linalg.inv(input_factor + ratio * gamma * np.eye(6)),
                               rtol=1e-8)
    np.testing.assert_allclose(s_inverse, np.linalg.inv(output_factor + gamma / ratio * np.eye(3)),
                               rtol=1e-8)
    assert np.isfinite(a_inverse).all() and np.isfinite(s_inverse).all()
