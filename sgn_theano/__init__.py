"""sgn_theano: the stochastic generalized Gauss-Newton optimizer for PyTensor graphs.

Importing it changes nothing in the process: the allocator tuning
(:func:`reuse_freed_memory`) and the OpenBLAS link of the C mode
(:func:`sgn_theano.compilation.modes.link_openblas`) are calls of their own.
"""

from sgn_theano.compilation.allocator import reuse_freed_memory
from sgn_theano.cg import CGResult, conjugate_gradient
from sgn_theano.curvature import (
    gauss_newton_product,
    jacobian_vector_product,
    loss_hessian_product,
    vector_jacobian_product,
)
from sgn_theano.errors import SGNInputError, SGNInputTypeError
from sgn_theano.losses import binary_cross_entropy, softmax_cross_entropy, squared_error
from sgn_theano.compilation.modes import compile_mode, link_openblas
from sgn_theano.optimizer import SGN, SGNConfig, StepInfo, sgn
from sgn_theano.updates import adam, momentum, sgd

__version__ = "0.1.0"

__all__ = [
    "CGResult",
    "SGN",
    "SGNConfig",
    "SGNInputError",
    "SGNInputTypeError",
    "StepInfo",
    "adam",
    "binary_cross_entropy",
    "compile_mode",
    "conjugate_gradient",
    "gauss_newton_product",
    "jacobian_vector_product",
    "link_openblas",
    "loss_hessian_product",
    "momentum",
    "reuse_freed_memory",
    "sgd",
    "sgn",
    "softmax_cross_entropy",
    "squared_error",
    "vector_jacobian_product",
]
