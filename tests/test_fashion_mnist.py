"""Training on the real Fashion-MNIST (Debian package dataset-fashion-mnist)."""

import os

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from sgn_theano import SGN, softmax_cross_entropy
from sgn_theano.data import FASHION_MNIST_DIR, load_fashion_mnist, minibatches
from sgn_theano.models import mlp
from sgn_theano.compilation.modes import compile_mode
from sgn_theano.bench.train import make_evaluator, train

pytestmark = pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                                reason="Debian package dataset-fashion-mnist not installed")


def default_sgn(sizes, activation, mode):
    """SGN at its defaults (:class:`sgn_theano.SGNConfig`) on an MLP over Fashion-MNIST's
    inputs."""
    x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
    logits, params = mlp(x, sizes, activation=activation, seed=0)
    loss = softmax_cross_entropy(logits, y)
    optimizer = SGN(loss, params, logits, [x, y], mode=mode)
    return optimizer, (x, y, logits, loss, params)


@pytest.mark.slow
def test_sgn_reaches_80_percent_within_60_steps_of_batch_1000():
    mode = compile_mode("C")
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    optimizer, (x, y, logits, loss, params) = default_sgn([784, 64, 10], "relu", mode)
    batches = minibatches((x_train, y_train), 1000, seed=0)
    infos = [optimizer.step(*next(batches)) for _ in range(60)]
    predict = pytensor.function([x], pt.argmax(logits, axis=1), mode=mode)
    accuracy = float(np.mean(predict(x_test) == y_test))
    assert all(np.isfinite(info.loss) for info in infos)
    assert sum(info.accepted for info in infos) >= 55
    assert accuracy >= 0.80, accuracy


@pytest.mark.slow
def test_soak_10000_sgn_steps():
    """10,000 default SGN steps (batch 1000, 167 epochs) on a 784-32-10 tanh MLP: no
    exception, no divergence, finite parameters, damping inside its bounds, and a model
    that learned and kept what it learned. Prints the figures recorded in the docs
    (results).

    The purpose is robustness, not final accuracy: a 32-unit network overfits
    Fashion-MNIST long before 167 epochs, the sooner the better its optimizer (with
    K-FAC, the default, test accuracy peaked near 87.5 % after 1,000 steps and ended
    near 84 %), so the test asks for 85 % at its best evaluation and for a training loss
    still going down at the end (the mean over the last 5,000 steps below that over
    steps 500-1,000): the optimizer still descends, it does not drift."""
    mode = compile_mode("C")
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    optimizer, (x, y, logits, loss, params) = default_sgn([784, 32, 10], "tanh", mode)
    evaluate = make_evaluator([x, y], logits, loss, x_test, y_test, mode=mode)
    dampings, rejected = [], 0

    class Recorder:
        def step(self, *batch):
            nonlocal rejected
            info = optimizer.step(*batch)
            dampings.append(info.damping)
            rejected += not info.accepted
            return info

    result = train(Recorder(), evaluate, (x_train, y_train), batch_size=1000, max_steps=10_000,
                   checkpoints=[500, 1000, 2500, 5000], progress=False)
    assert result.steps == 10_000 and not result.diverged
    assert all(np.isfinite(p.get_value()).all() for p in params)
    low, high = optimizer.config["min_damping"], optimizer.config["max_damping"]
    assert np.float32(low) <= min(dampings) and max(dampings) <= np.float32(high)
    accuracies = [point.test_accuracy for point in result.history]
    assert max(accuracies) >= 0.85, accuracies
    train_losses = {point.step: point.train_loss for point in result.history}
    assert train_losses[10_000] < train_losses[1000], train_losses
    print(f"\nsoak: {result.steps} steps in {result.train_time:.1f} s of steps, "
          f"{rejected} rejected, damping {min(dampings):.2e}..{max(dampings):.2e}, "
          f"test accuracy {[round(p.test_accuracy, 4) for p in result.history]} at steps "
          f"{[p.step for p in result.history]}, final train loss "
          f"{result.history[-1].train_loss:.4f}")
