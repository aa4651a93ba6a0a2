"""Shapes JAX can see: the arithmetic on array shapes done while JAX traces, on the host.

``jax.jit`` traces a function with its arguments' shapes known, and every size, reshape
and slice bound must be a concrete integer then. PyTensor's JAX backend reads an array's
shape as Python integers, but computes everything after that with ``jax.numpy``: the
flattened size of a convolution's feature maps (``x.shape[0] * 25`` after PyTensor's shape
rewrites), a ``scan``'s number of steps, a slice ``x[:n]``. Under ``jit`` each of those is
a tracer, and ``jnp.reshape`` refuses it ("Shapes must be 1D sequences of concrete values
of integer type") as does indexing ("Slice entries must be static integers"): LeNet-5 and
every ``scan`` over a reshaped input failed to compile, whatever the optimizer.

:func:`register_traced_shapes` makes every node whose outputs are numbers or integer and
boolean vectors (shapes, sizes, slice bounds, the scalars computed from them, their
checks), loops and random draws aside, run on the host with the op's own Python
implementation when none of its inputs is a tracer, at trace time, so its outputs stay
concrete for the nodes after it; a node with a traced input, or whose outputs turn out
larger than :data:`MAX_HOST_SIZE` elements, runs as PyTensor translates it. Nothing changes at run time: XLA sees constants where it saw arithmetic on
constants. ``jit`` traces anew for each new input shape, so the batch size stays free.

A reshape takes any shape that is concrete while tracing; one that depends on the values
of arrays, and an op JAX has no translation for, raise ``NotImplementedError`` naming the
node and what to change.

Checks (``CheckAndRaise``, ``Assert``) whose conditions are concrete then run while
tracing: a shape mismatch raises the op's own error at the first call of that shape.
Checks on values JAX traces are dropped as PyTensor drops them, with its warning once per
check message and process, except the library's own (errors of
:class:`~sgn_theano.errors.SGNInputError`): :class:`~sgn_theano.optimizer.SGN` runs those
on the host after a step that found a non-finite loss
(:func:`sgn_theano.losses.softmax_cross_entropy` makes an out-of-range label's loss NaN).
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["MAX_HOST_SIZE", "register_traced_shapes"]

#: The most elements an output computed on the host while tracing may have; a larger one
#: (``pt.arange(batch)``...) is computed by JAX, as PyTensor translates it.
MAX_HOST_SIZE = 32

_REGISTERED = False
_WARNED_CHECKS: set[str] = set()


def register_traced_shapes() -> None:
    """Register the host evaluation of shape nodes, and the translations of reshapes and
    checks, with PyTensor's JAX backend (idempotent; imports JAX)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import jax
    from pytensor.graph.basic import Constant
    from pytensor.graph.fg import FunctionGraph
    from pytensor.link.jax.dispatch import jax_funcify
    from pytensor.link.jax.dispatch.basic import jax_typify
    from pytensor.link.utils import fgraph_to_python
    from pytensor.raise_op import CheckAndRaise
    from pytensor.tensor.shape import Reshape

    from sgn_theano.errors import SGNInputError

    @jax_funcify.register(FunctionGraph)
    def graph_with_host_shapes(fgraph, node=None, fgraph_name="jax_funcified_fgraph",
                               **kwargs):
        return fgraph_to_python(fgraph, _on_host_while_concrete(jax_funcify),
                                type_conversion_fn=jax_typify, fgraph_name=fgraph_name,
                                **kwargs)

    @jax_funcify.register(Reshape)
    def reshape_to_concrete_shape(op, node=None, **kwargs):
        shape = node.inputs[1]

        def reshape(x, sizes):
            if isinstance(shape, Constant):
                return jax.numpy.reshape(x, tuple(int(size) for size in shape.data))
            sizes = list(sizes)
            if any(isinstance(size, jax.core.Tracer) for size in sizes):
                raise NotImplementedError(
                    f"JAX mode cannot compile {node}: the shape it reshapes to depends on "
                    f"the values of arrays, not only on their shapes and on constants "
                    f"({shape}). Compute the shape from `x.shape` and constants (or use "
                    f"-1 for one axis), or compile in mode 'C' or 'NUMBA'.")
            return jax.numpy.reshape(x, tuple(int(size) for size in sizes))
        return reshape

    @jax_funcify.register(CheckAndRaise)
    def check_where_concrete(op, node=None, **kwargs):
        def check_or_skip(value, *conditions):
            if not any(isinstance(condition, jax.core.Tracer) for condition in conditions):
                if not all(np.all(np.asarray(condition)) for condition in conditions):
                    raise op.exc_type(op.msg)
            elif not issubclass(op.exc_type, SGNInputError) and op.msg not in _WARNED_CHECKS:
                _WARNED_CHECKS.add(op.msg)
                warnings.warn(f"JAX mode cannot run the check {op} on traced values "
                              f"(assertion: {op.msg}); it is skipped.", UserWarning,
                              stacklevel=2)
            return value
        return check_or_skip

    _REGISTERED = True


