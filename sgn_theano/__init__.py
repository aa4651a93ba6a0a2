"""sgn_theano: the stochastic generalized Gauss-Newton optimizer for PyTensor graphs."""

from sgn_theano.allocator import reuse_freed_memory
from sgn_theano.cg import CGResult, conjugate_gradient
from sgn_theano.curvature import (
    gauss_newton_product,
    jacobian_vector_product,
    loss_hessian_product,
    vector_jacobian_product,
)
from sgn_theano.losses import binary_cross_entropy, softmax_cross_entropy, squared_error
from sgn_theano.modes import compile_mode
from sgn_theano.optimizer import SGN, StepInfo, sgn
from sgn_theano.updates import adam, momentum, sgd

__version__ = "0.1.0"

reuse_freed_memory()  # see sgn_theano.allocator; SGN_THEANO_MALLOC_TUNING=0 turns it off

__all__ = [
    "CGResult",
    "SGN",
    "StepInfo",
    "adam",
    "binary_cross_entropy",
    "compile_mode",
    "conjugate_gradient",
    "gauss_newton_product",
    "jacobian_vector_product",
    "loss_hessian_product",
    "momentum",
    "sgd",
    "sgn",
    "softmax_cross_entropy",
    "squared_error",
    "vector_jacobian_product",
]
