"""One flat vector for a list of blocks: round trips, static and symbolic shapes."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from helpers import TEST_MODE

from sgn_theano.block_layout import BlockLayout, static_shapes

SHAPES = [(2, 3), (3,), (), (1, 2, 2)]


def blocks_like(shapes, static):
    return [pt.tensor(f"b{i}", dtype="float64",
                      shape=shape if static else (None,) * len(shape))
            for i, shape in enumerate(shapes)]


@pytest.mark.parametrize("static", [True, False])
def test_flatten_then_split_is_the_identity_in_c_order(static):
    blocks = blocks_like(SHAPES, static)
    layout = BlockLayout(blocks)
    flat = layout.flatten(blocks)
    values = [np.arange(np.prod(shape), dtype="float64").reshape(shape) + 10 * i
              for i, shape in enumerate(SHAPES)]
    function = pytensor.function(blocks, [flat, *layout.split(flat)], mode=TEST_MODE)
    flat_value, *pieces = function(*values)
    np.testing.assert_array_equal(flat_value,
                                  np.concatenate([value.ravel() for value in values]))
    for piece, value in zip(pieces, values):
        assert piece.shape == value.shape
        np.testing.assert_array_equal(piece, value)


def test_known_shapes_give_constant_offsets():
    layout = BlockLayout(blocks_like(SHAPES, static=True))
    assert layout.sizes == [6, 3, 1, 4]
    flat = pt.vector("flat", dtype="float64")
    for piece, shape in zip(layout.split(flat), SHAPES):
        assert piece.type.shape == shape  # static: JAX can reshape inside a loop


def test_shared_variables_contribute_their_values_shapes():
    shared = pytensor.shared(np.zeros((4, 5)))
    assert shared.type.shape == (None, None)
    assert static_shapes([shared, pt.matrix(), pt.tensor(shape=(2, 3))]) == [
        (4, 5), None, (2, 3)]


def test_one_vector_is_its_own_flat_vector():
    vector = pt.vector("v")
    layout = BlockLayout([vector])
    assert layout.flatten([vector]) is vector
    assert layout.split(vector) == [vector]
