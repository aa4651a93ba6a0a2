"""``sgn-bench --paper``: the SGN paper's experiments, run here, beside its published figures.

For each task available offline (Fashion-MNIST with LeNet-5, the 5,000 bundled MNIST
digits with the MLP 20-20-20, the sine wave f = 10, Boston housing; CIFAR-10 with the
VGG-style net when ``--data-dir`` holds its files) it runs the paper's settings: its
model, batch size, SGN's CG iterations and SGD's learning-rate grid, with Adam added,
for the paper's time budget. Then, for the best grid point of each method at that
budget, it runs the same number of *epochs* SGN's best setting got through, so the
methods are compared at equal seconds and at equal passes over the data. The published
figures were measured on a TITAN X GPU with Theano; ours on this machine's CPU cores.

Published figures are from the authors' repository (``gmatilde/SGN``: its README and
``results/*/config.json``). SGN there ran with damping 1e-4 (floor 1e-6) and CG
tolerance 1e-6; here SGN runs at this library's defaults.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from sgn_theano.bench.batch_study import best_settings
from sgn_theano.bench.table import format_rows, machine_facts, markdown_rows, value_at
from sgn_theano.bench.train import Checkpoint, TrainResult

__all__ = ["PAPER_EXPERIMENTS", "PaperExperiment", "format_paper_table", "paper_markdown",
           "paper_rows", "run_paper"]

#: What the paper table's figures are.
PAPER_TABLE_NOTE = ("(classification: test accuracy; regression: test MSE; ours: each "
                    "method's best grid point, median over the seeds)")


@dataclass(frozen=True)
class PaperExperiment:
    """One of the paper's experiments, as ``sgn-bench`` arguments and published figures."""

    name: str
    #: ``sgn-bench`` arguments choosing the task, model and batch size.
    arguments: tuple[str, ...]
    sgn: tuple[int, ...]  # CG iterations
    sgd: tuple[float, ...]  # learning rates
    adam: tuple[float, ...]
    seconds: float  # the paper's budget
    #: Published best figures by method: ``{"SGD": ("lr=1", 0.938), ...}``; accuracy
    #: (a fraction) or test MSE.
    published: dict[str, tuple[str, float]] = field(default_factory=dict)
    published_at: str = ""  # when the published figures were taken
    needs_data_dir: bool = False  # CIFAR-10: only with --data-dir

    @property
    def task(self) -> str:
        return self.arguments[self.arguments.index("--task") + 1]


PAPER_EXPERIMENTS = (
    PaperExperiment(
        "MNIST, MLP 20-20-20 sigmoid (5,000 bundled digits)",
        ("--task", "mnist", "--sizes", "784-20-20-20-10", "--activation", "sigmoid",
         "--batch-size", "1000"),
        sgn=(1, 2, 3, 5, 10), sgd=(0.001, 0.01, 0.1, 1, 10), adam=(1e-3,), seconds=100,
        published={"SGD": ("lr=1", 0.930), "SGN": ("k=3", 0.940)}, published_at="100 s"),
    PaperExperiment(
        "Fashion-MNIST, LeNet-5",
        ("--task", "fashion-mnist", "--model", "lenet5", "--batch-size", "1000"),
        sgn=(1, 2, 3, 5, 10), sgd=(0.001, 0.01, 0.1, 1), adam=(1e-3,), seconds=150,
        published={"SGD": ("", 0.885), "SGN": ("k=5", 0.878)}, published_at="150 s"),
    PaperExperiment(
        "Sine wave f=10, MLP 20-20-20 tanh",
        ("--task", "sine", "--frequency", "10", "--sizes", "1-20-20-20-1", "--activation",
         "tanh"),
        sgn=(3, 5, 10, 20, 30, 40), sgd=(0.001, 0.01, 0.1), adam=(1e-3,), seconds=20,
        published={"SGD": ("", 0.146), "SGN": ("k=20", 1.0e-4)},
        published_at="end of the runs"),
    PaperExperiment(
        "Boston housing, MLP 100-100 tanh",
        ("--task", "boston", "--batch-size", "101"),
        sgn=(1, 2, 3, 5, 10, 20), sgd=(0.001, 0.01, 0.1, 1), adam=(1e-3,), seconds=10,
        published={"SGD": ("", 0.026), "SGN": ("k=10", 0.0097)}, published_at="10 s"),
    PaperExperiment(
        "CIFAR-10, VGG-style net",
        ("--task", "cifar10", "--model", "vgg", "--batch-size", "1000"),
        sgn=(3, 5, 10), sgd=(0.01, 0.1, 1), adam=(1e-3,), seconds=150,
        published={"SGD": ("", 0.236), "SGN": ("", 0.247)},
        published_at="the end of the runs", needs_data_dir=True),
)

