"""``sgn-bench``: SGN against SGD and Adam on real data, under a time or epoch budget.

Examples::

    sgn-bench --quick                                  # about 3 minutes on 2 cores
    sgn-bench --model lenet5 --optimizers sgn:3,5,10 sgd:0.01,0.1,1 adam:1e-3 --seeds 0 1 2
    sgn-bench --task sine --frequency 100 --time-budget 20
    sgn-bench --task autoencoder --optimizers sgn sgd:0.1,0.3,1 adam:1e-3,3e-3
    sgn-bench --task cifar10 --data-dir ~/data --model vgg
    sgn-bench --paper --quick                          # the SGN paper's table, shortened
    sgn-bench --round-robin --graph plain --optimizers sgn sgn:preconditioner=kfac \\
        sgd:0.1,0.3,1 adam:1e-3,3e-3,1e-2 --time-budget 60 --seeds 0 1 2

Each optimizer setting trains a fresh model (the same initialisation for a given seed);
test accuracy (classification) or test loss (regression) is taken at the checkpoints
(and every ``--eval-every``). The table gives medians over the seeds; a JSON record
(with the loss of every step) and PNG plots (the smoothed training loss and the test
metric, against time and against epochs) are written next to ``--output``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np

from sgn_theano import data
from sgn_theano.compilation.allocator import reuse_freed_memory
from sgn_theano.bench.batch_study import (
    Study,
    best_settings,
    format_batch_study,
    plot_batch_study,
)
from sgn_theano.bench.paper import QUICK_FRACTION, format_paper_table, run_paper
from sgn_theano.bench.plots import plot_runs
from sgn_theano.bench.table import format_table, machine_facts
from sgn_theano.bench.round_robin import train_round_robin
from sgn_theano.bench.tasks import (
    CLASSIFICATION,
    GRAPHS,
    MODELS,
    RNN_SIZES,
    TASK_DEFAULTS,
    TASKS,
    build_network,
    load_task,
    metric_of,
    training_set_on_device,
)
from sgn_theano.bench.train import FirstOrder, TrainResult, make_evaluator, train
from sgn_theano.data_parallel import DataParallel
from sgn_theano.compilation.modes import MODES, compile_mode, default_mode_name, link_openblas
from sgn_theano.optimizer import SGN
from sgn_theano.sgn_config import SGNConfig
from sgn_theano.updates import adam, sgd

__all__ = ["main", "parse_optimizers"]

#: A bare ``sgd`` or ``adam``: its learning rate. A bare ``sgn`` is SGN at its defaults.
DEFAULT_VALUES = {"sgd": 0.1, "adam": 1e-3}
#: The label of SGN at its defaults, in tables, records and plots.
SGN_DEFAULTS = "SGN defaults"
#: ``--quick``: seconds per run, evaluation interval, and batch sizes (image tasks).
QUICK_SECONDS, QUICK_EVAL_EVERY, QUICK_BATCH_SIZES = 20.0, 2.0, (1000, 10000)
#: Set in processes started by mpirun (OpenMPI; MPICH and PMIx launchers).
MPI_LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")


def parse_optimizers(spec: str) -> list[tuple[str, float | dict]]:
    """``"sgn"`` -> ``[("sgn", {})]``, SGN at its defaults (:class:`sgn_theano.SGNConfig`);
    ``"sgn:3,5"`` -> ``[("sgn", 3.0), ("sgn", 5.0)]`` (CG iterations, the other options
    at their defaults); ``"sgd:0.1"`` and ``"adam:1e-3"`` give learning rates, a bare
    ``sgd`` or ``adam`` takes :data:`DEFAULT_VALUES`;
    ``"sgn:max_cg_iters=10,preconditioner=kfac"`` -> one SGN setting with those options
    of :class:`sgn_theano.SGNConfig` (numbers, True, False, None and names understood)."""
    name, _, values = spec.partition(":")
    if name not in (*DEFAULT_VALUES, "sgn"):
        raise argparse.ArgumentTypeError(
            f"unknown optimizer {name!r} in {spec!r}; use sgn, sgn:k[,k...], "
            "sgn:option=value[,...], sgd[:lr,...] or adam[:lr,...]")
    if name == "sgn" and (not values or "=" in values):
        return [("sgn", _sgn_options(spec, values) if values else {})]
    grid = []
    for value in values.split(",") if values else [""]:
        try:
            number = float(value) if value else DEFAULT_VALUES[name]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{spec!r}: {value!r} is not a number") from None
        if not number > 0 or (name == "sgn" and number != int(number)):
            raise argparse.ArgumentTypeError(
                f"{spec!r}: give positive {'integers' if name == 'sgn' else 'numbers'}")
        grid.append((name, number))
    return grid


def _sgn_options(spec: str, values: str) -> dict:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}``, each name an option of SGNConfig."""
    options = {}
    for item in values.split(","):
        key, equals, value = item.partition("=")
        if not equals or key not in SGNConfig._names():
            raise argparse.ArgumentTypeError(
                f"{spec!r}: {item!r} is not option=value with an option of SGNConfig "
                f"({', '.join(SGNConfig._names())})")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def label(name: str, value: float | dict) -> str:
    """``"SGN k=3"``, ``"SGD lr=0.1"``, ``"SGN preconditioner=kfac"`` for options, or
    :data:`SGN_DEFAULTS` for SGN at its defaults."""
    if value == {}:
        return SGN_DEFAULTS
    if isinstance(value, dict):
        return "SGN " + ", ".join(f"{key}={option}" for key, option in value.items())
    return f"SGN k={int(value)}" if name == "sgn" else f"{name.upper()} lr={value:g}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgn-bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--task", choices=TASKS, default="fashion-mnist")
    parser.add_argument("--data-dir", default=None,
                        help=f"data folder (fashion-mnist default: {data.FASHION_MNIST_DIR})")
    parser.add_argument("--model", choices=MODELS, default="mlp",
                        help="mlp (--sizes), mlp-ln (the MLP with layer normalization, in "
                        "plain PyTensor), rnn or lstm (a scan over image rows, in plain "
                        "PyTensor; --sizes row-hidden-classes, default 28-128-10 and "
                        "28-96-10), lenet5 (28x28 images) or vgg (CIFAR-10)")
    parser.add_argument("--sizes", default=None,
                        help="MLP widths, input to output (default: per task); for "
                        "--model rnn: row length, hidden units, classes")
    parser.add_argument("--activation", choices=("relu", "tanh", "sigmoid"), default=None,
                        help="hidden activation (default: relu; tanh for regression, "
                        "sigmoid for the autoencoder)")
    parser.add_argument("--frequency", type=float, default=10.0, help="sine task: f")
    parser.add_argument("--graph", choices=GRAPHS, default="library",
                        help="the library's models and losses, or plain PyTensor written "
                        "by hand (the MLP and every loss; LeNet-5 and VGG stay the "
                        "library's)")
    _add_optimizer_options(parser)
    _add_run_options(parser)
    parser.add_argument("--output", default="results/sgn-bench.json",
                        help="the JSON record; the plots go next to it")
    parser.add_argument("--no-plots", action="store_true", help="do not draw PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def _add_optimizer_options(parser: argparse.ArgumentParser) -> None:
    """The optimizer grid, and the SGN options applied to all of its SGN settings."""
    parser.add_argument("--optimizers", nargs="+", type=parse_optimizers,
                        default=[[("sgn", {})], [("sgd", 0.1)], [("adam", 1e-3)]],
                        help="sgn:K[,K...] (CG iterations), sgn:option=value[,...] (options "
                        "of SGNConfig), sgd:LR[,LR...], adam:LR[,LR...]")
    parser.add_argument("--min-damping", type=float, default=None,
                        help="SGN's damping floor, also its initial damping (default: "
                        "SGN's own, 0.1)")
    parser.add_argument("--curvature-fraction", type=float, default=None,
                        help="SGN's curvature mini-batch, a fraction of each batch "
                        "(default: SGN's own)")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of the runs: batch, budget, optimizers, seeds, mode, presets."""
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch-size", type=int, default=None,
                       help="default: 1000 for images, the full set for regression")
    batch.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                       help="the big-batch study: the whole grid at each batch size, then "
                       "each method's best grid point per batch size and budget, as a "
                       "table and a plot")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--time-budget", type=float, default=None,
                        help="seconds of optimizer steps per run (default 100)")
    budget.add_argument("--epochs", type=float, default=None, help="epochs per run")
    parser.add_argument("--checkpoints", default="5,10,25,50",
                        help="the table's columns: where to evaluate, in seconds (or "
                        "epochs with --epochs)")
    parser.add_argument("--eval-every", type=float, default=None,
                        help="evaluate every that many seconds (or epochs) as well, for "
                        "the plots")
    parser.add_argument("--target", type=float, default=None,
                        help="report the steps each run needed to reach this test accuracy "
                        "(or test loss, for regression)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one run per seed (initialisation and batch order); the table "
                        "shows medians")
    parser.add_argument("--mode", choices=MODES, default=None,
                        help="PyTensor compile mode (default: C if OpenBLAS is found, "
                        "else NUMBA)")
    parser.add_argument("--round-robin", action="store_true",
                        help="step all settings of a seed in turn, the one with the least "
                        "step time first, so load on the machine hits all alike "
                        "(equal-seconds comparisons; needs a time budget)")
    parser.add_argument("--count-build", action="store_true",
                        help="start each optimizer's clock at its construction: its build "
                        "and first (warm-up) step count as time spent, as a user's wall "
                        "clock counts them (each result's build_time is recorded either "
                        "way)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_SECONDS:g} s per run, checkpoints 5,10, evaluations "
                        f"every {QUICK_EVAL_EVERY:g} s, and for image classification "
                        f"batches {' and '.join(map(str, QUICK_BATCH_SIZES))} (about three "
                        f"minutes); with --paper, {QUICK_FRACTION:g} of each of the "
                        "paper's budgets")
    parser.add_argument("--paper", action="store_true",
                        help="the SGN paper's experiments (its models, batch sizes and "
                        "grids, Adam added) on every task available here, at equal seconds "
                        "and equal epochs, beside the published figures; --data-dir is then "
                        "CIFAR-10's folder (skipped without it); --task, --model, "
                        "--optimizers and the budget options are ignored")


def build_optimizer(name: str, value: float | dict, seed: int, arrays, args, mode,
                    comm=None) -> tuple:
    """``(optimizer, evaluate, construction)``: a fresh model (the same initial values
    for a given seed), one optimizer setting on it (data-parallel on ``comm``, if
    given), and the seconds the optimizer took to build."""
    inputs, outputs, loss, params = build_network(args, seed)
    started = time.perf_counter()
    if name == "sgn":
        options = {} if args.min_damping is None else {"damping": args.min_damping,
                                                        "min_damping": args.min_damping}
        if args.curvature_fraction is not None:
            options["curvature_fraction"] = args.curvature_fraction
        options.update(value if isinstance(value, dict) else {"max_cg_iters": int(value)})
        optimizer = SGN(loss, params, outputs, inputs, mode=mode, comm=comm, **options)
    else:
        rule = sgd if name == "sgd" else adam
        if comm is None:
            optimizer = FirstOrder(inputs, loss, rule(loss, params, value), mode=mode)
        else:
            parallel = DataParallel(comm, loss.dtype)
            total, gradients = parallel.loss_and_gradients(loss, params)
            optimizer = FirstOrder(inputs, total, rule(gradients, params, value), mode=mode,
                                   parallel=parallel)
    construction = time.perf_counter() - started
    evaluate = make_evaluator(inputs, outputs, loss, arrays[2], arrays[3], mode=mode,
                              accuracy=args.task in CLASSIFICATION)
    return optimizer, evaluate, construction


def evaluation_marks(marks: Sequence[float], args) -> list[float]:
    """The checkpoints, with one every ``--eval-every`` (seconds or epochs) added."""
    if not args.eval_every:
        return list(marks)
    budget = args.epochs if args.epochs is not None else args.time_budget
    return sorted({*marks, *np.arange(args.eval_every, budget, args.eval_every)})


def run_one(name: str, value: float | dict, seed: int, arrays, args, mode, marks,
            comm=None) -> TrainResult:
    """Build a fresh model and train it with one optimizer setting (data-parallel on the
    processes of ``comm``, if given)."""
    optimizer, evaluate, construction = build_optimizer(name, value, seed, arrays, args, mode,
                                                        comm)
    by_epochs = args.epochs is not None
    steps_per_epoch = max(1, len(arrays[0]) // args.batch_size)
    marks = evaluation_marks(marks, args)
    return train(optimizer, evaluate, arrays[:2], batch_size=args.batch_size,
                 time_budget=None if by_epochs else args.time_budget, max_epochs=args.epochs,
                 checkpoints=[mark * steps_per_epoch for mark in marks] if by_epochs
                 else marks, seed=seed, name=f"{label(name, value)} seed {seed}",
                 progress=not args.no_progress, comm=comm, construction=construction,
                 count_build=args.count_build)


def run_round_robin(seed: int, arrays, args, mode, marks) -> list[TrainResult]:
    """Every setting of ``args.optimizers`` on one seed, stepped in turn
    (:func:`sgn_theano.bench.round_robin.train_round_robin`); the results in their order."""
    built = {label(name, value): build_optimizer(name, value, seed, arrays, args, mode)
             for name, value in args.optimizers}
    results = train_round_robin({name: (optimizer, evaluate)
                                 for name, (optimizer, evaluate, _) in built.items()},
                                arrays[:2], batch_size=args.batch_size,
                                time_budget=args.time_budget,
                                checkpoints=evaluation_marks(marks, args), seed=seed,
                                progress=not args.no_progress,
                                construction={name: seconds
                                              for name, (_, _, seconds) in built.items()},
                                count_build=args.count_build)
    return list(results.values())


def run_settings(arrays, args, mode, marks, comm=None) -> Iterator[tuple[tuple, TrainResult]]:
    """``(setting, result)`` for every setting of ``args.optimizers`` and every seed, in
    seed order per setting: one run after another, or with ``--round-robin`` a seed's
    settings stepped in turn."""
    if args.round_robin:
        by_seed = [run_round_robin(seed, arrays, args, mode, marks) for seed in args.seeds]
        for index, setting in enumerate(args.optimizers):
            for results in by_seed:
                yield setting, results[index]
        return
    for name, value in args.optimizers:
        for seed in args.seeds:
            yield (name, value), run_one(name, value, seed, arrays, args, mode, marks, comm)


def _network_label(args) -> str:
    """The model as tables and plots name it: ``MLP 784-256-256-10``, ``RNN 28-128-10``,
    ``lenet5``."""
    return (f"{args.model.upper()} {args.sizes}" if args.model in ("mlp", "mlp-ln", *RNN_SIZES)
            else args.model)


def _apply_defaults(args) -> None:
    sizes, activation, batch = TASK_DEFAULTS[args.task]
    args.sizes = args.sizes or RNN_SIZES.get(args.model, sizes)
    args.activation = args.activation or activation
    if args.quick:
        args.time_budget, args.checkpoints = QUICK_SECONDS, "5,10"
        args.eval_every = args.eval_every or QUICK_EVAL_EVERY
        if args.task in CLASSIFICATION and not (args.batch_size or args.batch_sizes):
            args.batch_sizes = list(QUICK_BATCH_SIZES)
    if args.epochs is None and args.time_budget is None:
        args.time_budget = 100.0
    args.optimizers = [setting for grid in args.optimizers for setting in grid]
    args.batch_size = batch if args.batch_size is None else args.batch_size


def world():
    """``mpi4py``'s ``COMM_WORLD`` when this process was started by ``mpirun`` with
    other processes, else ``None`` (mpi4py is imported only then)."""
    if not any(os.environ.get(name) for name in MPI_LAUNCHER_VARIABLES):
        return None
    from mpi4py import MPI

    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sgn-bench`` with the command-line arguments ``argv``; the exit status.

    Started by ``mpirun -n P``, it trains data-parallel: every process reads the data
    and takes its part of each batch; only rank 0 prints and writes files.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["sgn-bench", *argv])
    comm = world()
    if comm is not None and comm.Get_rank() != 0:
        args.output, args.no_progress = "", True
        with open(os.devnull, "w") as silent, contextlib.redirect_stdout(silent):
            return _main(args, comm)
    return _main(args, comm)


def _main(args, comm) -> int:
    if args.paper:
        if comm is not None:  # its runs read back the records rank 0 alone writes
            print("sgn-bench: --paper runs in one process; start it without mpirun",
                  file=sys.stderr)
            return 2
        return _paper(args)
    _apply_defaults(args)
    if args.round_robin and (comm is not None or args.epochs is not None):
        print("sgn-bench: --round-robin compares at equal seconds in one process: give a "
              "--time-budget and start it without mpirun", file=sys.stderr)
        return 2
    if comm is not None and comm.Get_rank() == 0:
        print(f"sgn-bench: data-parallel over {comm.Get_size()} processes (mpirun)")
    # What a benchmark process wants, done here and not on import (docs, "Performance").
    reuse_freed_memory()
    link_openblas()
    mode_name = args.mode or default_mode_name()
    mode = compile_mode(mode_name)
    try:
        arrays = training_set_on_device(load_task(args), mode)
    except (FileNotFoundError, ImportError) as error:
        print(f"sgn-bench: {error}", file=sys.stderr)
        return 2
    batch_sizes = args.batch_sizes or [args.batch_size or len(arrays[0])]
    budget = args.epochs if args.epochs is not None else args.time_budget
    marks = sorted({float(mark) for mark in args.checkpoints.split(",") if mark.strip()
                    and 0 < float(mark) < budget} | {budget})
    model = _network_label(args)
    unit = "epochs" if args.epochs is not None else "s"
    print(f"sgn-bench: {args.task}, {model} {args.activation}, batch "
          f"{', '.join(map(str, batch_sizes))}, {budget:g} {unit} per run, seeds {args.seeds}, "
          f"mode {mode_name}")
    study: Study = {}
    for batch_size in batch_sizes:
        args.batch_size = batch_size
        methods = study.setdefault(batch_size, {})
        for (name, value), result in run_settings(arrays, args, mode, marks, comm):
            methods.setdefault(name.upper(), {}).setdefault(label(name, value),
                                                            []).append(result)
        print(f"\nbatch {batch_size}:" if len(batch_sizes) > 1 else "")
        print(format_table({name: results for settings in methods.values()
                            for name, results in settings.items()}, marks, args))
    best = None
    if args.batch_sizes:
        best = best_settings(study, marks, "epoch" if unit == "epochs" else "time",
                             metric_of(args.task))
        print(f"\nbest grid point of each method (median over seeds {args.seeds}):")
        print(format_batch_study(best, marks, metric_of(args.task), unit[:2]))
    if args.output:
        write_record(study, args, mode_name, marks, best)
    return 0


def _paper(args) -> int:
    """``--paper``: :func:`sgn_theano.bench.paper.run_paper` through :func:`main`."""
    options = [*(["--mode", args.mode] if args.mode else []),
               *(["--no-plots"] if args.no_plots else []),
               *(["--no-progress"] if args.no_progress else [])]
    summaries = run_paper(main, options, args.output,
                          fraction=QUICK_FRACTION if args.quick else 1.0,
                          data_dir=args.data_dir, seeds=args.seeds, command=args.command)
    if not summaries:
        return 2
    print("\nthe SGN paper's experiments, published (TITAN X GPU, Theano) and here:")
    print(format_paper_table(summaries))
    return 0


def write_record(study: Study, args, mode_name: str, marks: Sequence[float],
                 best: dict | None = None) -> None:
    """The JSON record at ``args.output`` and, unless ``--no-plots``, its PNG plots (with
    ``best``, the big-batch study's table as well, and its plot)."""
    several = len(study) > 1
    runs = [{**result.to_dict(), "optimizer": f"{name} (batch {batch_size})" if several
             else name, "method": method, "batch_size": batch_size, "seed": seed}
            for batch_size, methods in study.items() for method, settings in methods.items()
            for name, results in settings.items() for seed, result in zip(args.seeds, results)]
    record = {
        "config": {**vars(args), "optimizers": [list(spec) for spec in args.optimizers],
                   "mode": mode_name, "metric": metric_of(args.task), "marks": list(marks)},
        "machine": machine_facts(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "runs": runs,
    }
    if best is not None:
        record["batch_study"] = {str(size): {method: [{"setting": name, "value": value}
                                                      for name, value in row]
                                             for method, row in methods.items()}
                                 for size, methods in best.items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as stream:
        json.dump(record, stream, indent=1)
    print(f"\nwrote {args.output}")
    if args.no_plots:
        return
    prefix = os.path.splitext(args.output)[0]
    try:
        paths = plot_runs(record, prefix)
        if best is not None:
            unit = "ep" if args.epochs is not None else "s"
            paths.append(plot_batch_study(
                best, marks, record["config"]["metric"], unit, f"{prefix}-batch-sizes.png",
                title=f"{args.task}, {_network_label(args)}"
                f", seeds {args.seeds}: equal wall-clock budgets"))
    except ImportError:
        print("sgn-bench: matplotlib is not installed, so no plots "
              "(`pip install sgn_theano[bench]`)", file=sys.stderr)
        return
    for path in paths:
        print(f"wrote {path}")
