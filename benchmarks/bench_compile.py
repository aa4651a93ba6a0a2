"""Benchmark: how long it takes to build an SGN step, with the library's losses and with
losses written by hand.

Every case is a network written in plain PyTensor, as a user writes one (an MLP
784-20-...-20-10 with ``pt.tanh``, ``h * (h > 0)``, ``pt.maximum(h, 0)`` or
``pt.sigmoid``; with ``--rnn`` a ``scan`` over the 28 rows of each image, 128 tanh units,
:func:`sgn_theano.bench.tasks.plain_rnn`), or LeNet-5 from :mod:`sgn_theano.models`,
and one loss: the
library's (:mod:`sgn_theano.losses`) or the same loss written by hand. A build is
the construction of an :class:`~sgn_theano.SGN` (default step: line search + trust
region; or fixed step) or the compilation of :func:`~sgn_theano.sgn` updates with
``pytensor.function(..., mode=compile_mode(...))``, plus its first call on an 8-row
batch (JIT backends such as NUMBA compile there). The two losses of one network and
build are measured as a pair, alternating (library then hand, then hand then library,
...), with a garbage collection before each build so no build pays for the garbage of
the one before; each figure is the median over ``--repeats`` builds, and
``hand / library`` the ratio of the pair's medians. Beside each build, the compile
(and first call) of the same model's loss-and-gradient function in the same mode is
timed the same way, and ``/ gradient`` is the build's median over that one's.

Run it twice: the first run fills PyTensor's compile cache, the second measures with a
warm cache (the figures the docs report).

    python benchmarks/bench_compile.py [--modes C NUMBA] [--quick] [--depths 1 3] [--no-lenet]
                                       [--width 20] [--builds "SGN k=3" ...] [--repeats 3]
                                       [--rnn] [--no-mlp]
                                       [--output results/bench_compile.json]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections.abc import Callable

import numpy as np
import pytensor
import pytensor.tensor as pt
from report import write_report

from sgn_theano import SGN, binary_cross_entropy, sgn, softmax_cross_entropy, squared_error
from sgn_theano.compilation.allocator import reuse_freed_memory
from sgn_theano.bench.tasks import plain_rnn
from sgn_theano.models import lenet5
from sgn_theano.compilation.modes import MODES, compile_mode, default_mode_name, link_openblas

ACTIVATIONS: dict[str, Callable] = {
    "tanh": pt.tanh,
    "relu h*(h>0)": lambda h: h * (h > 0),
    "relu maximum": lambda h: pt.maximum(h, 0),
    "sigmoid": pt.sigmoid,
}


def _hand_softmax_cross_entropy(z, y):
    return -pt.mean(pt.special.log_softmax(z, axis=1)[pt.arange(y.shape[0]), y])


def _hand_squared_error(z, t):
    return 0.5 * pt.mean(pt.sum((z - t) ** 2, axis=1))


def _hand_binary_cross_entropy(z, t):
    p = pt.sigmoid(z)
    return -pt.mean(pt.sum(t * pt.log(p) + (1 - t) * pt.log(1 - p), axis=1))


#: loss name -> (the library's loss, the same loss written by hand, target kind)
LOSSES = {
    "softmax cross-entropy": (softmax_cross_entropy, _hand_softmax_cross_entropy, "labels"),
    "squared error": (squared_error, _hand_squared_error, "real"),
    "binary cross-entropy": (binary_cross_entropy, _hand_binary_cross_entropy, "unit"),
}
#: Plain CG, no curvature momentum: the "SGN k=..." builds are SGN's step before K-FAC's
#: update became the default (2026-12-04), so their figures compare across dates.
PLAIN_CG = {"preconditioner": None, "model_momentum": False}
#: build name -> options of SGN, or None for the sgn() updates
BUILDS = {
    "SGN defaults": {},
    "SGN k=1": {"max_cg_iters": 1, **PLAIN_CG},
    "SGN k=3": {"max_cg_iters": 3, **PLAIN_CG},
    "SGN k=10": {"max_cg_iters": 10, **PLAIN_CG},
    "SGN k=20": {"max_cg_iters": 20, **PLAIN_CG},
    "SGN k=50": {"max_cg_iters": 50, **PLAIN_CG},
    "SGN k=3 fixed": {"max_cg_iters": 3, "line_search": False, "trust_region": False,
                      **PLAIN_CG},
    "SGN k=20 fixed": {"max_cg_iters": 20, "line_search": False, "trust_region": False,
                       **PLAIN_CG},
    "sgn() k=3": None,
}
#: The reference build: the loss and its gradient, compiled in the same mode.
GRADIENT = "loss and gradient"
WIDTH, CLASSES, BATCH = 20, 10, 8
RNN_UNITS = 128
#: The builds of the RNN cases: plain CG written out (k = 1, 3) and looped (50), and the
#: defaults.
RNN_BUILDS = ("SGN k=1", "SGN k=3", "SGN k=50", "SGN defaults")


def hand_written_mlp(x, depth: int, activation: Callable, rng, width: int = WIDTH):
    """An MLP 784-w-...-w-10 (``depth`` hidden layers of ``width``) written in plain
    PyTensor."""
    sizes = [784] + [width] * depth + [CLASSES]
    h, params = x, []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = pytensor.shared((rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in))
                            .astype("float32"), name=f"W{index}")
        b = pytensor.shared(np.zeros(fan_out, "float32"), name=f"b{index}")
        params += [w, b]
        h = h @ w + b
        if index < depth:
            h = activation(h)
    return h, params


def build_case(model: str, depth: int, width: int, activation: str, loss_name: str,
               hand: bool):
    """(loss, params, outputs, inputs, batch) for one case."""
    rng = np.random.default_rng(0)
    x = pt.matrix("x", dtype="float32")
    if model == "lenet5":
        outputs, params = lenet5(x, seed=0, dtype="float32")
    elif model == "rnn":
        outputs, params = plain_rnn(x, (28, RNN_UNITS, CLASSES), activation, seed=0)
    else:
        outputs, params = hand_written_mlp(x, depth, ACTIVATIONS[activation], rng, width)
    library_loss, hand_loss, targets = LOSSES[loss_name]
    y = pt.ivector("y") if targets == "labels" else pt.matrix("y", dtype="float32")
    loss = (hand_loss if hand else library_loss)(outputs, y)
    if targets == "labels":
        labels = rng.integers(0, CLASSES, BATCH).astype(np.int32)
    elif targets == "real":
        labels = rng.standard_normal((BATCH, CLASSES)).astype(np.float32)
    else:
        labels = rng.random((BATCH, CLASSES)).astype(np.float32)
    batch = (rng.random((BATCH, 784)).astype(np.float32), labels)
    return loss, params, outputs, [x, y], batch


def time_build(case: tuple, build: str, mode) -> tuple[float, float]:
    """Seconds to construct the step function, and seconds of its first call."""
    loss, params, outputs, inputs, batch = build_case(*case)
    options = BUILDS.get(build)
    start = time.perf_counter()
    if build == GRADIENT:
        step = pytensor.function(inputs, [loss, *pytensor.grad(loss, params)], mode=mode)
    elif options is None:
        step = pytensor.function(inputs, loss, updates=sgn(loss, params, outputs, max_cg_iters=3),
                                 mode=mode)
    else:
        step = SGN(loss, params, outputs, inputs, mode=mode, **options).step
    constructed = time.perf_counter()
    step(*batch)
    return constructed - start, time.perf_counter() - constructed


def cases(quick: bool, depths: list[int] | None = None, lenet: bool = True,
          width: int = WIDTH, builds: list[str] | None = None, rnn: bool = False,
          mlp: bool = True) -> list[tuple[tuple, str]]:
    """((model, depth, width, activation, loss), build) for every pair of measurements;
    ``depths`` (of the MLPs) default to 1, 3, 5 with ``quick``, else 1 to 5; ``builds``
    replace the default grid of builds by these builds on every MLP case and LeNet-5;
    ``rnn`` adds the RNN with :data:`RNN_BUILDS`; ``mlp=False`` leaves the MLPs out."""
    depths = depths or ((1, 3, 5) if quick else (1, 2, 3, 4, 5))
    activations = ("tanh", "relu h*(h>0)") if quick else tuple(ACTIVATIONS)
    loss_names = ("softmax cross-entropy",) if quick else tuple(LOSSES)
    grid = [(("mlp", depth, width, activation, loss_name), build)
            for depth in depths for activation in activations for loss_name in loss_names
            for build in builds or ["SGN k=3"]]
    if not quick and not builds:  # every build on one depth, for two activations
        grid += [(("mlp", 3, width, activation, loss_name), build)
                 for activation in ("tanh", "relu h*(h>0)") for loss_name in LOSSES
                 for build in BUILDS if build != "SGN k=3"]
    lenet_builds = builds or (("SGN k=3",) if quick else ("SGN k=3", "SGN k=3 fixed",
                                                         "sgn() k=3"))
    if lenet:
        grid += [(("lenet5", 0, 0, "relu", "softmax cross-entropy"), build)
                 for build in lenet_builds]
    if not mlp:
        grid = [(case, build) for case, build in grid if case[0] != "mlp"]
    if rnn:
        grid += [(("rnn", 0, RNN_UNITS, "tanh", "softmax cross-entropy"), build)
                 for build in RNN_BUILDS]
    return grid


def measure_pair(case: tuple, build: str, mode, repeats: int) -> dict[str, dict]:
    """Median figures of the library's loss and the hand-written one, built alternately."""
    runs: dict[tuple, list] = {}
    for repeat in range(repeats):
        for hand in (False, True) if repeat % 2 == 0 else (True, False):
            for what in (build, GRADIENT):
                gc.collect()
                runs.setdefault((hand, what), []).append(
                    time_build((*case, hand), what, mode))
    figures = {}
    for hand, name in ((False, "library"), (True, "hand")):
        construct, first_call = (float(np.median(values))
                                 for values in zip(*runs[hand, build]))
        gradient = float(np.median([sum(run) for run in runs[hand, GRADIENT]]))
        figures[name] = {"construct_s": construct, "first_call_s": first_call,
                         "build_s": construct + first_call, "gradient_build_s": gradient,
                         "over_gradient": (construct + first_call) / gradient}
    return figures


