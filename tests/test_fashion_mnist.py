"""Training on the real Fashion-MNIST (Debian package dataset-fashion-mnist)."""

import os

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from sgn_theano import SGN, softmax_cross_entropy
from sgn_theano.data import FASHION_MNIST_DIR, load_fashion_mnist, minibatches
from sgn_theano.models import mlp
from sgn_theano.modes import compile_mode

pytestmark = pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                                reason="Debian package dataset-fashion-mnist not installed")


def test_sgn_reaches_80_percent_within_60_steps_of_batch_1000():
    mode = compile_mode("C")
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
    logits, params = mlp(x, [784, 64, 10], activation="relu", seed=0)
    loss = softmax_cross_entropy(logits, y)
    optimizer = SGN(loss, params, logits, [x, y], max_cg_iters=3, mode=mode)
    batches = minibatches((x_train, y_train), 1000, seed=0)
    infos = [optimizer.step(*next(batches)) for _ in range(60)]
    predict = pytensor.function([x], pt.argmax(logits, axis=1), mode=mode)
    accuracy = float(np.mean(predict(x_test) == y_test))
    assert all(np.isfinite(info.loss) for info in infos)
    assert sum(info.accepted for info in infos) >= 55
    assert accuracy >= 0.80, accuracy
