"""Data parallelism over MPI: every process holds a shard of each batch and all take the
same step.

With :math:`P` processes, process :math:`p` holding :math:`n_p` of the batch's
:math:`N = \\sum_p n_p` rows, the loss of the whole batch is the weighted sum of the
shards' mean losses,

.. math::

    L = \\sum_p w_p L_p, \\qquad w_p = n_p / N,

and so are its gradient and its Gauss-Newton products:
:math:`g = \\sum_p w_p g_p`, :math:`G v = \\sum_p w_p G_p v`. Each of these sums is one
``MPI_Allreduce`` (:class:`AllreduceSum`), an op inside the compiled step: one call for
the loss and every parameter block of the gradient, one per CG iteration for the blocks
of :math:`G v`, one per loss evaluation of the line search. Everything else (the dot
products and norms of CG, the trust ratio, every branch) is computed from these sums,
which are the same on every process, so every process takes the same decisions and the
same step, with no more communication.

Errors stay collective (:meth:`DataParallel.shard`, :meth:`DataParallel.run`): a batch
that fails its checks on one process makes every process raise the same error before
anything runs, and a process
whose step fails while it runs (a label out of range) joins the pending sum with a
failure flag, so that the others stop too instead of waiting for it forever.

``mpi4py`` is imported only by the functions that need it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.tensor.variable import TensorVariable

from sgn_theano.curvature import batch_rows
from sgn_theano.errors import SGNInputTypeError
from sgn_theano.validation import check_batch

__all__ = ["AllreduceSum", "DataParallel", "PeerFailure", "Shard", "local_shard"]


class Shard(NamedTuple):
    """One process's checked part of a batch, and what the processes agreed on."""

    arrays: list  # the checked arrays of this process's shard
    rows: int  # n_p
    curvature_rows: int  # m_p, the rows of its curvature mini-batch
    offset: int  # where its curvature rows start among all processes' (rank order)
    curvature_total: int  # M, the curvature rows of all processes
    weights: list  # [w_p, w_p of the curvature rows, M]: the last inputs of a parallel step


def local_shard(inputs: Sequence[TensorVariable], batch: Sequence,
                curvature_fraction: float = 1.0) -> Shard:
    """The :class:`Shard` of a batch held by one process alone (no weights)."""
    arrays = check_batch(inputs, batch)
    rows, curvature_rows = batch_rows(arrays, curvature_fraction)
    return Shard(arrays, rows, curvature_rows, 0, curvature_rows, [])


class PeerFailure(RuntimeError):
    """Another process's step failed while this one waited in an :class:`AllreduceSum`."""


class AllreduceSum(Op):
    """``(a_1, ..., a_k[, after]) -> (sum_p a_1, ..., sum_p a_k)`` over the processes of
    ``comm``.

    The arrays (one dtype) are copied into one contiguous buffer after a failure flag,
    summed in place by one ``comm.Allreduce``, and cut back into arrays of their shapes.
    A non-zero flag in the sum (a process that failed, :meth:`DataParallel.run`)
    raises :class:`PeerFailure`. With ``ordered=True`` the last input is not summed:
    it only makes this sum run after the one that computed it, so that every process
    calls its sums in the same order (two sums that do not depend on each other could
    otherwise run in either order). Not differentiable: it sums gradients, it is not
    differentiated through.
    """

    def __init__(self, comm, ordered: bool = False):
        self.comm, self.ordered = comm, ordered

    def __eq__(self, other):
        return (type(self) is type(other) and self.comm is other.comm
                and self.ordered == other.ordered)

    def __hash__(self):
        return hash((type(self), id(self.comm), self.ordered))

    def __str__(self):
        return f"AllreduceSum(processes={self.comm.Get_size()}, ordered={self.ordered})"

    def make_node(self, *arrays):
        arrays = [pt.as_tensor_variable(array) for array in arrays]
        summed = arrays[:-1] if self.ordered else arrays
        if len({array.dtype for array in summed}) != 1:
            raise TypeError(f"AllreduceSum sums arrays of one dtype, got "
                            f"{sorted({array.dtype for array in summed})}.")
        return Apply(self, arrays, [array.type() for array in summed])

    def perform(self, node, inputs, output_storage):
        from mpi4py import MPI

        inputs = inputs[:-1] if self.ordered else inputs
        buffer = np.empty(1 + sum(array.size for array in inputs), dtype=node.inputs[0].dtype)
        buffer[0] = 0
        start = 1
        for array in inputs:
            buffer[start : start + array.size] = array.ravel()
            start += array.size
        self.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        if buffer[0] != 0:
            raise PeerFailure("another process's step failed (it raises the error); this "
                              "process's step stopped with it")
        start = 1
        for storage, array in zip(output_storage, inputs):
            storage[0] = buffer[start : start + array.size].reshape(array.shape).copy()
            start += array.size

    def infer_shape(self, fgraph, node, shapes):
        return shapes[:-1] if self.ordered else shapes

    def fail(self, sizes: int, dtype: str) -> None:
        """Join a pending sum of ``sizes`` numbers as a process that failed: flag 1."""
        from mpi4py import MPI

        buffer = np.zeros(1 + sizes, dtype=dtype)
        buffer[0] = 1
        self.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)