def describe(case: tuple) -> str:
    model, depth, width, activation, loss_name = case
    network = ("LeNet-5" if model == "lenet5" else f"RNN 28-{width}-10 {activation}"
               if model == "rnn" else f"MLP {depth}x{width} {activation}")
    return f"{network}, {loss_name}"


def print_table(mode_name: str, rows: list[dict]) -> None:
    print(f"\nmode {mode_name}: build = construction + first call, seconds (median)")
    print(f"{'network, loss':48s} {'build':15s} {'library':>8s} {'by hand':>8s} "
          f"{'hand/lib':>8s} {'lib/grad':>8s} {'hand/grad':>9s}")
    for row in rows:
        print(f"{row['case']:48s} {row['build']:15s} {row['library_s']:8.2f} "
              f"{row['hand_s']:8.2f} {row['hand_over_library']:8.2f} "
              f"{row['library']['over_gradient']:8.2f} {row['hand']['over_gradient']:9.2f}")
    worst = max(rows, key=lambda row: row["hand_s"])
    worst_ratio = max(rows, key=lambda row: row["hand_over_library"])
    print(f"slowest hand-written build: {worst['hand_s']:.2f} s ({worst['case']}, "
          f"{worst['build']}); largest ratio: {worst_ratio['hand_over_library']:.2f} "
          f"({worst_ratio['case']}, {worst_ratio['build']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=None,
                        help="compile modes (default: the library's default mode)")
    parser.add_argument("--quick", action="store_true",
                        help="depths 1, 3, 5; tanh and h*(h>0); softmax cross-entropy")
    parser.add_argument("--depths", type=int, nargs="+", default=None,
                        help="hidden layers of the MLPs (default: 1 3 5 with --quick, else 1-5)")
    parser.add_argument("--width", type=int, default=WIDTH, help="units per hidden layer")
    parser.add_argument("--builds", nargs="+", choices=sorted(BUILDS), default=None,
                        help="builds to measure on every MLP case (default: a grid)")
    parser.add_argument("--lenet", action=argparse.BooleanOptionalAction, default=True,
                        help="measure LeNet-5 too")
    parser.add_argument("--rnn", action="store_true",
                        help="measure the scan RNN too (builds: " + ", ".join(RNN_BUILDS) + ")")
    parser.add_argument("--mlp", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the MLPs")
    parser.add_argument("--repeats", type=int, default=3, help="builds of each case")
    parser.add_argument("--output", default="results/bench_compile.json")
    args = parser.parse_args()
    reuse_freed_memory()  # what a benchmark process wants (docs, "Performance"); not on import
    link_openblas()
    grid = cases(args.quick, args.depths, args.lenet, args.width, args.builds, args.rnn,
                 args.mlp)
    report = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "repeats": args.repeats, "modes": {}}
    for mode_name in args.modes or [default_mode_name()]:
        mode = compile_mode(mode_name)
        rows = []
        for index, (case, build) in enumerate(grid, start=1):
            figures = measure_pair(case, build, mode, args.repeats)
            library, hand = figures["library"]["build_s"], figures["hand"]["build_s"]
            rows.append({"case": describe(case), "build": build, "library_s": library,
                         "hand_s": hand, "hand_over_library": hand / library, **figures})
            print(f"[{mode_name} {index}/{len(grid)}] {describe(case)}, {build}: library "
                  f"{library:.2f} s, by hand {hand:.2f} s", flush=True)
        report["modes"][mode_name] = rows
        print_table(mode_name, rows)
    write_report(report, args.output)


if __name__ == "__main__":
    main()
