"""The library's exception for bad input, so callers can tell it from other errors.

Every check of :mod:`sgn_theano.validation`, :class:`sgn_theano.SGNConfig` and the
optimizers raises :class:`SGNInputError` for a bad value and
:class:`SGNInputTypeError` for a value of the wrong kind, before anything is compiled
or changed. Both are ``ValueError`` and ``TypeError`` where Python's own would be, so
``except ValueError`` and ``except TypeError`` keep working::

    try:
        optimizer.step(x, y)
    except SGNInputError as error:  # a bad batch: nothing changed
        ...
"""

from __future__ import annotations

__all__ = ["SGNInputError", "SGNInputTypeError"]


class SGNInputError(ValueError):
    """Bad input to sgn_theano (an option, a graph, a batch, a state dict): the message
    names the problem, and parameters and optimizer state are unchanged."""


class SGNInputTypeError(SGNInputError, TypeError):
    """Bad input of the wrong kind (a float where an integer is needed, a NumPy array
    where a shared variable is): an :class:`SGNInputError` and a ``TypeError``."""
