"""Micro-benchmark: time of a gradient, a G v, SGD/Adam steps and SGN steps, as ratios.

"G v" is one Gauss-Newton product of a fixed vector and "3 G v" three chained products
(no CG), each a compiled function of its own that computes the forward pass once: never a
difference of two timings, which noise can make negative. Every call waits for its
results on the device (JAX dispatches asynchronously) without copying them to the host.
For each compile mode and
model, all functions are timed in interleaved rounds (same
load for each) and every figure is reported as a median and as a ratio to the
gradient's median; also the compile time of each function (first call included: JIT
backends compile there) and, in the C and Python-linker modes, the peak memory of one
call (numpy buffers, traced by ``tracemalloc``). SGN steps restore the optimizer state before each
call, outside the timed and traced region, so every call does the same work (k CG
iterations from the same point).

With ``--yardsticks`` the JAX and PyTorch SGN of ``../shared/yardsticks`` run their
``--mode bench`` on the same models between the rounds (same load), and the table gives
sgn_theano / yardstick for each figure; on the CNNs (which the yardsticks do not have)
``torch_cnn.py`` times PyTorch's gradient of the same network instead.

    python benchmarks/bench_steps.py [--modes C NUMBA JAX] [--models a b lenet vgg]
                                     [--yardsticks] [--output results/bench_steps.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytensor
import pytensor.tensor as pt
from report import write_report

from sgn_theano import SGN, adam, gauss_newton_product, sgd, softmax_cross_entropy
from sgn_theano.compilation.allocator import reuse_freed_memory
from sgn_theano.models import LENET5, VGG_SMALL, cnn, mlp
from sgn_theano.compilation.modes import MODES, compile_mode, default_mode_name, link_openblas

#: The CNNs, as ``sgn_theano.models.cnn`` and ``torch_cnn.py`` take them: (image shape, layers).
CNNS = {"lenet": ((28, 28, 1), LENET5), "vgg": ((32, 32, 3), VGG_SMALL)}
#: name -> (description, builder: x -> (logits, params)); the inputs are rows of
#: :func:`features` numbers.
MODELS = {
    "a": ("MLP 784-20-20-20-10 tanh",
          lambda x: mlp(x, (784, 20, 20, 20, 10), activation="tanh", seed=0)),
    "b": ("MLP 784-256-256-10 relu",
          lambda x: mlp(x, (784, 256, 256, 10), activation="relu", seed=0)),
    "lenet": ("LeNet-5 relu, im2col convolution", lambda x: cnn(x, *CNNS["lenet"], seed=0)),
    "lenet-shifted": ("LeNet-5 relu, shifted-sum convolution",
                      lambda x: cnn(x, *CNNS["lenet"], seed=0, conv_method="shifted")),
    "vgg": ("VGG-style CIFAR-10 net (3x3 convs 32-64-64), im2col convolution",
            lambda x: cnn(x, *CNNS["vgg"], seed=0)),
}
CG_ITERATIONS = (3, 5, 10)
#: The curvature mini-batch of the figures that use one (``SGN(curvature_fraction=...)``).
CURVATURE_FRACTION = 0.1
SUB_BATCH = f"line search + trust region, curvature_fraction={CURVATURE_FRACTION:g}"
#: Heavy damping and a tolerance, so that CG stops after a few iterations: with early
#: exit, k = 60 then costs about what k = 5 does (the early-exit figures of the docs).
EARLY_STOP = {"damping": 100.0, "min_damping": 100.0, "cg_tol": 1e-3}
EARLY_STOP_LABEL = "rho=100, cg_tol=1e-3"
EARLY_STOP_FIGURES = tuple(f"SGN k={k} ({kind}, {EARLY_STOP_LABEL})" for k in (5, 60)
                           for kind in ("fixed", "line search + trust region"))
#: The K-FAC step at the defaults otherwise (its inverses are refreshed every
#: ``kfac_inverse_interval`` steps: timed apart, as "K-FAC inverse refresh").
KFAC_FIGURE = f"SGN k=3 ({SUB_BATCH}, kfac)"
#: SGN at its defaults (:class:`sgn_theano.SGNConfig`: K-FAC, one PCG iteration and
#: model momentum), between refreshes too.
DEFAULTS_FIGURE = "SGN defaults"
KFAC_REFRESH = "K-FAC inverse refresh"
FIGURES = ("gradient", "G v", "3 G v", "SGD step", "Adam step", *(
    f"SGN k={k} ({kind})" for k in CG_ITERATIONS
    for kind in ("fixed", "line search + trust region", SUB_BATCH)), *EARLY_STOP_FIGURES,
    KFAC_FIGURE, DEFAULTS_FIGURE, KFAC_REFRESH)
#: yardstick figure -> ours (the yardsticks' SGN: exactly k CG iterations, fixed rho)
YARDSTICK_FIGURES = {"grad": "gradient", "sgd_step": "SGD step",
                     "adam_step": "Adam step",
                     **{f"sgn_k{k}": f"SGN k={k} (fixed)" for k in CG_ITERATIONS}}
#: Modes whose buffers are numpy arrays, which tracemalloc sees (NUMBA and JAX allocate
#: their own).
TRACED_MODES = ("C", "FAST_RUN", "FAST_COMPILE")
YARDSTICKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                          "shared", "yardsticks")


def features(model: str) -> int:
    """Numbers per input row: an image's for the CNNs, else 784."""
    image_shape = CNNS.get(model.split("-")[0], ((784,),))[0]
    return int(np.prod(image_shape))


