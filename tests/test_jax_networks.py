"""Every network of ``sgn-bench`` trains in JAX mode, the GPU path, with batch sizes the
graph does not fix: SGN at its defaults and Adam (1e-2), on real data (Fashion-MNIST, a
sine of frequency 1) or CIFAR-10-format files, the loss falling by a twentieth in 12
steps; plus networks of shapes that no benchmark has (a CNN of the library's layers, a
GRU written in plain PyTensor), and one device-to-host read per SGN step on LeNet-5 and
the RNN. Slow: each JAX compile of a whole step takes seconds."""

from __future__ import annotations

import argparse

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from helpers import NEEDS_JAX, count_device_reads
from idx_files import write_cifar10_like
from sgn_theano import SGN, adam, compile_mode, softmax_cross_entropy
from sgn_theano.bench.tasks import TASK_DEFAULTS, build_network, load_task
from sgn_theano.models import cnn

pytestmark = [pytest.mark.slow, NEEDS_JAX]

#: (task, model, sizes, graph): small versions of the benchmark's networks.
NETWORKS = {
    "mlp": ("fashion-mnist", "mlp", "784-32-10", "plain"),
    "autoencoder": ("autoencoder", "mlp", "784-32-8-32-784", "library"),
    "sine": ("sine", "mlp", "1-16-16-1", "plain"),
    "lenet5": ("fashion-mnist", "lenet5", None, "library"),
    "vgg": ("cifar10", "vgg", None, "library"),
    "rnn": ("fashion-mnist", "rnn", "28-16-10", "plain"),
}
#: Batch sizes stepped in turn: none is fixed by the graph.
BATCH_SIZES = (64, 40)
STEPS = 12


@pytest.fixture(scope="module")
def cifar_directory(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cifar")
    write_cifar10_like(directory, per_batch=160, test=10)
    return str(directory)


def network_and_data(name: str, cifar_directory: str):
    task, model, sizes, graph = NETWORKS[name]
    default_sizes, activation, _ = TASK_DEFAULTS[task]
    args = argparse.Namespace(task=task, model=model, sizes=sizes or default_sizes,
                              activation=activation, graph=graph, frequency=1.0,
                              data_dir=cifar_directory if task == "cifar10" else None)
    x_train, y_train = load_task(args)[:2]
    order = np.random.default_rng(0).permutation(len(x_train))[:STEPS * max(BATCH_SIZES)]
    return build_network(args, seed=0), (x_train[order], y_train[order])


def batches(data):
    x, y = data
    start = 0
    for step in range(STEPS):
        size = BATCH_SIZES[step % len(BATCH_SIZES)]
        if len(x) <= size:  # a full-batch task (the sine): the batch shrinks instead
            size = len(x) - 7 * (step % 2)
            start = 0
        yield x[start:start + size], y[start:start + size]
        start += size


@pytest.mark.parametrize("optimizer_name", ["sgn", "adam"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_each_benchmark_network_trains_in_jax_mode(name, optimizer_name, cifar_directory):
    (inputs, outputs, loss, params), data = network_and_data(name, cifar_directory)
    mode = compile_mode("JAX")
    evaluate = pytensor.function(inputs, loss, mode=mode)
    held_out = next(batches(data))
    before = float(evaluate(*held_out))
    if optimizer_name == "sgn":
        optimizer = SGN(loss, params, outputs, inputs, mode=mode)
        losses = [optimizer.step(*batch).loss for batch in batches(data)]
    else:
        train = pytensor.function(inputs, loss, updates=adam(loss, params, 1e-2), mode=mode)
        losses = [float(train(*batch)) for batch in batches(data)]
    after = float(evaluate(*held_out))
    assert np.isfinite(losses).all(), losses
    assert after < 0.95 * before, (before, after, losses)


@pytest.mark.parametrize("name", ["lenet5", "rnn"])
def test_sgn_reads_the_device_once_a_step_on_convolutions_and_loops(name, cifar_directory,
                                                                    monkeypatch):
    (inputs, outputs, loss, params), data = network_and_data(name, cifar_directory)
    optimizer = SGN(loss, params, outputs, inputs, mode=compile_mode("JAX"))
    reads, _ = count_device_reads(optimizer, monkeypatch)
    for step, batch in enumerate(batches(data)):
        reads.clear()
        optimizer.step(*batch)
        assert reads == ["output"], (step, reads)


def plain_gru(x, hidden: int, classes: int, seed: int = 0):
    """A GRU over the columns of 28 x 28 images, written as a user writes it (``scan``
    with the gates of one ``x W + h U + b`` sliced), read out from its mean state."""
    rng = np.random.default_rng(seed)

    def shared(shape, scale, name):
        return pytensor.shared((rng.normal(size=shape) * scale).astype(x.dtype), name=name)
    w, u = shared((28, 3 * hidden), 28 ** -0.5, "W"), shared((hidden, 3 * hidden), 0.1, "U")
    b = pytensor.shared(np.zeros(3 * hidden, x.dtype), name="b")
    v, c = shared((hidden, classes), hidden ** -0.5, "V"), shared((classes,), 0.0, "c")
    columns = x.reshape((-1, 28, 28)).dimshuffle(2, 0, 1)  # (steps, batch, column)

    def step(column, h):
        gates = column @ w + b
        recurrent = h @ u
        update = pt.sigmoid(gates[:, :hidden] + recurrent[:, :hidden])
        reset = pt.sigmoid(gates[:, hidden:2 * hidden] + recurrent[:, hidden:2 * hidden])
        candidate = pt.tanh(gates[:, 2 * hidden:] + reset * recurrent[:, 2 * hidden:])
        return update * h + (1 - update) * candidate
    states = pytensor.scan(step, sequences=[columns], return_updates=False,
                           outputs_info=[pt.zeros((x.shape[0], hidden), dtype=x.dtype)])
    return states.mean(axis=0) @ v + c, [w, u, b, v, c]


@pytest.mark.parametrize("network", ["cnn", "gru"])
def test_networks_of_new_shapes_train_with_sgn_in_jax_mode(network):
    """A CNN of the library's layers with strides, padding and pooling that no benchmark
    uses, and a GRU in plain PyTensor, in float64, at SGN's defaults."""
    x_train, y_train = load_task(argparse.Namespace(task="fashion-mnist", data_dir=None))[:2]
    x, y = pt.matrix("x", dtype="float64"), pt.ivector("y")
    if network == "cnn":
        outputs, params = cnn(x, (28, 28, 1), [("conv", 6, 3, 2, 1), ("pool", 2),
                                               ("conv", 10, 3, 1, 0), ("dense", 10)],
                              activation="tanh", seed=0, dtype="float64")
    else:
        outputs, params = plain_gru(x, hidden=12, classes=10)
    loss = softmax_cross_entropy(outputs, y)
    data = (x_train[:STEPS * max(BATCH_SIZES)].astype("float64"),
            y_train[:STEPS * max(BATCH_SIZES)])
    optimizer = SGN(loss, params, outputs, [x, y], mode=compile_mode("JAX"))
    evaluate = pytensor.function([x, y], loss, mode=compile_mode("JAX"))
    held_out = next(batches(data))
    before = float(evaluate(*held_out))
    losses = [optimizer.step(*batch).loss for batch in batches(data)]
    assert np.isfinite(losses).all(), losses
    assert float(evaluate(*held_out)) < 0.95 * before, losses
