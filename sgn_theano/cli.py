"""``sgn-bench``: SGN against SGD and Adam on a real data set, under a time budget.

Example::

    sgn-bench --quick                      # about 2 minutes on 2 cores
    sgn-bench --time-budget 100 --optimizers sgn:3 sgn:10 sgd:0.1 adam:0.001
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt

from sgn_theano import data
from sgn_theano.losses import softmax_cross_entropy
from sgn_theano.models import mlp
from sgn_theano.modes import MODES, compile_mode, default_mode_name
from sgn_theano.optimizer import SGN
from sgn_theano.train import FirstOrder, TrainResult, make_evaluator, train
from sgn_theano.updates import adam, sgd

__all__ = ["main", "parse_optimizer"]

TASKS = ("fashion-mnist", "mnist")
DEFAULT_VALUES = {"sgn": 3.0, "sgd": 0.1, "adam": 1e-3}


def parse_optimizer(spec: str) -> tuple[str, float]:
    """``"sgn:3"`` -> ``("sgn", 3.0)`` (CG iterations); ``"sgd:0.1"``, ``"adam:1e-3"``
    give the learning rate; a bare name takes its default."""
    name, _, value = spec.partition(":")
    if name not in DEFAULT_VALUES:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer {name!r} in {spec!r}; use sgn[:k], sgd[:lr] or adam[:lr]")
    try:
        number = float(value) if value else DEFAULT_VALUES[name]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: {value!r} is not a number") from None
    if number <= 0 or (name == "sgn" and number != int(number)):
        raise argparse.ArgumentTypeError(
            f"{spec!r}: give a positive {'integer' if name == 'sgn' else 'number'}")
    return name, number


def _label(name: str, value: float) -> str:
    return f"SGN k={int(value)}" if name == "sgn" else f"{name.upper()} lr={value:g}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgn-bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--task", choices=TASKS, default="fashion-mnist")
    parser.add_argument("--data-dir", default=None,
                        help=f"data folder (fashion-mnist default: {data.FASHION_MNIST_DIR})")
    parser.add_argument("--sizes", default="784-256-256-10",
                        help="MLP layer widths, input to output")
    parser.add_argument("--activation", choices=("relu", "tanh", "sigmoid"), default="relu")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--time-budget", type=float, default=100.0,
                        help="seconds of training per optimizer (evaluation excluded)")
    parser.add_argument("--checkpoints", default="5,10,25,50",
                        help="times (s) to evaluate test accuracy; the budget is added")
    parser.add_argument("--optimizers", nargs="+", type=parse_optimizer,
                        default=[("sgn", 3.0), ("sgd", 0.1), ("adam", 1e-3)],
                        help="sgn:K (CG iterations), sgd:LR, adam:LR")
    parser.add_argument("--mode", choices=MODES, default=None,
                        help="PyTensor compile mode (default: C if OpenBLAS is found, "
                        "else NUMBA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="25 s per optimizer, checkpoints 5,10 (about 2 minutes)")
    parser.add_argument("--output", default="results/sgn-bench.json",
                        help="where to write the JSON record")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def _load(task: str, directory: str | None):
    if task == "fashion-mnist":
        return data.load_fashion_mnist(directory or data.FASHION_MNIST_DIR)
    if directory is None:
        raise SystemExit(f"--task {task} needs --data-dir (the folder of its files)")
    return data.load_mnist(directory)


def run_one(name: str, value: float, arrays, args, mode, marks) -> TrainResult:
    """Build a fresh model (same seed for every optimizer) and train it."""
    x_train, y_train, x_test, y_test = arrays
    x = pt.matrix("x", dtype="float32")
    y = pt.ivector("y")
    sizes = [int(size) for size in args.sizes.split("-")]
    logits, params = mlp(x, sizes, activation=args.activation, seed=args.seed)
    loss = softmax_cross_entropy(logits, y)
    if name == "sgn":
        optimizer = SGN(loss, params, logits, [x, y], max_cg_iters=int(value), mode=mode)
    else:
        rule = sgd if name == "sgd" else adam
        optimizer = FirstOrder([x, y], loss, rule(loss, params, value), mode=mode)
    evaluate = make_evaluator([x, y], logits, loss, x_test, y_test, mode=mode)
    return train(optimizer, evaluate, (x_train, y_train), batch_size=args.batch_size,
                 time_budget=args.time_budget, checkpoints=marks, seed=args.seed,
                 name=_label(name, value), progress=not args.no_progress)


def format_table(results: Sequence[TrainResult], marks: Sequence[float]) -> str:
    """Test accuracy at each checkpoint mark (seconds), steps/s, rejected steps and the
    final train loss."""
    header = ["optimizer", *[f"acc@{mark:g}s" for mark in marks], "steps", "steps/s",
              "rejected", "final loss", "note"]
    rows = [header]
    for result in results:
        last = result.history[-1]
        rows.append([result.name, *[_accuracy_at(result, mark) for mark in marks],
                     str(result.steps), f"{result.steps_per_second:.1f}",
                     str(result.rejected), f"{last.train_loss:.4f}", "diverged" if result.diverged else ""])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def _accuracy_at(result: TrainResult, mark: float) -> str:
    """Test accuracy of the checkpoint taken on reaching ``mark`` seconds of training."""
    for point in result.history[1:]:
        if point.time >= mark:
            return f"{100 * point.test_accuracy:.1f}%"
    return "-"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.time_budget, args.checkpoints = 25.0, "5,10"
    mode_name = args.mode or default_mode_name()
    mode = compile_mode(mode_name)
    try:
        arrays = _load(args.task, args.data_dir)
    except FileNotFoundError as error:
        print(f"sgn-bench: {error}", file=sys.stderr)
        return 2
    marks = sorted({float(mark) for mark in args.checkpoints.split(",") if mark.strip()
                    and 0 < float(mark) < args.time_budget} | {args.time_budget})
    print(f"sgn-bench: {args.task}, MLP {args.sizes} {args.activation}, batch "
          f"{args.batch_size}, {args.time_budget:g} s per optimizer, mode {mode_name}")
    results = []
    for name, value in args.optimizers:
        results.append(run_one(name, value, arrays, args, mode, marks))
    print()
    print(format_table(results, marks))
    record = {
        "config": {**vars(args), "optimizers": [list(spec) for spec in args.optimizers],
                   "mode": mode_name},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "pytensor": pytensor.__version__,
                    "numpy": np.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "runs": [result.to_dict() for result in results],
    }
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as stream:
            json.dump(record, stream, indent=1)
        print(f"\nwrote {args.output}")
    return 0
