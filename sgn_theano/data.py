"""Readers for standard data files, and a mini-batch stream.

Every loader returns ``(x_train, y_train, x_test, y_test)``: images float32 in
``[0, 1]``, labels int32. A missing file raises ``FileNotFoundError`` naming it and
saying where the data set comes from; no loader downloads anything.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = [
    "FASHION_MNIST_DIR",
    "load_fashion_mnist",
    "load_mnist",
    "minibatches",
    "read_idx",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped if its name ends in ``.gz``.

    The header is two zero bytes, a type code, the number of dimensions ``n`` and
    ``n`` big-endian int32 sizes; the data follow in C order.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as stream:
        raw = stream.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    ndim = raw[3]
    shape = tuple(int(size) for size in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(f"{path} holds {len(raw) - offset} data bytes, but its header "
                         f"announces shape {shape} ({expected} bytes).")
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape)


def _find(directory: str, stem: str, how_to_get: str) -> str:
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(
        f"{os.path.join(directory, stem)}[.gz] not found. {how_to_get}")


def _load_idx_set(directory: str, how_to_get: str, flatten: bool):
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Data directory {directory} does not exist. {how_to_get}")
    arrays = {key: read_idx(_find(directory, stem, how_to_get))
              for key, stem in _IDX_FILES.items()}
    result = []
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(images) != len(labels):
            raise ValueError(f"{directory}: {len(images)} {split} images but "
                             f"{len(labels)} labels.")
        images = images.astype(np.float32) / np.float32(255)
        images = images.reshape(len(images), -1) if flatten else images[:, None]
        result += [images, labels.astype(np.int32)]
    return tuple(result)


def load_fashion_mnist(directory: str = FASHION_MNIST_DIR, *, flatten: bool = True):
    """Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): 60,000 + 10,000 28x28 images, 10 classes.

    Parameters
    ----------
    directory : str
        Folder with the four IDX files (gzipped or not); Debian's
        ``dataset-fashion-mnist`` package installs them in the default.
    flatten : bool
        Images as ``(N, 784)`` if True, else ``(N, 1, 28, 28)``.
    """
    how = ("Install them with `apt-get install dataset-fashion-mnist` (Debian), or pass "
           "the folder holding the Fashion-MNIST IDX files.")
    return _load_idx_set(directory, how, flatten)


def load_mnist(directory: str, *, flatten: bool = True):
    """MNIST (LeCun et al. 1998): 60,000 + 10,000 28x28 digit images, 10 classes.

    Parameters
    ----------
    directory : str
        Folder with ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``.
    flatten : bool
        Images as ``(N, 784)`` if True, else ``(N, 1, 28, 28)``.
    """
    how = ("Download the four MNIST IDX files (yann.lecun.com/exdb/mnist or a mirror) "
           "into that folder.")
    return _load_idx_set(directory, how, flatten)


def minibatches(
    arrays: Sequence[np.ndarray], batch_size: int, *, seed: int = 0, start: int = 0
) -> Iterator[tuple[np.ndarray, ...]]:
    """Endless shuffled mini-batches: yields one row-subset of every array, forever.

    Each epoch is a new permutation (seeded); the last incomplete batch of an epoch
    is dropped, so every batch has ``batch_size`` rows and an epoch is
    ``len(arrays[0]) // batch_size`` batches. ``start`` skips that many batches
    (without copying their rows), so a resumed run sees the batches it would have seen.
    """
    size = len(arrays[0])
    if any(len(array) != size for array in arrays):
        raise ValueError("All arrays must have the same number of rows.")
    if not 1 <= batch_size <= size:
        raise ValueError(f"`batch_size` must be in [1, {size}], got {batch_size}.")
    if start < 0:
        raise ValueError(f"`start` must be >= 0, got {start}.")
    per_epoch = size // batch_size
    rng = np.random.default_rng(seed)
    for _ in range(start // per_epoch):
        rng.permutation(size)
    skip = start % per_epoch
    while True:
        order = rng.permutation(size)
        for index in range(skip, per_epoch):
            rows = order[index * batch_size : (index + 1) * batch_size]
            yield tuple(array[rows] for array in arrays)
        skip = 0
