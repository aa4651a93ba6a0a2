"""kfac-jax, the reference K-FAC, on the results' Fashion-MNIST MLP: an ``sgn-bench``-shaped
JSON record, so the docs render it as they render ``sgn-bench``'s (``record_markdown``).

Runs ``../shared/yardsticks/kfac_jax_ref.py`` (kfac-jax, factors on every row, its own
initial weights and batch order, evaluation outside the clock) once per batch size,
learning rate and seed, one process after another, and keeps its test accuracy at each
mark. ``--kfac-settings stochastic`` is its authors' recipe for mini-batches (a fixed
learning rate from ``--lrs``, momentum 0.9, damping 1e-3: one table row per learning
rate, a grid as for Adam); ``adaptive`` its learning rate, momentum and damping chosen
by its quadratic model (inverses every 5 steps)::

    python benchmarks/kfac_jax_record.py --kfac-settings stochastic --lrs 1e-3 3e-3 1e-2 \\
        --batch-sizes 1000 10000 --seeds 0 1 2 --time-budget 60 --checkpoints 10,30,60 \\
        --output docs/records/kfac_jax_stochastic_mlp.json

``--python`` names an interpreter with ``kfac-jax`` installed (a virtual environment of
its own: it may pin another JAX). The runs are not interleaved with ``sgn-bench``'s, so
compare their figures with a round-robin record of the same day and machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import subprocess
import sys

from sgn_theano.bench.table import machine_facts, record_markdown

YARDSTICK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                         "yardsticks", "kfac_jax_ref.py")


def kfac_jax_run(python: str, batch_size: int, seed: int, budget: float,
                 checkpoints: str, learning_rate: float | None = None) -> dict:
    """One training run of the yardstick, as an ``sgn-bench`` record's run: its
    stochastic recipe at ``learning_rate``, or with ``None`` its adaptive one."""
    command = [python, os.path.normpath(YARDSTICK), "--model", "b", "--batch-size",
               str(batch_size), "--seed", str(seed), "--time-budget", str(budget),
               "--checkpoints", checkpoints]
    name = "kfac-jax"
    if learning_rate is not None:
        command += ["--kfac-settings", "stochastic", "--lr", repr(learning_rate)]
        name = f"kfac-jax stochastic lr={learning_rate:g}"
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    history = [{"step": 0, "epoch": 0.0, "time": 0.0, "train_loss": math.nan,
                "test_loss": math.nan, "test_accuracy": result["init_acc"]}]
    history += [{"step": point["steps"], "epoch": point["epochs"], "time": point["t"],
                 "train_loss": point["train_loss"], "test_loss": math.nan,
                 "test_accuracy": point["test_acc"]} for point in result["checkpoints"]]
    return {"name": f"{name} seed {seed}", "optimizer": name, "method": "KFAC-JAX",
            "batch_size": batch_size, "seed": seed, "history": history,
            "steps": result["steps"], "train_time": result["train_wall_s"],
            "diverged": result["diverged"], "rejected": None, "step_losses": [],
            "step_times": [], "steps_per_second": result["steps_per_s"],
            "jax": result.get("jax_version")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--time-budget", type=float, default=60.0)
    parser.add_argument("--checkpoints", default="10,30,60")
    parser.add_argument("--kfac-settings", choices=["adaptive", "stochastic"],
                        default="adaptive")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2],
                        help="the learning rates of the stochastic recipe")
    parser.add_argument("--python", default=sys.executable,
                        help="a python with kfac-jax installed")
    parser.add_argument("--output", default="results/kfac_jax_mlp.json")
    args = parser.parse_args(argv)
    marks = sorted({float(mark) for mark in args.checkpoints.split(",")} | {args.time_budget})
    learning_rates = args.lrs if args.kfac_settings == "stochastic" else [None]
    runs = [kfac_jax_run(args.python, batch_size, seed, args.time_budget, args.checkpoints,
                         learning_rate)
            for batch_size in args.batch_sizes for learning_rate in learning_rates
            for seed in args.seeds]
    command = shlex.join(["python", "benchmarks/kfac_jax_record.py",
                          *(argv if argv is not None else sys.argv[1:])])
    record = {"config": {"task": "fashion-mnist", "epochs": None, "target": None,
                         "marks": marks, "seeds": args.seeds, "command": command,
                         "mode": f"JAX {runs[0]['jax']} (kfac-jax)"},
              "machine": machine_facts(), "date": str(datetime.datetime.now())[:19],
              "runs": runs}
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as stream:
        json.dump(record, stream, indent=1)
    print(record_markdown(record))


if __name__ == "__main__":
    main()
