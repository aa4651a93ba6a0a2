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

from sgn_theano.validation import get_or_compute_grads
from sgn_theano.validation import scalar_hyperparameter

__all__ = ["adam", "bias_corrected_average", "momentum", "sgd", "shared_zeros_like"]


def shared_zeros_like(param, name: str):
    """A zero-filled shared buffer shaped like ``param``, named ``<param name>_<name>``."""
    value = np.zeros_like(param.get_value(borrow=True))
    return pytensor.shared(value, name=f"{param.name or 'param'}_{name}")


def bias_corrected_average(
    buffers: Sequence,
    count,
    values: Sequence,
    decay: float,
    keep,
) -> tuple[list, OrderedDict]:
    """The bias-corrected exponential average of ``values``, and its updates.

    .. math::

        m_t = \\beta m_{t-1} + (1 - \\beta) x_t, \\qquad
        \\hat m_t = \\frac{m_t}{1 - \\beta^t}

    Parameters
    ----------
    buffers : list of shared variables
        :math:`m_{t-1}`.
    count : shared int64 scalar
        :math:`t - 1`, the values averaged so far.
    values : list of TensorVariable
        :math:`x_t`, shaped like ``buffers``.
    decay : float
        :math:`\\beta \\in [0, 1)`.
    keep : boolean scalar TensorVariable
        Whether the updates take :math:`m_t` and :math:`t`; where false (a non-finite
        gradient) the buffers keep their values.

    Returns
    -------
    averages : list of TensorVariable
        :math:`\\hat m_t`, whatever ``keep`` is.
    updates : OrderedDict
        ``{buffer: new value}`` for ``buffers`` and ``count``.
    """
    dtype = buffers[0].dtype
    beta = pt.constant(decay, dtype=dtype)
    # m + (1 - beta) (x - m): a scalar times x would be folded into the matrix product
    # that computes x (a gradient), which the rewrites then compute twice.
    totals = [m + (1 - beta) * (x - m) for m, x in zip(buffers, values)]
    correction = 1 - beta ** pt.cast(count + 1, dtype)
    updates = OrderedDict((m, pt.switch(keep, total, m)) for m, total in zip(buffers, totals))
    updates[count] = pt.switch(keep, count + 1, count)
    return [total / correction for total in totals], updates


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
