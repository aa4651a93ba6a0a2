"""Softmax and log-softmax as elementwise code in the C backend (PyTensor 3).

In PyTensor 3, ``pt.special.softmax`` and ``log_softmax`` are symbolic ops
(``OpFromGraph``) with no C code: the C backend runs each through a Python call into a
function of its own, compiled on its first call. Every compiled function that contains
one (a loss and its gradient, an SGN step, which also holds the softmax of the loss
Hessian product) paid that compilation, about a second per op on a warm cache, and a
Python call per use. :func:`with_inlined_softmax` adds a rewrite that replaces them by
their inner graphs (:math:`z - \\max z - \\log \\sum e^{z - \\max z}`, and
:math:`e^{z - \\max z} / \\sum e^{z - \\max z}`), after the stabilizing and specializing
rewrites have seen the ops whole and before elementwise fusion, so the C backend fuses
them with their neighbours. The NUMBA and JAX backends have kernels of their own for
these ops and keep them. PyTensor 2.38's softmax ops have C code of their own: there both
functions change nothing (:data:`sgn_theano.compat.GRAPH_SOFTMAX_OPS` is empty).

The inner functions of ``scan`` loops are compiled in a mode of their own (PyTensor's
C backend, unless built inside
:func:`sgn_theano.compilation.loop_invariants.loops_compiled_in`), which the rewrite may
not reach: :func:`inline_softmax_graph` inlines the ops when a loop body is built
(:func:`sgn_theano.compilation.loop_invariants.hoist_loop_invariants`).
"""

from __future__ import annotations

from collections.abc import Sequence

from pytensor.compile.mode import Mode
from pytensor.graph.basic import Variable
from pytensor.graph.rewriting.basic import dfs_rewriter, node_rewriter
from pytensor.graph.traversal import toposort
from pytensor.tensor.rewriting.ofg import inline_ofg_node
from pytensor.tensor.special import LogSoftmax, Softmax

from sgn_theano.compat import GRAPH_SOFTMAX_OPS

__all__ = ["INLINE_POSITION", "inline_softmax", "inline_softmax_graph", "with_inlined_softmax"]

#: After ``uncanonicalize`` (3) and before elementwise fusion (49).
INLINE_POSITION = 3.5


@node_rewriter([Softmax, LogSoftmax])
def inline_softmax(fgraph, node):
    """Replace a softmax or log-softmax node by its inner graph."""
    if isinstance(node.op, GRAPH_SOFTMAX_OPS):
        return inline_ofg_node(node)
    return None


def with_inlined_softmax(mode: Mode) -> Mode:
    """``mode`` with softmax and log-softmax inlined (see the module docstring)."""
    if not GRAPH_SOFTMAX_OPS:
        return mode
    return mode.register((dfs_rewriter(inline_softmax), INLINE_POSITION))


def inline_softmax_graph(outputs: Sequence[Variable],
                         inputs: Sequence[Variable]) -> list[Variable]:
    """``outputs`` rebuilt with every softmax and log-softmax node computed from
    ``inputs`` replaced by its inner graph (the same values). Only the nodes computed
    from ``inputs`` are rebuilt; the rest of the graph is shared, not copied."""
    variant, rebuilt, found = set(inputs), {}, False
    for node in toposort(outputs, blockers=inputs):
        if not any(inp in variant for inp in node.inputs):
            continue
        variant.update(node.outputs)
        new_node = node.clone_with_new_inputs([rebuilt.get(inp, inp) for inp in node.inputs])
        inline = isinstance(node.op, GRAPH_SOFTMAX_OPS)
        found = found or inline
        rebuilt.update(zip(node.outputs,
                           inline_ofg_node(new_node) if inline else new_node.outputs))
    if not found:
        return list(outputs)
    return [rebuilt.get(output, output) for output in outputs]