def build(model: str, mode, batch: int, figures=FIGURES):
    """Compiled callables of one model, each taking no argument; their compile times;
    their peak traced memory; and, for SGN, the CG iterations each call ran."""
    _, builder = MODELS[model]
    rng = np.random.default_rng(0)
    xb = rng.random((batch, features(model)), dtype=np.float32)
    yb = rng.integers(0, 10, batch).astype(np.int32)
    functions, compile_s, peak_bytes, cg_iterations = {}, {}, {}, {}

    def add(name, make):
        """Build a fresh model, let ``make`` compile a callable on it, and time that."""
        if name not in figures:
            return
        x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
        logits, params = builder(x)
        loss = softmax_cross_entropy(logits, y)
        started = time.perf_counter()
        call = make(x, y, logits, params, loss)
        preparation(call)()
        call()
        compile_s[name] = time.perf_counter() - started
        preparation(call)()
        tracemalloc.start()
        call()
        peak_bytes[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        functions[name] = call

    def compiled(x, y, outputs, updates=None):
        outputs = outputs if isinstance(outputs, list) else [outputs]
        function = pytensor.function([x, y], outputs, updates=updates, mode=mode,
                                     on_unused_input="ignore")
        return lambda: finished(function(xb, yb))

    def fixed_vectors(params):
        return [pytensor.shared(rng.standard_normal(p.get_value().shape).astype(p.dtype))
                for p in params]

    def sgn_step(x, y, logits, params, loss, label, options):
        optimizer = SGN(loss, params, logits, [x, y], mode=mode, **options)
        if optimizer.config.kronecker_factored:  # start from refreshed inverses, and time
            optimizer.step(xb, yb)  # steps between refreshes (the refresh is a figure)
        start = optimizer.state_dict()
        iterations = cg_iterations.setdefault(label, [])

        def call():
            iterations.append(optimizer.step(xb, yb).cg_iterations)
        # the same work on every call: restore the state first (not timed)
        call.prepare = lambda: optimizer.load_state_dict(start)
        return call

    add("gradient", lambda x, y, z, p, loss: compiled(x, y, [loss, *pytensor.grad(loss, p)]))
    add("G v", lambda x, y, z, p, loss: compiled(
        x, y, chained_products(loss, z, p, fixed_vectors(p), 1)))
    add("3 G v", lambda x, y, z, p, loss: compiled(
        x, y, chained_products(loss, z, p, fixed_vectors(p), 3)))
    add("SGD step", lambda x, y, z, p, loss: compiled(x, y, loss, sgd(loss, p, 0.1)))
    add("Adam step", lambda x, y, z, p, loss: compiled(x, y, loss, adam(loss, p, 1e-3)))
    settings = [(f"SGN k={k} ({kind})", plain_cg(k, line_search, fraction))
                for k in CG_ITERATIONS
                for kind, line_search, fraction in (("fixed", False, 1.0),
                                                    ("line search + trust region", True, 1.0),
                                                    (SUB_BATCH, True, CURVATURE_FRACTION))]
    settings += [(f"SGN k={k} ({kind}, {EARLY_STOP_LABEL})",
                  {**plain_cg(k, line_search, 1.0), **EARLY_STOP})
                 for k in (5, 60) for kind, line_search in (
                     ("fixed", False), ("line search + trust region", True))]
    settings += [(KFAC_FIGURE, {**plain_cg(3, True, CURVATURE_FRACTION),
                                "preconditioner": "kfac"}),
                 (DEFAULTS_FIGURE, {})]
    for label, options in settings:
        add(label, lambda *model, label=label, options=options: sgn_step(*model, label,
                                                                          options))
    add(KFAC_REFRESH, lambda x, y, z, p, loss: kfac_refresh(
        SGN(loss, p, z, [x, y], preconditioner="kfac", curvature_fraction=CURVATURE_FRACTION,
            mode=mode), xb, yb))
    return functions, compile_s, peak_bytes, cg_iterations


def kfac_refresh(optimizer: SGN, xb, yb):
    """The compiled refresh of K-FAC's inverses after a step (what runs every
    ``kfac_inverse_interval`` steps), as a callable that waits for its results."""
    optimizer.step(xb, yb)

    def call():
        optimizer.inverse_refresh()
        finished([inverse.get_value(borrow=True) for inverse in optimizer.state.factor_inverses])
    return call


def plain_cg(k: int, line_search: bool, fraction: float) -> dict:
    """SGN's options for ``k`` CG iterations to the end (no tolerance), unpreconditioned
    and without model momentum (as the yardsticks' SGN), with or without the line search
    and trust region."""
    return {"max_cg_iters": k, "cg_tol": 0.0, "trust_region": line_search,
            "line_search": line_search, "curvature_fraction": fraction,
            "preconditioner": None, "model_momentum": False}


def finished(values: list) -> list:
    """``values`` once computed: JAX returns arrays before the device has computed them,
    so a timing waits for each (on the device, without a copy to the host)."""
    for value in values:
        getattr(value, "block_until_ready", lambda: None)()
    return values


def chained_products(loss, outputs, params, vectors, count: int) -> list:
    """``G (G (... G v))``, ``count`` products: no CG, the floor of ``count`` iterations."""
    for _ in range(count):
        vectors = gauss_newton_product(loss, outputs, params, vectors)
    return vectors


def preparation(call):
    """The untimed step to run before each ``call`` (its ``prepare``; none by default)."""
    return getattr(call, "prepare", lambda: None)


def timed_rounds(functions: dict, rounds: int, calls: int, samples: dict) -> None:
    """Append ``rounds`` interleaved per-call times of every function to ``samples``
    (a function's ``prepare`` step, if any, runs before each call, untimed)."""
    for _ in range(rounds):
        for name, call in functions.items():
            prepare, elapsed = preparation(call), 0.0
            for _ in range(calls):
                prepare()
                started = time.perf_counter()
                call()
                elapsed += time.perf_counter() - started
            samples.setdefault(name, []).append(elapsed / calls)


def run_yardstick(python: str, script: str, model: str, batch: int) -> dict:
    """One ``--mode bench`` run of a yardstick; its medians in seconds, by our names."""
    completed = subprocess.run(
        [python, os.path.join(YARDSTICKS, script), "--mode", "bench", "--model", model,
         "--batch-size", str(batch), "--bench-rounds", "5"],
        capture_output=True, text=True, timeout=900, cwd=YARDSTICKS)
    if completed.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{completed.stderr[-2000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    return {ours: result["median_ms"][theirs] / 1e3
            for theirs, ours in YARDSTICK_FIGURES.items() if theirs in result["median_ms"]}


def run_torch_cnn(python: str, model: str, batch: int) -> dict:
    """``torch_cnn.py`` on the CNN ``model``: PyTorch's gradient median, in seconds."""
    image_shape, layers = CNNS[model.split("-")[0]]
    completed = subprocess.run(
        [python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_cnn.py"),
         "--input-shape", json.dumps(image_shape), "--layers", json.dumps(layers),
         "--batch-size", str(batch)], capture_output=True, text=True, timeout=900)
    if completed.returncode != 0:
        raise RuntimeError(f"torch_cnn.py failed:\n{completed.stderr[-2000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    return {"gradient": result["median_ms"]["grad"] / 1e3}


def reference_runs(python: str, model: str, batch: int) -> dict:
    """The yardsticks' figures on ``model`` by framework: the JAX and PyTorch SGNs on the
    MLPs, PyTorch's gradient on the CNNs."""
    if model.split("-")[0] in CNNS:
        return {"torch": run_torch_cnn(python, model, batch)}
    return {name: run_yardstick(python, script, model, batch)
            for name, script in (("jax", "sgn_jax.py"), ("torch", "sgn_torch.py"))}


def bench_model(model, mode, mode_name, args) -> dict:
    functions, compile_s, peak_bytes, cg_iterations = build(
        model, mode, args.batch_size, {"gradient", *args.figures})
    samples: dict[str, list] = {}
    yardsticks: dict[str, list] = {}
    chunks = args.yardstick_repeats if args.yardsticks else 1
    for chunk in range(chunks):
        timed_rounds(functions, max(1, args.rounds // chunks), args.calls, samples)
        if args.yardsticks:
            for name, measured in reference_runs(args.yardstick_python, model,
                                                 args.batch_size).items():
                for figure, seconds in measured.items():
                    yardsticks.setdefault(name, {}).setdefault(figure, []).append(seconds)
    medians = {name: float(np.median(times)) for name, times in samples.items()}
    ratios = {name: float(np.median([t / g for t, g in zip(times, samples["gradient"])]))
              for name, times in samples.items()}
    report = {"device": device_of(mode_name), "median_s": medians,
              "ratio_to_gradient": ratios, "compile_s": compile_s,
              "mean_cg_iterations": {name: float(np.mean(counts))
                                     for name, counts in cg_iterations.items()}}
    if mode_name in TRACED_MODES:
        report["peak_bytes"] = peak_bytes
        report["peak_to_gradient"] = {name: peak / peak_bytes["gradient"]
                                      for name, peak in peak_bytes.items()}
    for name, figures in yardsticks.items():
        report[f"{name}_median_s"] = {figure: float(np.median(times))
                                      for figure, times in figures.items()}
    return report


def device_of(mode_name: str) -> str:
    """What the mode computes on: JAX's default device in JAX mode, else the CPU."""
    if mode_name != "JAX":
        return "cpu"
    import jax

    device = jax.devices()[0]
    return f"{device.platform} ({device.device_kind})"


def print_report(model: str, mode_name: str, batch: int, report: dict) -> None:
    print(f"\nmodel {model}: {MODELS[model][0]}, batch {batch}, float32, mode {mode_name}, "
          f"device {report['device']}")
    columns = ["median ms", "/ gradient", "compile s", "CG iters"]
    if "peak_bytes" in report:
        columns += ["peak MB", "peak / grad"]
    others = [name for name in ("jax", "torch") if f"{name}_median_s" in report]
    columns += [f"/ {name}" for name in others]
    print(f"{'figure':<38}" + "".join(f"{column:>12}" for column in columns))
    for name, seconds in report["median_s"].items():
        cells = [f"{seconds * 1e3:.2f}", f"{report['ratio_to_gradient'][name]:.2f}",
                 f"{report['compile_s'][name]:.1f}",
                 f"{report['mean_cg_iterations'].get(name, float('nan')):.1f}"
                 if name in report["mean_cg_iterations"] else ""]
        if "peak_bytes" in report:
            cells += [f"{report['peak_bytes'][name] / 1e6:.1f}",
                      f"{report['peak_to_gradient'][name]:.2f}"]
        for other in others:
            theirs = report[f"{other}_median_s"].get(name)
            cells.append(f"{seconds / theirs:.2f}" if theirs else "")
        print(f"{name:<38}" + "".join(f"{cell:>12}" for cell in cells))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=None,
                        help="compile modes (default: the library's default mode)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["a", "b"])
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=3, help="calls per round and function")
    parser.add_argument("--figures", nargs="+", choices=FIGURES, default=list(FIGURES),
                        help="what to time (the gradient is always timed)")
    parser.add_argument("--yardsticks", action="store_true",
                        help="run the JAX and PyTorch yardsticks between rounds (models a, b; "
                        "PyTorch's gradient, torch_cnn.py, on the CNNs)")
    parser.add_argument("--yardstick-python", default=os.path.join(
        ".venv-yardsticks", "bin", "python"), help="a python with jax and torch installed")
    parser.add_argument("--yardstick-repeats", type=int, default=3,
                        help="yardstick runs per model, spread between our rounds")
    parser.add_argument("--output", default="results/bench_steps.json")
    args = parser.parse_args()
    args.yardstick_python = os.path.abspath(args.yardstick_python)
    if args.yardsticks and not os.path.exists(args.yardstick_python):
        sys.exit(f"--yardsticks: {args.yardstick_python} not found; set up the yardsticks "
                 f"as in {os.path.normpath(YARDSTICKS)}/README.md or pass --yardstick-python")
    reuse_freed_memory()  # what a benchmark process wants (docs, "Performance"); not on import
    link_openblas()
    report = {"batch_size": args.batch_size, "cpus": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d"), "modes": {}}
    for mode_name in args.modes or [default_mode_name()]:
        mode = compile_mode(mode_name)
        report["modes"][mode_name] = {}
        for model in args.models:
            model_report = bench_model(model, mode, mode_name, args)
            report["modes"][mode_name][model] = model_report
            print_report(model, mode_name, args.batch_size, model_report)
    write_report(report, args.output)


if __name__ == "__main__":
    main()
