"""A network's outputs as the parameters of PyMC likelihoods, trained by SGN.

    python examples/pymc_likelihood.py [--steps 40] [--mode C]

The model is float64, PyMC's default precision. Two likelihoods written with PyMC's
distributions, each a negative mean log-likelihood convex in the network's outputs, so the
Gauss-Newton matrix is positive semi-definite:

- ``pm.Normal.dist(mu, sigma)`` with ``mu`` a tanh MLP's output and a fixed ``sigma``, on
  scikit-learn's diabetes regression data;
- ``pm.Categorical.dist(logit_p=z)`` with ``z`` a relu MLP's logits, on Fashion-MNIST
  (Debian's ``dataset-fashion-mnist``), 5,000 training images.

``SGN`` differentiates PyMC's log-density twice for the Hessian with respect to the
outputs (no closed form needed). A likelihood that is not convex in the outputs (a
Student-t mean, a scale learned with the mean) gives an indefinite Gauss-Newton matrix:
where CG finds no positive curvature along the gradient, SGN rejects the step, leaves the
parameters as they were and says why in ``StepInfo.reason``.
"""

import argparse

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from sgn_theano import SGN
from sgn_theano.compilation.modes import compile_mode
from sgn_theano.data import load_diabetes_task, load_fashion_mnist, minibatches
from sgn_theano.models import mlp


def train(loss, params, outputs, inputs, arrays, *, steps, batch_size, mode, label):
    """SGN at its defaults for ``steps`` steps; the first and last batch losses."""
    optimizer = SGN(loss, params, outputs, inputs, mode=mode)
    batches = minibatches(arrays, batch_size)
    losses = [float(optimizer.step(*next(batches)).loss) for _ in range(steps)]
    print(f"{label}: negative log-likelihood {losses[0]:.4f} -> {losses[-1]:.4f} "
          f"in {steps} steps")
    return losses


def normal_regression(steps: int, mode) -> list[float]:
    x_train, y_train, _, _ = load_diabetes_task()
    x, y = pt.matrix("x", dtype="float64"), pt.matrix("y", dtype="float64")
    mu, params = mlp(x, [10, 32, 1], activation="tanh", dtype="float64")
    likelihood = pm.Normal.dist(mu=mu, sigma=0.5)
    loss = -pt.mean(pm.logp(likelihood, y))
    return train(loss, params, mu, [x, y], (x_train, y_train), steps=steps,
                 batch_size=len(x_train), mode=mode, label="Normal (diabetes)")


def categorical_classifier(steps: int, mode) -> list[float]:
    x_train, y_train, _, _ = load_fashion_mnist()
    x, y = pt.matrix("x", dtype="float64"), pt.ivector("y")
    logits, params = mlp(x, [784, 64, 10], activation="relu", dtype="float64")
    likelihood = pm.Categorical.dist(logit_p=logits)
    loss = -pt.mean(pm.logp(likelihood, y))
    return train(loss, params, logits, [x, y], (x_train[:5000], y_train[:5000]),
                 steps=steps, batch_size=1000, mode=mode, label="Categorical (Fashion-MNIST)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--mode", default=None, help="C, NUMBA, JAX, FAST_COMPILE...")
    args = parser.parse_args()
    mode = compile_mode(args.mode)
    for run in (normal_regression, categorical_classifier):
        losses = run(args.steps, mode)
        assert np.isfinite(losses).all()
