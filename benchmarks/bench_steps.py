"""Micro-benchmark: time of a gradient, a G v, SGD/Adam steps and SGN steps, as ratios.

All functions of one model are timed in interleaved rounds (same load for each), and
each figure is reported as a median and as a ratio to the gradient's median.

    python benchmarks/bench_steps.py [--mode C] [--rounds 7] [--output results/bench_steps.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pytensor
import pytensor.tensor as pt

from sgn_theano import SGN, adam, gauss_newton_product, sgd, softmax_cross_entropy
from sgn_theano.models import lenet5, mlp
from sgn_theano.modes import MODES, compile_mode, default_mode_name

#: name -> (description, builder: x -> (logits, params)); inputs are 784 features.
MODELS = {
    "a": ("MLP 784-20-20-20-10 tanh",
          lambda x: mlp(x, (784, 20, 20, 20, 10), activation="tanh", seed=0)),
    "b": ("MLP 784-256-256-10 relu",
          lambda x: mlp(x, (784, 256, 256, 10), activation="relu", seed=0)),
    "lenet": ("LeNet-5 relu, im2col convolution", lambda x: lenet5(x, seed=0)),
    "lenet-shifted": ("LeNet-5 relu, shifted-sum convolution",
                      lambda x: lenet5(x, seed=0, conv_method="shifted")),
}
FIGURES = ("gradient", "G v", "SGD step", "Adam step", "SGN k=3 (fixed)",
           "SGN k=3 (trust region + line search)", "SGN k=10 (fixed)",
           "SGN k=10 (trust region + line search)")


def build(model: str, mode, batch: int, figures=FIGURES):
    """Compiled callables of one model, each taking no argument; their compile times
    (first call included: JIT backends compile there); and, for SGN, the CG iterations
    each call ran (CG stops early once the residual vanishes, e.g. when repeated steps on
    one batch have fitted it, so the timings are read together with them)."""
    _, builder = MODELS[model]
    rng = np.random.default_rng(0)
    xb = rng.random((batch, 784), dtype=np.float32)
    yb = rng.integers(0, 10, batch).astype(np.int32)
    functions, compile_s, cg_iterations = {}, {}, {}

    def add(name, make):
        """Build a fresh model, let ``make`` compile a callable on it, and time that."""
        if name not in figures and not (name == "gradient + G v" and "G v" in figures):
            return
        x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
        logits, params = builder(x)
        loss = softmax_cross_entropy(logits, y)
        started = time.perf_counter()
        call = make(x, y, logits, params, loss)
        call()
        compile_s[name] = time.perf_counter() - started
        functions[name] = call

    def compiled(x, y, outputs, updates=None):
        function = pytensor.function([x, y], outputs, updates=updates, mode=mode)
        return lambda: function(xb, yb)

    def sgn_step(x, y, logits, params, loss, label, k, step_control):
        optimizer = SGN(loss, params, logits, [x, y], max_cg_iters=k, cg_tol=0.0,
                        trust_region=step_control, line_search=step_control, mode=mode)
        iterations = cg_iterations.setdefault(label, [])
        return lambda: iterations.append(optimizer.step(xb, yb).cg_iterations)

    add("gradient", lambda x, y, z, p, loss: compiled(x, y, [loss, *pytensor.grad(loss, p)]))
    add("gradient + G v", lambda x, y, z, p, loss: compiled(
        x, y, [loss, *gauss_newton_product(loss, z, p, pytensor.grad(loss, p))]))
    add("SGD step", lambda x, y, z, p, loss: compiled(x, y, loss, sgd(loss, p, 0.1)))
    add("Adam step", lambda x, y, z, p, loss: compiled(x, y, loss, adam(loss, p, 1e-3)))
    for k in (3, 10):
        for step_control in (False, True):
            label = f"SGN k={k}" + (" (trust region + line search)" if step_control
                                    else " (fixed)")
            add(label, lambda *model, label=label, k=k, step_control=step_control: sgn_step(
                *model, label, k, step_control))
    return functions, compile_s, cg_iterations


def interleaved_medians(functions: dict, rounds: int, calls: int) -> dict:
    samples = {name: [] for name in functions}
    for _ in range(rounds):
        for name, call in functions.items():
            started = time.perf_counter()
            for _ in range(calls):
                call()
            samples[name].append((time.perf_counter() - started) / calls)
    return {name: float(np.median(times)) for name, times in samples.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, default=None)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["a", "b"])
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=5, help="calls per round and function")
    parser.add_argument("--figures", nargs="+", choices=FIGURES, default=list(FIGURES),
                        help="what to time (the gradient is always timed)")
    parser.add_argument("--output", default="results/bench_steps.json")
    args = parser.parse_args()
    mode_name = args.mode or default_mode_name()
    mode = compile_mode(mode_name)
    report = {"mode": mode_name, "batch_size": args.batch_size, "cpus": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d"), "models": {}}
    for model in args.models:
        functions, compile_s, cg_iterations = build(model, mode, args.batch_size,
                                                    {"gradient", *args.figures})
        medians = interleaved_medians(functions, args.rounds, args.calls)
        if "gradient + G v" in medians:
            medians["G v"] = medians.pop("gradient + G v") - medians["gradient"]
            compile_s["G v"] = compile_s.pop("gradient + G v")
        gradient = medians["gradient"]
        print(f"\nmodel {model}: {MODELS[model][0]}, batch {args.batch_size}, float32, "
              f"mode {mode_name}")
        mean_iterations = {name: float(np.mean(counts)) for name, counts in cg_iterations.items()}
        print(f"{'figure':<42} {'median ms':>10} {'/ gradient':>11} {'compile s':>10} "
              f"{'CG iters':>9}")
        for name, seconds in medians.items():
            iterations = f"{mean_iterations[name]:.1f}" if name in mean_iterations else ""
            print(f"{name:<42} {seconds * 1e3:>10.2f} {seconds / gradient:>11.2f} "
                  f"{compile_s[name]:>10.1f} {iterations:>9}")
        report["models"][model] = {"median_s": medians, "compile_s": compile_s,
                                   "mean_cg_iterations": mean_iterations,
                                   "ratio_to_gradient": {n: s / gradient
                                                         for n, s in medians.items()}}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as stream:
        json.dump(report, stream, indent=1)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
