"""Running averages in shared buffers: the moment estimates of SGN's momentum, of its
diagonal preconditioners and of K-FAC's factors, and of the first-order baselines."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt

__all__ = ["bias_corrected_average", "shared_zeros_like"]


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
