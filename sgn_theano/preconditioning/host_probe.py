"""The random probe a named preconditioner takes, drawn on the host from the step count.

Hutchinson's diagonal needs a Rademacher vector shaped like the parameters; K-FAC's
output factor a Rademacher array shaped like the curvature rows' outputs
(:mod:`sgn_theano.preconditioning.registry` says which). Both come into the compiled
step as inputs, drawn by :func:`sgn_theano.preconditioning.curvature_diagonal.
rademacher_probe` from the step count alone: a resumed run draws what the uninterrupted
one drew, and the processes of a data-parallel step cut their rows from one draw for
the whole batch, so that they draw what one process would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.mode import Mode
from pytensor.graph.replace import clone_replace
from pytensor.tensor.variable import TensorVariable

from sgn_theano.block_layout import BlockLayout
from sgn_theano.preconditioning.curvature_diagonal import rademacher_probe
from sgn_theano.validation import is_batched

__all__ = ["HostProbe"]


class HostProbe:
    """The probe input of an SGN step, if its preconditioner takes one.

    Parameters
    ----------
    config : sgn_theano.sgn_config.SGNConfig
    outputs : TensorVariable
        The network outputs, shape ``(B, ...)``.
    params : list of shared variables
    inputs : list of TensorVariable
        The step's batch inputs, the first arrays :meth:`arrays` is given.
    dtype : str

    Attributes
    ----------
    inputs : list of TensorVariable
        The step function's probe input (one, or none).
    symbolic : list of TensorVariable, TensorVariable or None
        The probe in the step's graph: blocks shaped like the parameters, or a tensor
        shaped like the outputs.
    """

    def __init__(self, config, outputs: TensorVariable, params: Sequence,
                 inputs: Sequence[TensorVariable], dtype: str):
        named = config.named_preconditioner
        self.kind = named.probe if named is not None else None
        self.dtype, self.inputs, self.symbolic = dtype, [], None
        if self.kind == "parameters":
            layout = BlockLayout(params)
            self._size = sum(layout.sizes)
            self.inputs = [pt.vector("probe", dtype=dtype, shape=(self._size,))]
            self.symbolic = layout.split(self.inputs[0])
        elif self.kind == "outputs":
            self.inputs = [pt.tensor("curvature_probe", dtype=dtype,
                                     shape=(None,) * outputs.type.ndim)]
            self.symbolic = self.inputs[0]
            self._batch_inputs, self._shapes = list(inputs), {}
            # on one row of the batch: inputs with any number of rows stand in for them
            rows = [variable.type.clone(shape=(None, *variable.type.shape[1:]))()
                    if is_batched(variable) else variable for variable in inputs]
            trailing = clone_replace(outputs.shape[1:], replace=dict(zip(inputs, rows)),
                                     rebuild_strict=False)
            self._trailing_shape = pytensor.function(
                rows, trailing, on_unused_input="ignore",
                mode=Mode(linker="py", optimizer="fast_compile"))

    def arrays(self, batch: Sequence[np.ndarray], step: int, offset: int, rows: int,
               total: int) -> list[np.ndarray]:
        """The probe of step ``step`` for this process: ``[]``, the parameters' probe,
        or rows ``[offset, offset + rows)`` of the outputs' probe for ``total`` curvature
        rows (``batch``, the checked arrays, gives the outputs' trailing shape)."""
        if self.kind == "parameters":
            return [rademacher_probe(self._size, step, self.dtype)]
        if self.kind == "outputs":
            return [rademacher_probe((total, *self._outputs_shape(batch)), step,
                                     self.dtype)[offset:offset + rows]]
        return []

    def _outputs_shape(self, batch: Sequence[np.ndarray]) -> tuple[int, ...]:
        """The outputs' shape past the batch axis, for a batch of these input shapes
        (computed on one row, once per shape)."""
        arrays = batch[:len(self._batch_inputs)]
        key = tuple(np.shape(array)[1:] for array in arrays)
        if key not in self._shapes:
            first = [array[:1] if is_batched(array) else array for array in arrays]
            self._shapes[key] = tuple(int(size) for size in self._trailing_shape(*first))
        return self._shapes[key]
