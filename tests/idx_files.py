"""Writers of tiny data files in the exact standard formats, for reader tests."""

import gzip
import os

import numpy as np


def write_idx(path, array: np.ndarray, compress: bool):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += np.asarray(array.shape, dtype=">i4").tobytes()
    payload = header + array.tobytes()
    opener = gzip.open if compress else open
    with opener(path + (".gz" if compress else ""), "wb") as stream:
        stream.write(payload)


def write_mnist_like(directory, train=200, test=100, compress=True, seed=0):
    """Fashion-MNIST/MNIST file set with learnable labels: class c lights rows 2c..2c+2."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.random((count, 28, 28)) * 40
        for row, label in enumerate(labels):
            images[row, 2 * label : 2 * label + 3] += 200
        images = images.astype(np.uint8)
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte"), images, compress)
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte"), labels, compress)
    return directory


def write_cifar10_like(directory, per_batch=8, test=6, seed=0):
    """A ``cifar-10-batches-py`` folder in the standard python format: pickled dicts
    with ``b"data"`` (uint8 rows of red, green, blue 32x32 planes) and ``b"labels"``.
    Class c paints the red plane's row c bright."""
    import pickle

    folder = os.path.join(directory, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, count in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)),
                        ("test_batch", test)]:
        labels = rng.integers(0, 10, count)
        planes = rng.integers(0, 50, (count, 3, 32, 32), dtype=np.uint8)
        for row, label in enumerate(labels):
            planes[row, 0, label, :] = 255
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
                 b"data": planes.reshape(count, 3072), b"filenames": [b"x.png"] * count}
        with open(os.path.join(folder, name), "wb") as stream:
            pickle.dump(batch, stream, protocol=2)
    return folder