#: ``--paper --quick``: this fraction of each budget, one seed.
QUICK_FRACTION = 0.2
#: Evaluations per run (equally spaced in time, or in epochs).
CHECKPOINTS = 10
METHODS = ("SGD", "SGN", "ADAM")


def _grid(experiment: PaperExperiment) -> list[str]:
    return ["sgn:" + ",".join(map(str, experiment.sgn)),
            "sgd:" + ",".join(f"{lr:g}" for lr in experiment.sgd),
            "adam:" + ",".join(f"{lr:g}" for lr in experiment.adam)]


def _marks(budget: float) -> str:
    return ",".join(f"{budget * i / CHECKPOINTS:g}" for i in range(1, CHECKPOINTS))


def _results(path: str) -> tuple[dict[str, dict[str, list[TrainResult]]], dict]:
    """A ``sgn-bench`` JSON record back as ``{method: {setting: [TrainResult]}}``."""
    with open(path) as stream:
        record = json.load(stream)
    methods: dict[str, dict[str, list[TrainResult]]] = {}
    for run in record["runs"]:
        result = TrainResult(run["name"], [Checkpoint(**point) for point in run["history"]],
                             run["steps"], run["train_time"], run["diverged"], run["rejected"])
        methods.setdefault(run["method"], {}).setdefault(run["optimizer"], []).append(result)
    return methods, record


def _setting_arguments(setting: str) -> str:
    """``"SGN k=3"`` -> ``"sgn:3"``; ``"SGD lr=0.1"`` -> ``"sgd:0.1"``."""
    method, _, value = setting.partition(" ")
    return f"{method.lower()}:{value.split('=')[1]}"


def _best_points(timed: str, budget: float, name: str) -> tuple[str, dict, float] | None:
    """From the equal-seconds record ``timed``: its metric, each method's best setting
    and value at ``budget``, and the epochs of the equal-epochs runs (as many as SGN's
    best setting got through, at least 1); ``None`` if a method has no finite result."""
    methods, record = _results(timed)
    metric = record["config"]["metric"]
    best = {method: row[-1] for method, row in best_settings(
        {0: methods}, [budget], "time", metric)[0].items()}
    failed = [method for method in METHODS if best[method][0] not in methods[method]]
    if failed:  # every setting of a method diverged: no best point to rerun
        print(f"--paper: no equal-epochs runs for {name}: no finite result "
              f"for {', '.join(failed)}")
        return None
    sgn_best = methods["SGN"][best["SGN"][0]]
    epochs = float(np.median([result.history[-1].epoch for result in sgn_best]))
    return metric, best, max(1.0, math.floor(epochs))


