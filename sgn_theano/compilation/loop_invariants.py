"""Building ``scan`` loops cheaply: hoisting loop-invariant work out of their bodies, and
keeping ``scan`` from analysing the whole graph behind their inputs.

``pytensor.scan`` captures every variable its inner function uses *up to the roots of
the graph*: a loop body that multiplies by a network's Jacobian would recompute the
network's forward pass on every iteration, and a line search after a CG loop would
rerun the whole CG loop on every try. :func:`hoist_loop_invariants` builds the body
once on placeholders and cuts it where it stops depending on them, so the invariant
part is computed once, outside, and merged with the rest of the step's graph.
:func:`scan_on_stand_ins` builds the loop on stand-ins for its outer inputs, its body
compiled in the mode :func:`loops_compiled_in` names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import pytensor
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant, Variable
from pytensor.graph.replace import clone_replace, graph_replace
from pytensor.graph.traversal import toposort
from pytensor.scalar import ScalarType
from pytensor.tensor.basic import scalar_from_tensor, tensor_from_scalar
from pytensor.tensor.type import TensorType

from sgn_theano.block_layout import Blocks, Operator
from sgn_theano.compilation.softmax_inlining import inline_softmax_graph

__all__ = ["hoist_loop_invariants", "loops_compiled_in", "scan_on_stand_ins"]


#: The mode the bodies of the loops built now compile in (``None``: PyTensor's default for
#: a ``scan``, its C backend with ``fast_run`` rewrites, whatever the outer mode).
_LOOP_MODE: ContextVar = ContextVar("sgn_theano_loop_mode", default=None)


@contextmanager
def loops_compiled_in(mode) -> Iterator[None]:
    """Build the loops of :func:`scan_on_stand_ins` inside this block with their body
    compiled in ``mode`` (a ``Mode`` or its name), as the function around them is.

    A ``scan`` made without a mode compiles its body in PyTensor's C backend even inside
    a function compiled in ``FAST_COMPILE`` (Python linker): every C op of a CG loop's
    body then goes through gcc on first use. :class:`sgn_theano.SGN` builds its step
    inside this block, with the mode it compiles the step in.
    """
    token = _LOOP_MODE.set(mode)
    try:
        yield
    finally:
        _LOOP_MODE.reset(token)


def hoist_loop_invariants(
    operator: Operator, like: Blocks
) -> tuple[Callable[[Blocks, Blocks], Blocks], Blocks]:
    """Split a loop body into loop-invariant inputs and the part that needs the state.

    ``operator`` (the loop body: state list -> result list) is built once on placeholder
    variables of the types of ``like``, with softmax and log-softmax inlined
    (:func:`sgn_theano.compilation.softmax_inlining.inline_softmax_graph`). Every
    subexpression that does not depend on the placeholders but feeds one that does (the
    forward-pass activations of a network,
    the tolerance of a solver) becomes an *invariant*: computed once outside the loop
    and handed to it.

    Returns
    -------
    body : callable
        ``body(state, invariants) -> operator(state)``, rebuilt on the inner variables
        ``scan`` passes in.
    invariants : list of Variable
        The outer variables to pass to ``scan`` as non-sequences (tensors: a scalar
        index, as slicing makes, travels as a 0-d tensor and is unwrapped inside).
    """
    placeholders = [block.type() for block in like]
    # scan compiles its body in a mode of its own, which would not inline these
    results = inline_softmax_graph(operator(placeholders), placeholders)
    variant = set(placeholders)
    hoisted: list[Variable] = []  # the variables of the body that are cut off
    invariants: list[Variable] = []  # what scan is handed for each

    def hoist(variable):
        if variable in variant or variable in hoisted or isinstance(
            variable, (Constant, SharedVariable)
        ):
            return
        if isinstance(variable.type, ScalarType):
            invariants.append(tensor_from_scalar(variable))
        elif isinstance(variable.type, TensorType):
            invariants.append(variable)
        else:  # other kinds stay in the body (scan recomputes them)
            return
        hoisted.append(variable)

    for node in toposort(results):
        if any(inp in variant for inp in node.inputs):
            variant.update(node.outputs)
            for inp in node.inputs:
                hoist(inp)
    for result in results:
        hoist(result)

    def body(vectors: Blocks, inner_invariants: Blocks) -> Blocks:
        replace = dict(zip(placeholders, vectors))
        for variable, inner in zip(hoisted, inner_invariants):
            scalar = isinstance(variable.type, ScalarType)
            replace[variable] = scalar_from_tensor(inner) if scalar else inner
        # clone_replace, not graph_replace: PyTensor 2.38's refuses a key that another
        # key hides from the results (an invariant computed from another one)
        return clone_replace(results, replace=replace)

    return body, invariants


def scan_on_stand_ins(
    step: Callable,
    outputs_info: Sequence[Variable | None],
    non_sequences: Sequence[Variable],
    n_steps: int,
) -> list[Variable]:
    """``pytensor.scan`` built on stand-ins for its outer inputs, then given the real ones.

    ``scan`` infers the shape of each initial state (to allocate its trace) by loading
    that state's whole graph into a shape-inference graph, which for a CG state made
    from a CNN's gradient dominated the build of the SGN step. Fresh variables of the
    same types have no graph behind them; the real inputs are substituted into the
    finished loop.

    Parameters
    ----------
    step : callable
        The inner function, as for ``pytensor.scan``.
    outputs_info : list of Variable or None
        Initial states (``None`` for outputs that are not fed back).
    non_sequences : list of Variable
        The loop's constant inputs.
    n_steps : int
        Largest number of iterations.

    Returns
    -------
    list of Variable
        The traces ``pytensor.scan(..., return_list=True)`` returns.
    """
    outer = [variable for variable in (*outputs_info, *non_sequences) if variable is not None]
    stand_ins = {variable: variable.type() for variable in outer}
    traces = pytensor.scan(
        step,
        outputs_info=[None if v is None else stand_ins[v] for v in outputs_info],
        non_sequences=[stand_ins[v] for v in non_sequences],
        n_steps=n_steps,
        return_list=True,
        return_updates=False,
        mode=_LOOP_MODE.get(),
        allow_gc=True,  # as a scan without a mode does: the body frees its intermediates
    )
    return graph_replace(traces, replace={stand_in: real for real, stand_in in stand_ins.items()})