def _small_outputs(node) -> bool:
    """Whether every output of ``node`` is a number, or an integer or boolean vector (a
    shape, a size, a scalar computed from them...). A float vector is data (a buffer
    that later nodes may update in place, which a host array cannot be in JAX)."""
    def small(variable) -> bool:
        ndim = getattr(variable.type, "ndim", 2)
        dtype = getattr(variable.type, "dtype", None)
        return dtype is not None and (ndim == 0 or ndim == 1 and np.dtype(dtype).kind in "biu")
    return all(small(output) for output in node.outputs)


def _on_host_while_concrete(translate):
    """An op translator for ``fgraph_to_python``: ``translate`` (PyTensor's JAX
    translation), wrapped by :func:`_host_or_traced` for the nodes whose outputs are
    numbers or integer vectors (:func:`_small_outputs`), and its refusals reworded to name
    the node and what to do."""
    from pytensor.graph.op import HasInnerGraph
    from pytensor.link.jax.dispatch.shape import JAXShapeTuple
    from pytensor.scalar import Composite
    from pytensor.tensor.elemwise import Elemwise
    from pytensor.tensor.random.op import RandomVariable

    def op_conversion(op, node=None, **kwargs):
        try:
            traced = translate(op, node=node, **kwargs)
        except NotImplementedError as error:
            raise NotImplementedError(
                f"JAX mode cannot compile {node if node is not None else op}: {error} "
                f"Write this part of the graph with ops PyTensor's JAX backend has, or "
                f"compile in mode 'C' or 'NUMBA'.") from error
        # A shape tuple's translation returns its inputs, concrete where they are; loops
        # and other inner graphs (but scalar ones) would compile theirs on the host.
        inner = op.scalar_op if isinstance(op, Elemwise) else op
        if (node is None or isinstance(op, RandomVariable | JAXShapeTuple)
                or isinstance(inner, HasInnerGraph) and not isinstance(inner, Composite)
                or not _small_outputs(node)):
            return traced
        return _host_or_traced(node, traced)
    return op_conversion


def _host_or_traced(node, traced):
    """The JAX function of ``node``: the op's Python implementation on the host when no
    argument is a tracer and every output has at most :data:`MAX_HOST_SIZE` elements,
    else ``traced``."""
    import jax

    storage = {variable: [None] for variable in (*node.inputs, *node.outputs)}
    computed = {variable: [variable in node.inputs] for variable in storage}
    dtypes = [getattr(variable.type, "dtype", None) for variable in node.inputs]
    thunks = []  # made at the first evaluation on the host

    def host_or_traced(*arguments):
        if any(isinstance(argument, jax.core.Tracer) for argument in arguments):
            return traced(*arguments)
        if not thunks:
            thunks.append(node.op.make_thunk(node, storage, computed, [], impl="py"))
        for variable, dtype, argument in zip(node.inputs, dtypes, arguments):
            storage[variable][0] = (argument if dtype is None
                                    else np.asarray(argument, dtype=dtype))
        for output in node.outputs:
            storage[output][0], computed[output][0] = None, False
        thunks[0]()
        results = [storage[output][0] for output in node.outputs]
        if any(result is None or np.size(result) > MAX_HOST_SIZE for result in results):
            return traced(*arguments)
        return results[0] if len(results) == 1 else tuple(results)
    return host_or_traced
