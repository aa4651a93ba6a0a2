"""PyTensor's last merge pass, without the merges that the destroy handler must refuse.

PyTensor's ``merge3`` rewrite (position 100, after the in-place rewrites) merges
identical nodes. It is meant to skip a pair when one of them is overwritten in place,
but its test, ``i in flatten(c.op.destroy_map.values())``, is never true in PyTensor
3.0.7 (``flatten`` leaves a ``dict_values`` object whole). So it tries every pair of
identical in-place buffers, for example the ``AllocEmpty(1)`` output buffers of the
``CGemv`` calls that vector dot products become in the C backend, and each try fails
validation ("Multiple destroyers") and is undone. Undoing re-imports the nodes, which
schedules the same merges again: the tries grow with the square of the number of such
buffers, each costing a scan over the clients of their inputs.

A constant merged late (a user-written loss's ``arange`` brings new int8 constants)
starts that cascade: an SGN step on a 784-20-20-10 relu MLP with a hand-written softmax
cross-entropy spent nearly all of its construction in thousands of failed merges
(figures in the docs, "Performance"). :func:`with_destroy_aware_merge`
swaps ``merge3`` for :class:`DestroyAwareMerge`, which skips those pairs.
"""

from __future__ import annotations

from pytensor.compile.mode import Mode
from pytensor.graph.fg import FunctionGraph
from pytensor.graph.rewriting.basic import MergeOptimizer

__all__ = ["DestroyAwareMerge", "LAST_MERGE", "rewrite_names", "with_destroy_aware_merge"]

#: PyTensor's merge pass that runs after the in-place rewrites (position 100).
LAST_MERGE = "merge3"
#: Where the replacement goes: rewrites at one position run in the order of their
#: names, and ``merge3`` comes after every other rewrite at 100 (the JAX and NUMBA
#: modes have some there).
REPLACEMENT_POSITION = 100.5


def _overwritten(fgraph: FunctionGraph, variable) -> bool:
    """Whether a client of ``variable`` overwrites it in place."""
    return any(
        any(index in destroyed for destroyed in client.op.destroy_map.values())
        for client, index in fgraph.clients.get(variable, ())
    )


class _Schedule(list):
    """A :class:`~pytensor.graph.rewriting.basic.MergeFeature` schedule whose ``pop``
    drops the candidate merges in which either side is overwritten in place."""

    def __init__(self, fgraph: FunctionGraph, groups):
        super().__init__(groups)
        self.fgraph = fgraph

    def pop(self, *index):
        group = super().pop(*index)
        return [pairs for pairs in group
                if not (_overwritten(self.fgraph, pairs[0][0])
                        or _overwritten(self.fgraph, pairs[0][1]))]


class DestroyAwareMerge(MergeOptimizer):
    """:class:`~pytensor.graph.rewriting.basic.MergeOptimizer` that never tries to
    merge a node whose output, or whose candidate's output, is overwritten in place
    (what PyTensor's own test means to do)."""

    def apply(self, fgraph: FunctionGraph):
        feature = fgraph.merge_feature
        feature.scheduled = _Schedule(fgraph, feature.scheduled)
        try:
            return super().apply(fgraph)
        finally:
            feature.scheduled = list(feature.scheduled)


def with_destroy_aware_merge(mode: Mode) -> Mode:
    """``mode`` with its last merge pass replaced by :class:`DestroyAwareMerge`.

    A mode whose rewrites do not include ``merge3`` (``FAST_COMPILE``, a custom
    rewriter) is returned unchanged.
    """
    if LAST_MERGE not in rewrite_names(mode):
        return mode
    return mode.excluding(LAST_MERGE).register((DestroyAwareMerge(), REPLACEMENT_POSITION))


def rewrite_names(mode: Mode) -> list[str]:
    """Names of the graph rewriters ``mode`` runs, in order (empty if it runs one
    rewriter that is not a sequence)."""
    return [getattr(rewriter, "name", None) for rewriter in getattr(mode.optimizer, "data", ())]
