"""Readers on tiny files written in the standard formats, and the mini-batch stream."""

import os

import numpy as np
import pytest
from idx_files import write_idx, write_mnist_like

from sgn_theano.data import load_fashion_mnist, load_mnist, minibatches, read_idx


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(str(tmp_path / "a"), array, compress)
    np.testing.assert_array_equal(read_idx(tmp_path / ("a.gz" if compress else "a")), array)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(str(tmp_path / "short"), np.zeros(4, np.uint8), False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header announces shape"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_format(tmp_path, compress):
    write_mnist_like(str(tmp_path), train=30, test=10, compress=compress)
    x_train, y_train, x_test, y_test = load_mnist(str(tmp_path))
    assert x_train.shape == (30, 784) and x_test.shape == (10, 784)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    images = load_mnist(str(tmp_path), flatten=False)[0]
    assert images.shape == (30, 1, 28, 28)
    np.testing.assert_array_equal(images.reshape(30, -1), x_train)


def test_missing_files_are_named_with_their_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path / "nowhere"))
    write_mnist_like(str(tmp_path), train=5, test=5)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte\\[.gz\\] not found"):
        load_mnist(str(tmp_path))


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert set(np.unique(y_train)) == set(range(10))


def test_minibatches_cover_each_row_once_per_epoch():
    x, y = np.arange(10)[:, None], np.arange(10)
    stream = minibatches((x, y), 3, seed=1)
    epochs = []
    for _ in range(2):  # an epoch is 10 // 3 = 3 batches; the 10th row is dropped
        seen = []
        for _ in range(3):
            xb, yb = next(stream)
            np.testing.assert_array_equal(xb[:, 0], yb)
            seen += list(yb)
        assert len(set(seen)) == 9
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # a new permutation each epoch
    with pytest.raises(ValueError, match="`batch_size` must be in"):
        next(minibatches((x, y), 11))