def run_paper(run: Callable[[Sequence[str]], int], options: Sequence[str], output: str, *,
              fraction: float = 1.0, data_dir: str | None = None, seeds: Sequence[int] = (0,),
              experiments: Sequence[PaperExperiment] = PAPER_EXPERIMENTS,
              command: str = "") -> list[dict]:
    """Run every available experiment through ``run`` (``sgn-bench``'s ``main``).

    Parameters
    ----------
    run : callable
        ``sgn-bench``'s entry point, called with an argument list; returns its status.
    options : sequence of str
        Arguments passed to every run (``--mode``, ``--no-plots``...).
    output : str
        Path prefix of the JSON records (``<output>-<task>-time.json`` and
        ``-epochs.json``) and of the summary record ``<output>.json``: the summaries under
        ``"paper"``, with ``command`` (the ``sgn-bench`` command line), the date and the
        machine (:func:`paper_markdown` makes its table).
    fraction : float
        Of each experiment's budget (``--quick``: :data:`QUICK_FRACTION`).
    data_dir : str or None
        CIFAR-10's folder; without it that experiment is skipped.
    seeds : sequence of int
    experiments : sequence of PaperExperiment
        Default :data:`PAPER_EXPERIMENTS`.

    Returns
    -------
    list of dict
        One summary per experiment run (what :func:`format_paper_table` prints); an
        experiment whose data is missing is skipped, with ``sgn-bench``'s message.
    """
    prefix = os.path.splitext(output)[0]
    seed_options = ["--seeds", *map(str, seeds)]
    summaries = []
    for experiment in experiments:
        if experiment.needs_data_dir and data_dir is None:
            print(f"\n--paper: skipping {experiment.name} (needs --data-dir)")
            continue
        data_options = ["--data-dir", data_dir] if experiment.needs_data_dir else []
        task = experiment.task
        budget = experiment.seconds * fraction
        timed = f"{prefix}-{task}-time.json"
        print(f"\n=== {experiment.name}: {budget:g} s per run ===")
        status = run([*experiment.arguments, *data_options, *options, *seed_options,
                      "--time-budget", f"{budget:g}", "--checkpoints", _marks(budget),
                      "--optimizers", *_grid(experiment), "--output", timed])
        if status:  # its data is missing here (sgn-bench said which)
            print(f"--paper: skipping {experiment.name}")
            continue
        chosen = _best_points(timed, budget, experiment.name)
        if chosen is None:
            continue
        metric, best, epochs = chosen
        counted = f"{prefix}-{task}-epochs.json"
        print(f"\n=== {experiment.name}: {epochs:g} epochs per run (SGN's best in "
              f"{budget:g} s) ===")
        status = run([*experiment.arguments, *data_options, *options, *seed_options,
                      "--epochs", f"{epochs:g}", "--checkpoints", _marks(epochs),
                      "--optimizers", *[_setting_arguments(best[m][0]) for m in METHODS],
                      "--output", counted])
        if status:
            raise RuntimeError(f"--paper: the equal-epochs runs of {experiment.name} "
                               f"failed (status {status})")
        by_epochs = _results(counted)[0]
        summaries.append({
            "experiment": experiment.name, "metric": metric, "seconds": budget,
            "epochs": epochs, "published": experiment.published,
            "published_at": experiment.published_at,
            "at_seconds": {m: best[m] for m in METHODS},
            "at_epochs": {m: (name, float(np.median([value_at(r, epochs, "epoch", metric)
                                                     for r in results])))
                          for m in METHODS for name, results in by_epochs[m].items()},
            "records": [timed, counted]})
    with open(f"{prefix}.json", "w") as stream:
        json.dump({"paper": summaries, "command": command, "seeds": list(seeds),
                   "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_facts()},
                  stream, indent=1)
    print(f"\nwrote {prefix}.json")
    return summaries


def _figure(value: float, metric: str, *, loss_is_half_mse: bool = True) -> str:
    """An accuracy as a percentage; a regression's figure as a test MSE (our test loss is
    half the mean squared error, :func:`sgn_theano.losses.squared_error`)."""
    if not np.isfinite(value):
        return "-"
    if metric == "test_accuracy":
        return f"{100 * value:.1f}%"
    return f"{(2 if loss_is_half_mse else 1) * value:.2g}"


def _better(first: float, second: float, metric: str) -> bool:
    return first > second if metric == "test_accuracy" else first < second


def format_paper_table(summaries: Sequence[dict]) -> str:
    """The published figures beside ours at equal seconds and at equal epochs, and
    whether SGN beats the best SGD in each (the paper's claims)."""
    return format_rows(paper_rows(summaries)) + "\n" + PAPER_TABLE_NOTE


def paper_markdown(record: dict) -> str:
    """:func:`format_paper_table` in Markdown, from the summary record of
    :func:`run_paper`, with its command, date and machine."""
    machine = record["machine"]
    return (markdown_rows(paper_rows(record["paper"])) + f"\n\n{PAPER_TABLE_NOTE}\n\n"
            f"(`{record['command']}`; {record['date'][:10]}, {machine['cpus']} CPU cores, "
            f"PyTensor {machine['pytensor']}, seeds {record['seeds']}.)\n")


def paper_rows(summaries: Sequence[dict]) -> list[list[str]]:
    """The rows of :func:`format_paper_table`, its header first."""
    rows = [["experiment", "published SGD / SGN", "ours: budget", "SGD", "SGN", "Adam",
             "SGN > SGD"]]
    for summary in summaries:
        metric = summary["metric"]
        published = " / ".join(
            _figure(value, metric, loss_is_half_mse=False) + (f" ({setting})" if setting else "")
            for setting, value in (summary["published"][m] for m in ("SGD", "SGN")))
        for key, budget in (("at_seconds", f"{summary['seconds']:g} s"),
                            ("at_epochs", f"{summary['epochs']:g} epochs")):
            cells = [summary[key][m] for m in METHODS]
            first = key == "at_seconds"
            rows.append([summary["experiment"] if first else "",
                         f"{published} at {summary['published_at']}" if first else "",
                         budget,
                         *[f"{_figure(value, metric)} ({name.split(' ', 1)[1]})"
                           for name, value in cells],
                         "yes" if _better(summary[key]["SGN"][1], summary[key]["SGD"][1],
                                          metric) else "no"])
    return rows
