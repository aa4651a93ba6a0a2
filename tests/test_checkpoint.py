"""Checkpoint files round-trip arrays bit for bit, and refuse what they cannot store."""

import math
import os

import numpy as np
import pytest

from sgn_theano.bench.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_keeps_bits_shapes_and_dtypes(tmp_path):
    tree = {
        "scalar": np.array(1.5e-3), "count": np.int64(7), "ints": np.arange(5, dtype=np.int32),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "single": np.array([np.nan, -0.0, 1e-45], dtype=np.float32),
        "nested": {"list": [np.ones((0, 3)), None, "text", True, math.nan]},
    }
    path = tmp_path / "state.ckpt"
    save_checkpoint(path, tree)
    loaded = load_checkpoint(path)
    for key in ("scalar", "ints", "fortran", "single"):
        assert loaded[key].shape == tree[key].shape and loaded[key].dtype == tree[key].dtype
        assert loaded[key].tobytes(order="A") == tree[key].tobytes(order="A")
    assert loaded["count"] == 7
    empty, none, text, flag, nan = loaded["nested"]["list"]
    assert empty.shape == (0, 3) and none is None and text == "text" and flag is True
    assert math.isnan(nan)
    assert os.listdir(tmp_path) == ["state.ckpt"]  # no temporary file left behind


def test_unstorable_values_are_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "state.ckpt"
    with pytest.raises(TypeError, match="Cannot store object"):
        save_checkpoint(path, {"thing": object()})
    with pytest.raises(TypeError, match="string keys"):
        save_checkpoint(path, {1: np.zeros(2)})
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError):
        load_checkpoint(path)
