"""SGN against SGD and Adam at equal seconds, stepped in turn so machine load hits all alike.

Every method trains its own copy of one network, written in plain PyTensor (``pt.maximum``
activations, a hand-written loss; LeNet-5 is the library's, with a hand-written loss), from
the same initial values and on the same batches.
At each turn the method with the least step time so far takes one step, so all of them
advance through the run together; only the step calls are timed. Each method's test
metric is evaluated every ``--every`` seconds of its own step time (evaluation untimed),
with its steps and the mean training loss of its last steps. The table gives the
median over seeds at ``--marks``; the JSON record keeps every evaluation.

    python benchmarks/bench_round_robin.py --task mlp --batch-size 1000 --seconds 60 \\
        --seeds 0 1 2 --methods sgn sgn:preconditioner=hutchinson sgd:0.1 adam:0.001

Tasks: ``mlp`` and ``lenet5`` (Fashion-MNIST), ``autoencoder`` (its images), ``sine``
(the paper's regression, frequency 10, 700 training rows: ``--batch-size 700`` is full
batch). A method is ``sgn[:option=value,...]`` (options of ``sgn_theano.SGN``; numbers, True,
False and names are understood), ``sgd:LR`` or ``adam:LR``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import shlex
import sys
import time

import numpy as np
import pytensor
import pytensor.tensor as pt

from sgn_theano import SGN, adam, sgd
from sgn_theano.bench.train import FirstOrder, make_evaluator
from sgn_theano.compilation.modes import default_mode_name, link_openblas
from sgn_theano.data import FASHION_MNIST_DIR, load_fashion_mnist, minibatches, sine_task
from sgn_theano.models import lenet5

#: Task -> (layer widths, hidden activation, metric). ``lenet5`` is the library's LeNet-5
#: (relu) on Fashion-MNIST; ``sine`` the paper's sine regression (frequency 10).
TASKS = {
    "mlp": ((784, 256, 256, 10), "relu", "test_accuracy"),
    "autoencoder": ((784, 256, 64, 16, 64, 256, 784), "sigmoid", "test_loss"),
    "lenet5": ((784, 10), "relu", "test_accuracy"),
    "sine": ((1, 64, 64, 1), "tanh", "test_loss"),
}
ACTIVATIONS = {"relu": lambda h: pt.maximum(h, 0), "sigmoid": pt.sigmoid, "tanh": pt.tanh}
SINE_FREQUENCY = 10.0


def plain_mlp(x, sizes, activation: str, rng):
    """An MLP in plain PyTensor, He-initialised: ``(outputs, params)``."""
    h, params = x, []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = pytensor.shared((rng.normal(size=(fan_in, fan_out)) * np.sqrt(2 / fan_in))
                            .astype("float32"), name=f"W{i}")
        b = pytensor.shared(np.zeros(fan_out, "float32"), name=f"b{i}")
        params += [w, b]
        h = h @ w + b
        if i < len(sizes) - 2:
            h = ACTIVATIONS[activation](h)
    return h, params


def network(task: str, seed: int):
    """The task's symbolic inputs, outputs, mean loss and parameters; every loss is
    written by hand."""
    sizes, activation, _ = TASKS[task]
    x = pt.matrix("x", dtype="float32", shape=(None, sizes[0]))
    if task == "lenet5":
        h, params = lenet5(x, activation=activation, seed=seed)
    else:
        h, params = plain_mlp(x, sizes, activation, np.random.default_rng(seed))
    if task in ("mlp", "lenet5"):
        y = pt.ivector("y")
        loss = -pt.mean(pt.special.log_softmax(h, axis=1)[pt.arange(y.shape[0]), y])
    elif task == "sine":
        y = pt.matrix("y", dtype="float32", shape=(None, 1))
        loss = pt.mean((h - y) ** 2)
    else:  # binary cross-entropy of the pixels, summed per image, averaged over images
        y = pt.matrix("y", dtype="float32", shape=(None, sizes[-1]))
        loss = pt.mean(pt.sum(pt.softplus(h) - y * h, axis=1))
    return [x, y], h, loss, params


def parse_method(spec: str) -> tuple[str, dict]:
    """``"sgn:a=1,b=x"`` -> ``("sgn", {"a": 1, "b": "x"})``; ``"adam:0.001"`` ->
    ``("adam", {"learning_rate": 0.001})``."""
    kind, _, rest = spec.partition(":")
    if kind in ("sgd", "adam"):
        return kind, {"learning_rate": float(rest)}
    options = {}
    for item in filter(None, rest.split(",")):
        name, _, value = item.partition("=")
        try:
            options[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[name] = value
    return kind, options


def build(task: str, spec: str, seed: int, data: tuple):
    """``(step, evaluate)`` of one method on a fresh copy of the network."""
    inputs, outputs, loss, params = network(task, seed)
    kind, options = parse_method(spec)
    if kind == "sgn":
        optimizer = SGN(loss, params, outputs, inputs, **options)
        step = optimizer.step
    else:
        rule = sgd if kind == "sgd" else adam
        step = FirstOrder(inputs, loss, rule(loss, params, options["learning_rate"])).step
    evaluate = make_evaluator(inputs, outputs, loss, data[2], data[3],
                              accuracy=TASKS[task][2] == "test_accuracy")
    return step, evaluate


def run_seed(task: str, methods: list[str], seed: int, args, data: tuple) -> dict:
    """One seed: every method stepped in turn for ``args.seconds`` of step time each."""
    x_train, y_train = data[0], data[1]
    runs = {}
    for spec in methods:
        step, evaluate = build(task, spec, seed, data)
        runs[spec] = {"step": step, "evaluate": evaluate, "seconds": 0.0, "steps": 0,
                      "batches": minibatches([x_train, y_train], args.batch_size, seed=seed),
                      "next": 0.0, "losses": [], "records": []}
    while True:
        active = [run for run in runs.values() if run["seconds"] < args.seconds]
        if not active:
            break
        run = min(active, key=lambda r: r["seconds"])
        if run["seconds"] >= run["next"]:
            recent = run["losses"][-20:]
            run["records"].append({"seconds": run["seconds"], "steps": run["steps"],
                                   "train_loss": float(np.mean(recent)) if recent else None,
                                   **run["evaluate"]()})
            run["next"] += args.every
        batch = next(run["batches"])
        start = time.perf_counter()
        value = run["step"](*batch)
        run["seconds"] += time.perf_counter() - start
        run["steps"] += 1
        run["losses"].append(float(getattr(value, "loss", value)))
    for run in runs.values():
        run["records"].append({"seconds": run["seconds"], "steps": run["steps"],
                               "train_loss": float(np.mean(run["losses"][-20:])),
                               **run["evaluate"]()})
    return {spec: run["records"] for spec, run in runs.items()}


def value_at(records: list[dict], seconds: float, metric: str) -> tuple[float, int]:
    """The metric and steps of the last evaluation at or before ``seconds``."""
    last = [r for r in records if r["seconds"] <= seconds + 1e-9][-1]
    return last[metric], last["steps"]


def table(results: dict, methods: list[str], marks: list[float], metric: str) -> str:
    """Median over seeds of the metric (and steps) at each mark, one row a method."""
    scale = 100 if metric == "test_accuracy" else 1
    lines = [f"| method | {' | '.join(f'{m:g} s' for m in marks)} |",
             "|---|" + "---|" * len(marks)]
    for spec in methods:
        cells = []
        for mark in marks:
            pairs = [value_at(results[seed][spec], mark, metric) for seed in results]
            cells.append(f"{np.median([p[0] for p in pairs]) * scale:.4g} "
                         f"({int(np.median([p[1] for p in pairs]))})")
        lines.append(f"| {spec} | {' | '.join(cells)} |")
    return "\n".join(lines)


def record_markdown(record: dict) -> str:
    """The table of a JSON record of this script in Markdown, with its command, date and
    machine (the docs' results pages are built from the records)."""
    metric = TASKS[record["task"]][2]
    what = "test accuracy (%)" if metric == "test_accuracy" else metric.replace("_", " ")
    return (f"{record['task']}, batch {record['batch_size']}: median {what} over seeds "
            f"{record['seeds']} (and steps) at equal seconds of steps\n\n"
            + table(record["results"], record["methods"], record["marks"], metric)
            + f"\n\n(`{record['command']}`; {record['date']}, {record['cpus']} CPU cores, "
            f"mode {record['mode']}.)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="mlp")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=3.0)
    parser.add_argument("--marks", type=float, nargs="+", default=[30.0, 60.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+",
                        default=["sgn", "sgd:0.1", "adam:0.001"])
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    link_openblas()  # what a benchmark process wants (the docs, "Performance")
    data = (sine_task(SINE_FREQUENCY) if args.task == "sine"
            else load_fashion_mnist(FASHION_MNIST_DIR))
    if args.task == "autoencoder":
        data = (data[0], data[0], data[2], data[2])
    if args.batch_size > len(data[0]):
        parser.error(f"--batch-size {args.batch_size} is more than the {len(data[0])} "
                     f"training rows of --task {args.task}")
    results = {}
    for seed in args.seeds:
        results[seed] = run_seed(args.task, args.methods, seed, args, data)
        print(f"seed {seed} done", flush=True)
    metric = TASKS[args.task][2]
    print(f"{args.task}, batch {args.batch_size}: median {metric} over seeds {args.seeds} "
          "(steps) at equal step seconds")
    print(table(results, args.methods, args.marks, metric))
    if args.output:
        with open(args.output, "w") as file:
            json.dump({"task": args.task, "batch_size": args.batch_size,
                       "seconds": args.seconds, "seeds": args.seeds, "methods": args.methods,
                       "marks": args.marks, "command": shlex.join(
                           ["python", "benchmarks/bench_round_robin.py", *sys.argv[1:]]),
                       "machine": f"{platform.processor() or platform.machine()}",
                       "cpus": os.cpu_count(), "mode": default_mode_name(),
                       "date": time.strftime("%Y-%m-%d"), "results": results}, file, indent=1)


if __name__ == "__main__":
    main()
