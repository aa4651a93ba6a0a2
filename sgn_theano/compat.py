"""The PyTensor versions this library runs on, 2.38 and 3.x, and what differs between
them, each difference named once and chosen at import from the installed PyTensor.

PyMC 5.28 pins PyTensor 2.38. PyTensor 3 renamed Theano's ``Rop``/``Lop`` to
``pushforward``/``pullback`` (same positional arguments: outputs, parameters, vectors),
and an op's ``L_op`` to ``pullback`` (same arguments: inputs, outputs, cotangents); it
added ``isfinite``; and its softmax and log-softmax are symbolic ops with no C code
(``OpFromGraph``), where 2.38's are C ops. Nothing here changes PyTensor or the user's
process.
"""

from __future__ import annotations

import pytensor
import pytensor.tensor as pt
from pytensor.compile.builders import OpFromGraph
from pytensor.tensor.special import LogSoftmax, Softmax

__all__ = ["GRAPH_SOFTMAX_OPS", "PYTENSOR_MAJOR", "differentiated_by_pullback", "isfinite",
           "pullback", "pushforward"]

#: The installed PyTensor's major version (2 or 3).
PYTENSOR_MAJOR = int(pytensor.__version__.split(".")[0])

if PYTENSOR_MAJOR >= 3:
    from pytensor.gradient import pullback, pushforward

    isfinite = pt.isfinite
else:  # PyTensor 2.x keeps Theano's names
    from pytensor.gradient import Lop as pullback
    from pytensor.gradient import Rop as pushforward

    def isfinite(x):
        """Elementwise: neither NaN nor infinite."""
        return ~(pt.isnan(x) | pt.isinf(x))

#: Softmax ops that are inner graphs (``OpFromGraph``) with no C code: PyTensor 3's.
GRAPH_SOFTMAX_OPS = tuple(op for op in (Softmax, LogSoftmax) if issubclass(op, OpFromGraph))


def differentiated_by_pullback(op_class: type) -> type:
    """Class decorator: the op's ``pullback`` method is also its ``L_op``, the name
    PyTensor 2.x calls."""
    if PYTENSOR_MAJOR < 3:
        op_class.L_op = op_class.pullback
    return op_class