class DataParallel:
    """One process of a data-parallel optimizer: its communicator, its shard's weight
    :math:`w_p` as a symbolic input, and the collective calls around a compiled step.

    Parameters
    ----------
    comm : mpi4py communicator
        The processes that share each batch (``MPI.COMM_WORLD``).
    dtype : str
        Float dtype of the weights (the loss's).

    Attributes
    ----------
    weight, curvature_weight : scalar TensorVariable
        :math:`w_p = n_p / N`, and the same for the rows of a curvature mini-batch:
        extra inputs of the compiled step, fed from :attr:`Shard.weights`.
    curvature_rows : scalar TensorVariable
        :math:`M`, the curvature rows of all processes (the damping floor's :math:`m`,
        :func:`sgn_theano.damping.damping_floor`): the last of those inputs.
    """

    def __init__(self, comm, dtype: str):
        for method in ("Allreduce", "allgather", "Bcast", "Get_rank", "Get_size"):
            if not callable(getattr(comm, method, None)):
                raise SGNInputTypeError(f"`comm` must be an mpi4py communicator (such as "
                                        f"MPI.COMM_WORLD), got {type(comm).__name__}.")
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.weight = pt.scalar("shard_weight", dtype=dtype)
        self.curvature_weight = pt.scalar("curvature_shard_weight", dtype=dtype)
        self.curvature_rows = pt.scalar("curvature_rows", dtype=dtype)
        self._first: tuple[AllreduceSum, int, str, TensorVariable] | None = None

    @property
    def inputs(self) -> list[TensorVariable]:
        """The extra inputs of a compiled parallel step, in the order of
        :attr:`Shard.weights`: ``weight``, ``curvature_weight``, ``curvature_rows``."""
        return [self.weight, self.curvature_weight, self.curvature_rows]

    def loss_and_gradients(self, loss: TensorVariable, params: Sequence
                           ) -> tuple[TensorVariable, list[TensorVariable]]:
        """The whole batch's loss :math:`\\sum_p w_p L_p` and gradient
        :math:`\\sum_p w_p \\nabla L_p` from this shard's mean ``loss``, in one all-reduce.

        Build it first, once: every later :meth:`weighted_sum` runs after it, and it is
        the sum a process whose step fails joins (:meth:`run`).
        """
        if self._first is not None:
            raise RuntimeError("loss_and_gradients was already built for this DataParallel")
        values = [loss, *pytensor.grad(loss, list(params))]
        op = AllreduceSum(self.comm)
        summed = op(*[pt.cast(self.weight, value.dtype) * value for value in values])
        size = 1 + sum(int(np.prod(p.get_value(borrow=True).shape)) for p in params)
        self._first = (op, size, loss.dtype, summed[0])
        return summed[0], summed[1:]

    def weighted_sum(self, values: Sequence[TensorVariable], *, curvature: bool = False
                     ) -> list[TensorVariable]:
        """:math:`\\sum_p w_p v_p` of each of ``values`` (``curvature``: with the
        curvature rows' weights), in one all-reduce that runs after the
        :meth:`loss_and_gradients` sum."""
        if self._first is None:
            raise RuntimeError("build loss_and_gradients before any other sum")
        weight = self.curvature_weight if curvature else self.weight
        values = [pt.as_tensor_variable(value) for value in values]
        summed = AllreduceSum(self.comm, ordered=True)(
            *[pt.cast(weight, value.dtype) * value for value in values], self._first[3])
        return summed if isinstance(summed, list) else [summed]

    def curvature_sum(self, products: Sequence[TensorVariable]) -> list[TensorVariable]:
        """:math:`\\sum_p w_p G_p v` from this shard's products (with the curvature rows'
        weights)."""
        return self.weighted_sum(products, curvature=True)

    def total(self, value: TensorVariable) -> TensorVariable:
        """:math:`\\sum_p w_p v_p` of one scalar (a loss of the line search)."""
        return self.weighted_sum([value])[0]

    def broadcast(self, variables: Sequence) -> None:
        """Give every process rank 0's values of these shared variables."""
        for variable in variables:
            value = np.array(variable.get_value(), order="C")  # 0-d arrays stay 0-d
            self.comm.Bcast(value, root=0)
            variable.set_value(value)

    def shard(self, inputs: Sequence[TensorVariable], batch: Sequence,
              curvature_fraction: float = 1.0) -> Shard:
        """Check this process's part of a batch and agree on the batch with the others.

        Parameters
        ----------
        inputs : list of TensorVariable
            The step's batch inputs (:func:`sgn_theano.validation.check_batch`).
        batch : sequence of arrays
            This process's shard, one array per input.
        curvature_fraction : float
            The curvature mini-batch, a fraction of each shard
            (:func:`sgn_theano.curvature.batch_rows`).

        Raises
        ------
        The error of the lowest-ranked process whose shard failed its checks, on every
        process, naming that rank (nothing has run).
        """
        try:
            arrays, error = check_batch(inputs, batch), None
        except (TypeError, ValueError) as raised:
            arrays, error = None, raised
        counts = (0, 0) if error else batch_rows(arrays, curvature_fraction)
        reports = self.comm.allgather((error, *counts))
        self._raise_first([report[0] for report in reports])
        total, curvature_total = (sum(report[i] for report in reports) for i in (1, 2))
        dtype = self.weight.dtype
        weights = [np.asarray(counts[0] / total, dtype=dtype),
                   np.asarray(counts[1] / curvature_total, dtype=dtype),
                   np.asarray(curvature_total, dtype=dtype)]
        offset = sum(report[2] for report in reports[:self.rank])
        return Shard(arrays, *counts, offset, curvature_total, weights)

    def run(self, function: Callable, *arguments):
        """``function(*arguments)`` (the compiled step, its last arguments a
        :attr:`Shard.weights`) on every process, or the same error raised on all.

        Raises
        ------
        The error of the lowest-ranked process that failed, on every process, naming
        that rank; the parameters are unchanged on all of them.
        """
        try:
            return function(*arguments)
        except PeerFailure:
            error = None
        except Exception as raised:  # noqa: BLE001 - every error must reach the others
            error = raised
            op, size, dtype, _ = self._first
            op.fail(size, dtype)
        self._raise_first(self.comm.allgather(error), peer_failed=error is None)
        raise AssertionError("unreachable: a step failed on no process")

    def _raise_first(self, errors: list, peer_failed: bool = False) -> None:
        failed = [(rank, error) for rank, error in enumerate(errors) if error is not None]
        if not failed:
            if peer_failed:
                raise PeerFailure("a step stopped waiting for a process that reported no "
                                  "error")
            return
        rank, error = failed[0]
        kind = type(error) if isinstance(error, (TypeError, ValueError)) else RuntimeError
        raise kind(f"the batch of process {rank} of {self.size}: {error}") from (
            error if rank == self.rank else None)

