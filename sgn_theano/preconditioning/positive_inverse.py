"""The inverse of a symmetric positive definite matrix through its Cholesky factor, as
one op.

PyTensor's own graph for it, ``cho_solve((cholesky(X), True), I)``, solves for the
columns of the identity (:math:`n^3` multiply-adds after the factorization) where
LAPACK's ``potri`` inverts the triangular factor and multiplies it by its transpose
(:math:`2 n^3 / 3`): 21.7 against 10.5 ms for a 785-row float64 matrix (the input
factor of a 784-pixel layer, K-FAC's largest in the docs' MLPs; 2 CPU cores, medians of
10). :class:`PositiveDefiniteInverse` runs ``potrf`` and ``potri`` (C and NUMBA modes,
through its ``perform``) and, in JAX mode, JAX's Cholesky factorization and triangular
solves on the device. A matrix that is not positive definite gives NaNs, which callers
test for.

:func:`one_host_blas_thread` runs host linear algebra on one thread: numpy's and scipy's
OpenBLAS keep their worker threads spinning for a while after a call, which on few
cores starves the next compiled step's own BLAS (an SGN step just after a refresh of
K-FAC's inverses took three times its time; a training loop at the defaults on 2 cores
ran at 38 ms a step against 28-30 ms with the refresh on one thread).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytensor.tensor as pt
import scipy.linalg
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.tensor.variable import TensorVariable

from sgn_theano.compilation.modes import register_backend_preparer

__all__ = ["PositiveDefiniteInverse", "one_host_blas_thread", "positive_definite_inverse"]


class PositiveDefiniteInverse(Op):
    """:math:`X^{-1}` of a symmetric positive definite :math:`X` (its lower triangle is
    read), symmetric to the last bit; all NaN where :math:`X` is not positive definite."""

    __props__ = ()

    def make_node(self, matrix) -> Apply:
        matrix = pt.as_tensor_variable(matrix)
        if matrix.type.ndim != 2 or matrix.type.dtype not in ("float32", "float64"):
            raise TypeError(f"PositiveDefiniteInverse takes a float matrix, got {matrix.type}.")
        return Apply(self, [matrix], [matrix.type()])

    def perform(self, node, inputs, output_storage) -> None:
        (matrix,) = inputs
        potrf, potri = scipy.linalg.get_lapack_funcs(("potrf", "potri"), (matrix,))
        factor, info = potrf(matrix, lower=1)
        if info == 0:
            inverse, info = potri(factor, lower=1)
        if info != 0:
            output_storage[0][0] = np.full_like(matrix, np.nan)
            return
        output_storage[0][0] = (np.tril(inverse) + np.tril(inverse, -1).T).astype(
            matrix.dtype, copy=False)

    def infer_shape(self, fgraph, node, shapes) -> list:
        return [shapes[0]]


def positive_definite_inverse(matrix) -> TensorVariable:
    """:class:`PositiveDefiniteInverse` of ``matrix``, shape ``(n, n)``."""
    return PositiveDefiniteInverse()(matrix)


@contextlib.contextmanager
def one_host_blas_thread() -> Iterator[None]:
    """Within the context, the process's BLAS libraries (numpy's, scipy's, PyTensor's)
    run on one thread, where ``threadpoolctl`` is installed (the ``bench`` and ``test``
    extras have it); their thread counts are restored after. Without it, nothing
    changes."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


_JAX_REGISTERED = False


def register_jax() -> None:
    """Give PyTensor's JAX backend :class:`PositiveDefiniteInverse` (idempotent; imports
    JAX): JAX's Cholesky factorization (NaN where it fails) and two triangular solves."""
    global _JAX_REGISTERED
    if _JAX_REGISTERED:
        return
    import jax
    from pytensor.link.jax.dispatch import jax_funcify

    @jax_funcify.register(PositiveDefiniteInverse)
    def _inverse_in_jax(op, node=None, **kwargs):
        def inverse(matrix):
            factor = jax.numpy.linalg.cholesky(matrix)
            identity = jax.numpy.eye(matrix.shape[0], dtype=matrix.dtype)
            result = jax.scipy.linalg.cho_solve((factor, True), identity)
            return (result + result.T) / 2
        return inverse

    _JAX_REGISTERED = True


register_backend_preparer("JAX", register_jax)
