"""One flat vector for a list of tensors: the layout conjugate gradient works in.

A network's parameters are many tensors (a weight matrix and a bias per layer). CG's
vector work (axpys, inner products, the preconditioner product) done block by block
puts one node per block and operation into every iteration; on one flat vector it is a
handful of nodes whatever the depth, which the backends fuse into a few loops, and the
graph is cheaper to rewrite and compile. :class:`BlockLayout` concatenates blocks into
that vector (:meth:`~BlockLayout.flatten`) and cuts it back into views shaped like the
blocks (:meth:`~BlockLayout.split`); only the curvature product needs the blocks.

Two type aliases name what the library passes around: ``Blocks``, a list of tensors
shaped like the parameters (a CG vector, a gradient), and ``Operator``, a linear map on
blocks (:math:`v \\mapsto G v`, a preconditioner).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.tensor.variable import TensorVariable

__all__ = ["BlockLayout", "Blocks", "Operator", "static_shapes", "with_static_shapes"]

#: Tensors shaped like the parameters, one per parameter: a vector of CG, a gradient.
Blocks = list[TensorVariable]
#: A linear map on blocks, such as :math:`v \\mapsto G v` or a preconditioner.
Operator = Callable[[Blocks], Blocks]


def static_shapes(variables: Sequence[TensorVariable]) -> list[tuple | None]:
    """Each variable's shape as Python integers where it is known before compiling: its
    type's static shape, or a shared variable's current value's; ``None`` otherwise."""
    shapes = []
    for variable in variables:
        if all(length is not None for length in variable.type.shape):
            shapes.append(tuple(int(length) for length in variable.type.shape))
        elif isinstance(variable, SharedVariable):
            shapes.append(tuple(int(length) for length in
                                variable.get_value(borrow=True, return_internal_type=True).shape))
        else:
            shapes.append(None)
    return shapes


def with_static_shapes(blocks: Blocks, like: Sequence[TensorVariable]) -> Blocks:
    """``blocks`` with the :func:`static_shapes` of ``like`` (``pt.specify_shape``) where
    those are known: a flat vector of them is then cut at constant offsets."""
    return [pt.specify_shape(block, shape) if shape is not None else block
            for block, shape in zip(blocks, static_shapes(like))]


class BlockLayout:
    """Where each block of a list of tensors sits in one flat vector.

    Block :math:`i` of shape :math:`s_i` occupies entries
    :math:`[o_i, o_i + \\prod s_i)` of the flat vector, :math:`o_i = \\sum_{j<i}
    \\prod s_j`, in C order. Shapes known before compiling (:func:`static_shapes`) give
    constant offsets and reshapes, which every backend needs inside a loop (JAX
    reshapes only to concrete shapes); unknown ones are read from the blocks' symbolic
    shapes.

    A single one-dimensional block is its own flat vector: :meth:`flatten` and
    :meth:`split` then add no node.

    Parameters
    ----------
    like : list of TensorVariable
        Blocks with the shapes of the layout (any dtypes).
    """

    def __init__(self, like: Sequence[TensorVariable]):
        known = static_shapes(like)
        self.ndims = [block.type.ndim for block in like]
        self.shapes = [shape if shape is not None else tuple(block.shape)
                       for shape, block in zip(known, like)]
        self.sizes = [math.prod(shape) if shape is not None else pt.prod(block.shape)
                      for shape, block in zip(known, like)]
        self.trivial = len(like) == 1 and self.ndims[0] == 1

    def flatten(self, blocks: Sequence[TensorVariable]) -> TensorVariable:
        """The blocks concatenated, each raveled in C order: a vector."""
        if self.trivial:
            return blocks[0]
        return pt.concatenate([block.ravel() for block in blocks])

    def split(self, flat: TensorVariable) -> Blocks:
        """The blocks of ``flat``: views of its slices, reshaped like the layout's blocks."""
        if self.trivial:
            return [flat]
        blocks, offset = [], 0
        for shape, size, ndim in zip(self.shapes, self.sizes, self.ndims):
            piece = flat[offset : offset + size]
            if isinstance(size, int):  # a static shape, even for a vector
                piece = piece.reshape(shape)
            elif ndim != 1:
                piece = piece.reshape(shape, ndim=ndim)
            blocks.append(piece)
            offset = offset + size
        return blocks
