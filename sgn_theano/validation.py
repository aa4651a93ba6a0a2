"""Checks of user input shared by every optimizer: graphs, hyperparameters, batches.

Each check raises ``TypeError`` for the wrong kind of thing and ``ValueError`` for a
wrong value, with a message that names the argument, and runs before anything is
compiled or changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytensor
import pytensor.tensor
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant, Variable
from pytensor.graph.replace import graph_replace
from pytensor.raise_op import CheckAndRaise
from pytensor.graph.traversal import ancestors
from pytensor.tensor.variable import TensorVariable

from sgn_theano.errors import SGNInputError, SGNInputTypeError

__all__ = [
    "HostChecks",
    "batched",
    "is_batched",
    "is_device_array",
    "non_finite_message",
    "check_batch",
    "check_computed_from",
    "check_float",
    "check_graph",
    "check_inputs",
    "check_integer",
    "check_loss",
    "check_matching_blocks",
    "check_params",
    "free_inputs",
    "get_or_compute_grads",
    "scalar_hyperparameter",
    "set_checked_values",
]


def is_batched(item) -> bool:
    """Whether a symbolic input or an array has a batch axis: at least one dimension,
    the first the batch's (a scalar input, such as a learning rate, is not cut into
    rows)."""
    return (item.type.ndim if isinstance(item, Variable) else np.ndim(item)) >= 1


def batched(items: Sequence) -> list:
    """The items of ``items`` with a batch axis (:func:`is_batched`)."""
    return [item for item in items if is_batched(item)]


def check_params(params: Sequence) -> list[SharedVariable]:
    """Return ``params`` as a list after checking they are distinct float shared tensors."""
    if isinstance(params, Variable) or not isinstance(params, (list, tuple)):
        raise SGNInputTypeError("`params` must be a list of shared variables, got "
                                f"{type(params).__name__}.")
    if not params:
        raise SGNInputError("`params` is empty: pass the shared variables to optimize.")
    seen = {}
    for i, param in enumerate(params):
        if not isinstance(param, SharedVariable) or not isinstance(param, TensorVariable):
            raise SGNInputTypeError(
                f"Element {i} of `params` ({param!r}) is not a shared tensor variable; "
                "create parameters with `pytensor.shared(numpy_array)`."
            )
        if not param.dtype.startswith("float"):
            raise SGNInputTypeError(f"Element {i} of `params` ({param.name}) has dtype "
                                    f"{param.dtype}; parameters must be floating point.")
        if id(param) in seen:
            raise SGNInputError(f"Elements {seen[id(param)]} and {i} of `params` are the same "
                                f"variable ({param.name}); list each parameter once.")
        seen[id(param)] = i
    return list(params)


def check_loss(loss) -> TensorVariable:
    """Check ``loss`` is a scalar floating-point symbolic variable."""
    if not isinstance(loss, TensorVariable):
        raise SGNInputTypeError("`loss` must be a symbolic PyTensor scalar, got "
                                f"{type(loss).__name__}.")
    if loss.type.ndim != 0:
        raise SGNInputError(f"`loss` must be a scalar (a mean over the batch), got a tensor with "
                            f"{loss.type.ndim} dimensions; reduce it with `.mean()`.")
    if not loss.dtype.startswith("float"):
        raise SGNInputTypeError(f"`loss` must be floating point, got dtype {loss.dtype}.")
    return loss


def check_computed_from(loss: TensorVariable, outputs) -> None:
    """Check ``outputs`` is a symbolic tensor that ``loss`` is computed from."""
    if not isinstance(outputs, TensorVariable):
        raise SGNInputTypeError(f"`outputs` must be a symbolic PyTensor tensor, got "
                                f"{type(outputs).__name__}.")
    if outputs not in ancestors([loss]):
        raise SGNInputError("`loss` is not computed from `outputs`: pass the variable the loss "
                            "was built from (the logits, or the linear regression output).")


def check_matching_blocks(name: str, references: Sequence, blocks: Sequence, what: str):
    """Check ``blocks`` has one entry per reference, each with the same number of dims."""
    if len(references) != len(blocks):
        raise SGNInputError(f"`{name}` has {len(blocks)} entries but there are "
                            f"{len(references)} {what}.")
    for i, (reference, block) in enumerate(zip(references, blocks)):
        if reference.type.ndim != block.type.ndim:
            raise SGNInputError(f"Element {i} of `{name}` has {block.type.ndim} dimensions, "
                                f"but the matching {what[:-1]} has {reference.type.ndim}.")


def check_graph(loss: TensorVariable, outputs, params: Sequence[SharedVariable]) -> str:
    """Check ``loss`` <- ``outputs`` <- every parameter; return the common float dtype."""
    check_computed_from(loss, outputs)
    upstream = set(ancestors([outputs]))
    for i, param in enumerate(params):
        if param not in upstream:
            raise SGNInputError(f"`outputs` do not depend on element {i} of `params` "
                                f"({param.name}); remove it or fix the model.")
    dtypes = {param.dtype for param in params} | {outputs.dtype, loss.dtype}
    if len(dtypes) != 1:
        raise SGNInputTypeError(f"`params`, `outputs` and `loss` must share one dtype, got "
                                f"{sorted(dtypes)}; build the model in one floatX.")
    return loss.dtype


def get_or_compute_grads(loss_or_grads, params: Sequence) -> list[TensorVariable]:
    """Gradients of ``loss_or_grads`` with respect to ``params``, or the given list, checked."""
    params = check_params(params)
    if isinstance(loss_or_grads, (list, tuple)):
        if len(loss_or_grads) != len(params):
            raise SGNInputError(f"Got {len(loss_or_grads)} gradients for {len(params)} "
                                "parameters.")
        return list(loss_or_grads)
    return pytensor.grad(check_loss(loss_or_grads), params)


def check_float(
    name: str, value, *, low: float = -math.inf, high: float = math.inf,
    low_open: bool = False, high_open: bool = False,
) -> float:
    """Return ``value`` as a float after checking it is finite and within the bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SGNInputTypeError(f"`{name}` must be a number, got {type(value).__name__}.")
    value = float(value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if not math.isfinite(value) or below or above:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise SGNInputError(f"`{name}` must be a finite number in {interval}, got {value!r}.")
    return value


def scalar_hyperparameter(name: str, value, dtype: str, **bounds) -> TensorVariable:
    """A hyperparameter as a symbolic scalar of ``dtype``: a number is checked against
    ``bounds`` (see :func:`check_float`) and made a constant; a symbolic scalar (e.g. a
    shared variable, to change later without recompiling) is cast."""
    if isinstance(value, Variable):
        if getattr(value.type, "ndim", None) != 0:
            raise SGNInputError(f"`{name}` must be a scalar, got {value.type}.")
        return pytensor.tensor.cast(value, dtype)
    return pytensor.tensor.constant(check_float(name, value, **bounds), dtype=dtype)


def check_integer(name: str, value, *, low: int) -> int:
    """Return ``value`` after checking it is an integer ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SGNInputTypeError(f"`{name}` must be an integer, got {type(value).__name__}.")
    if value < low:
        raise SGNInputError(f"`{name}` must be >= {low}, got {value}.")
    return int(value)


def is_device_array(value) -> bool:
    """Whether ``value`` is an array on a JAX device (a ``jax.Array``; told apart without
    importing JAX), which the checks read without copying it to the host."""
    return not isinstance(value, np.ndarray) and hasattr(value, "block_until_ready")


def non_finite_message(inputs: Sequence[TensorVariable], index: int) -> str:
    """The error of batch array ``index`` holding NaN or infinite values."""
    return f"{_batch_label(inputs, index)} contains NaN or infinite values."


def _batch_label(inputs: Sequence[TensorVariable], index: int) -> str:
    variable = inputs[index]
    return f"batch array {index} ({variable.name or variable.type})"


def check_batch(inputs: Sequence[TensorVariable], batch: Sequence) -> list:
    """Convert one mini-batch to arrays matching ``inputs``, or raise before anything runs.

    Arrays must match each input's number of dimensions and static shape, have a
    dtype that casts to the input's within the same kind (float to float, integer to
    integer), share a non-empty first axis, and hold only finite values. An array on a
    JAX device (:func:`is_device_array`) stays there: its shape and dtype are checked
    here, its values are not (that would copy it to the host or wait for the device):
    :class:`sgn_theano.SGN` checks them only after a step that found a non-finite
    gradient, and then raises the same error with its state restored.
    """
    if len(batch) != len(inputs):
        raise SGNInputError(f"`step` takes {len(inputs)} arrays (one per input: "
                            f"{[variable.name for variable in inputs]}), got {len(batch)}.")
    arrays = []
    for i, (variable, value) in enumerate(zip(inputs, batch)):
        label = _batch_label(inputs, i)
        on_device = is_device_array(value)
        array = value if on_device else np.asarray(value)
        if array.ndim != variable.type.ndim:
            raise SGNInputError(f"{label} has {array.ndim} dimensions, expected "
                                f"{variable.type.ndim}.")
        for axis, (size, static) in enumerate(zip(array.shape, variable.type.shape)):
            if static is not None and size != static:
                raise SGNInputError(f"{label} has size {size} on axis {axis}, expected {static}.")
        dtype = np.dtype(array.dtype)
        if dtype != variable.dtype:
            if dtype.kind not in "biuf" or not np.can_cast(dtype, variable.dtype,
                                                           casting="same_kind"):
                raise SGNInputTypeError(f"{label} has dtype {dtype}, which does not convert "
                                        f"safely to the input's {variable.dtype}.")
            array = array.astype(variable.dtype)
        if not on_device and dtype.kind == "f" and not np.isfinite(array).all():
            raise SGNInputError(non_finite_message(inputs, i))
        arrays.append(array)
    sizes = {array.shape[0] for array in batched(arrays)}
    if len(sizes) > 1:
        raise SGNInputError(f"Batch arrays disagree on the batch size: {sorted(sizes)}.")
    if sizes == {0}:
        raise SGNInputError("The batch is empty.")
    return arrays


def free_inputs(loss: TensorVariable) -> list[TensorVariable]:
    """The free symbolic variables ``loss`` is computed from (neither shared nor constant)."""
    return [
        variable for variable in ancestors([loss])
        if variable.owner is None and not isinstance(variable, (SharedVariable, Constant))
    ]


def check_inputs(inputs: Sequence, loss: TensorVariable) -> list[TensorVariable]:
    """Check ``inputs`` are the free symbolic variables ``loss`` needs, and only those."""
    if isinstance(inputs, Variable) or not isinstance(inputs, (list, tuple)):
        raise SGNInputTypeError("`inputs` must be a list of symbolic variables (the batch), got "
                                f"{type(inputs).__name__}.")
    for i, variable in enumerate(inputs):
        if not isinstance(variable, TensorVariable) or variable.owner is not None or isinstance(
            variable, (SharedVariable, Constant)
        ):
            raise SGNInputTypeError(f"Element {i} of `inputs` ({variable!r}) must be a free "
                                    "symbolic tensor such as `pt.matrix('x')`.")
    free = free_inputs(loss)
    missing = [variable for variable in free if variable not in inputs]
    if missing:
        raise SGNInputError(f"`loss` needs inputs that are not in `inputs`: "
                            f"{[variable.name or str(variable) for variable in missing]}.")
    unused = [variable for variable in inputs if variable not in free]
    if unused:
        raise SGNInputError(f"`inputs` holds variables `loss` does not use: "
                            f"{[variable.name or str(variable) for variable in unused]}; leave "
                            "them out (`step` takes one array per input).")
    return list(inputs)


def set_checked_values(targets: Sequence[tuple[str, SharedVariable, object]]) -> None:
    """Give each shared variable its value, after checking them all (all or nothing).

    ``targets`` are ``(label, variable, value)``; a value whose shape or dtype differs
    from the variable's current one raises ``ValueError`` naming ``label``, before any
    variable is changed. Values are copied.
    """
    arrays = []
    for label, variable, value in targets:
        current, array = variable.get_value(borrow=True), np.asarray(value)
        if array.shape != current.shape or array.dtype != current.dtype:
            raise SGNInputError(f"{label} has shape {array.shape} and dtype {array.dtype}, "
                                f"expected {current.shape} and {current.dtype}: is it from "
                                "another model?")
        arrays.append(array)
    for (_, variable, _), array in zip(targets, arrays):
        variable.set_value(np.array(array, copy=True))


class HostChecks:
    """The library's own checks in a graph (``CheckAndRaise`` ops raising
    :class:`~sgn_theano.errors.SGNInputError`, such as the label range of
    :func:`~sgn_theano.losses.softmax_cross_entropy`), run on a batch on the host.

    JAX mode cannot raise inside a compiled function: there a failed check shows as a
    non-finite loss, and the optimizer calls this after rejecting the step to raise the
    error C and NUMBA raise. The checks compile at the first call (a failure path only),
    in the default mode (:func:`sgn_theano.compilation.modes.compile_mode`), with the
    shared variables they read as inputs, their values copied from where they are (a JAX
    device's arrays are no C-mode values).

    Parameters
    ----------
    loss : TensorVariable
        The graph whose checks run.
    inputs : list of TensorVariable
        Its free inputs, in the order of the batch arrays.
    """

    def __init__(self, loss: TensorVariable, inputs: Sequence[TensorVariable]):
        self.inputs = list(inputs)
        #: The checked values, one per library check in ``loss``'s graph.
        self.checked = [variable for variable in ancestors([loss])
                        if variable.owner is not None
                        and isinstance(variable.owner.op, CheckAndRaise)
                        and issubclass(variable.owner.op.exc_type, SGNInputError)]
        self._shared = [variable for variable in ancestors(self.checked)
                        if isinstance(variable, SharedVariable)]
        self._function = None

    def __call__(self, arrays: Sequence) -> None:
        """Raise the error of the first check that ``arrays`` (host or device arrays,
        copied to the host) fail; return quietly if they pass."""
        if not self.checked:
            return
        if self._function is None:
            from sgn_theano.compilation.modes import compile_mode

            stand_ins = [variable.type() for variable in self._shared]
            checked = graph_replace(self.checked, dict(zip(self._shared, stand_ins)))
            self._function = pytensor.function(self.inputs + stand_ins, checked,
                                               mode=compile_mode(), on_unused_input="ignore")
        self._function(*[np.asarray(array) for array in arrays],
                       *[np.asarray(variable.get_value()) for variable in self._shared])
