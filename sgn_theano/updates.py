"""First-order baselines in the Lasagne updates style: ``sgd``, ``momentum``, ``adam``.

Each takes ``(loss_or_grads, params, hyperparameters...)`` and returns an
``OrderedDict`` of updates for ``pytensor.function(..., updates=...)``; buffers are
shared variables created here, and their updates are in the same dict.
Hyperparameters may be floats or symbolic scalars (shared variables).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt

from sgn_theano.running_averages import shared_zeros_like
from sgn_theano.validation import get_or_compute_grads, scalar_hyperparameter

__all__ = ["adam", "momentum", "sgd"]


def sgd(loss_or_grads, params: Sequence, learning_rate) -> OrderedDict:
    """Stochastic gradient descent: ``param := param - learning_rate * gradient``."""
    grads = get_or_compute_grads(loss_or_grads, params)
    updates = OrderedDict()
    for param, grad in zip(params, grads):
        lr = scalar_hyperparameter("learning_rate", learning_rate, param.dtype, low=0.0, low_open=True)
        updates[param] = param - lr * grad
    return updates


def momentum(loss_or_grads, params: Sequence, learning_rate, momentum=0.9) -> OrderedDict:
    """Heavy-ball momentum.

    ``velocity := momentum * velocity - learning_rate * gradient``;
    ``param := param + velocity``.
    """
    grads = get_or_compute_grads(loss_or_grads, params)
    updates = OrderedDict()
    for param, grad in zip(params, grads):
        lr = scalar_hyperparameter("learning_rate", learning_rate, param.dtype, low=0.0, low_open=True)
        mu = scalar_hyperparameter("momentum", momentum, param.dtype, low=0.0, high=1.0, high_open=True)
        velocity = shared_zeros_like(param, "velocity")
        new_velocity = mu * velocity - lr * grad
        updates[velocity] = new_velocity
        updates[param] = param + new_velocity
    return updates


def adam(loss_or_grads, params: Sequence, learning_rate=1e-3, beta1=0.9, beta2=0.999,
         epsilon=1e-8) -> OrderedDict:
    """Adam (Kingma and Ba, 2015).

    ``t := t + 1``; ``m := beta1 m + (1 - beta1) g``; ``v := beta2 v + (1 - beta2) g^2``;
    ``param := param - learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t) * m /
    (sqrt(v) + epsilon)``.
    """
    grads = get_or_compute_grads(loss_or_grads, params)
    dtype = params[0].dtype
    step = pytensor.shared(np.asarray(0, dtype=dtype), name="adam_step")
    t = step + 1
    b1 = scalar_hyperparameter("beta1", beta1, dtype, low=0.0, high=1.0, high_open=True)
    b2 = scalar_hyperparameter("beta2", beta2, dtype, low=0.0, high=1.0, high_open=True)
    lr = scalar_hyperparameter("learning_rate", learning_rate, dtype, low=0.0, low_open=True)
    eps = scalar_hyperparameter("epsilon", epsilon, dtype, low=0.0, low_open=True)
    scaled_lr = lr * pt.sqrt(1 - b2**t) / (1 - b1**t)
    updates = OrderedDict()
    for param, grad in zip(params, grads):
        first, second = shared_zeros_like(param, "adam_m"), shared_zeros_like(param, "adam_v")
        new_first = b1 * first + (1 - b1) * grad
        new_second = b2 * second + (1 - b2) * pt.sqr(grad)
        updates[first] = new_first
        updates[second] = new_second
        updates[param] = param - pt.cast(scaled_lr, param.dtype) * new_first / (
            pt.sqrt(new_second) + pt.cast(eps, param.dtype))
    updates[step] = t
    return updates
