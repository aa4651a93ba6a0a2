"""Checkpoint files: nested dicts and lists of numpy arrays and JSON values, on disk.

One ``.npz`` archive (no pickle): the arrays are stored as ``.npy`` members, bit for
bit, and everything else as one JSON document in which each array is replaced by a
reference to its member. Files are written to a temporary name and renamed into
place, so an interrupted write never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

__all__ = ["load_checkpoint", "save_checkpoint"]

_TREE = "tree.json"
_ARRAY_KEY = "__array__"


def _encode(node: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(node, np.ndarray):
        name = f"array_{len(arrays)}"
        arrays[name] = node
        return {_ARRAY_KEY: name}
    if isinstance(node, dict):
        if not all(isinstance(key, str) for key in node):
            raise TypeError("Checkpoint dicts must have string keys.")
        return {key: _encode(value, arrays) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return [_encode(value, arrays) for value in node]
    if isinstance(node, np.generic):
        return node.item()
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise TypeError(f"Cannot store {type(node).__name__} in a checkpoint.")


def _decode(node: Any, archive: zipfile.ZipFile) -> Any:
    if isinstance(node, dict):
        if set(node) == {_ARRAY_KEY}:
            with archive.open(node[_ARRAY_KEY] + ".npy") as member:
                return np.lib.format.read_array(member, allow_pickle=False)
        return {key: _decode(value, archive) for key, value in node.items()}
    if isinstance(node, list):
        return [_decode(value, archive) for value in node]
    return node


def save_checkpoint(path: str | os.PathLike, tree: dict) -> None:
    """Write ``tree`` (dicts with string keys, lists, arrays, numbers, strings, None)
    to ``path`` atomically."""
    arrays: dict[str, np.ndarray] = {}
    document = json.dumps(_encode(tree, arrays))
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".checkpoint-")
    try:
        with os.fdopen(handle, "wb") as stream:
            with zipfile.ZipFile(stream, "w") as archive:
                archive.writestr(_TREE, document)
                for name, array in arrays.items():
                    buffer = io.BytesIO()
                    np.lib.format.write_array(buffer, np.asarray(array),
                                              allow_pickle=False)
                    archive.writestr(name + ".npy", buffer.getvalue())
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a tree written by :func:`save_checkpoint`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a checkpoint written by :func:`save_checkpoint`.
    """
    try:
        with zipfile.ZipFile(os.fspath(path)) as archive:
            return _decode(json.loads(archive.read(_TREE)), archive)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not an sgn_theano checkpoint ({error}).") from None
