"""Benchmark: what a user waits for before the first step, in a fresh process.

For each network of ``sgn-bench`` (``sgn_theano.bench.tasks.build_network``, the graphs
written in plain PyTensor where the benchmark has them: ``--graph plain``), and for SGN
at its defaults and Adam's updates compiled on the same graph, one fresh Python process
builds the optimizer and takes its first step on a batch (``SGN(...)`` then
``warm_up``, or ``pytensor.function(..., updates=adam(...))`` then one call), and says
how long that took and how long the imports took before it. The builds of one network
alternate (SGN, Adam, SGN, ...) ``--repeats`` times; each figure is a median, and
``SGN / Adam`` the ratio of the medians. The compile cache is the user's (warm after
the first run); ``--cold`` gives every process an empty compile directory of its own
(``PYTENSOR_FLAGS=base_compiledir=...``), the cost of a first run on a machine.

    python benchmarks/bench_build.py [--networks mlp lenet5 rnn lstm mlp-ln] [--repeats 3]
                                     [--mode C] [--cold] [--output results/bench_build.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from report import write_report

#: name -> ``sgn-bench`` arguments of the network (Fashion-MNIST, batch 1000).
NETWORKS = {
    "mlp": {"model": "mlp", "sizes": "784-256-256-10", "activation": "relu"},
    "mlp-ln": {"model": "mlp-ln", "sizes": "784-256-256-10", "activation": "relu"},
    "lenet5": {"model": "lenet5", "sizes": None, "activation": "relu"},
    "rnn": {"model": "rnn", "sizes": "28-128-10", "activation": "tanh"},
    "lstm": {"model": "lstm", "sizes": "28-96-10", "activation": "tanh"},
}

#: One build in a fresh process: argv[1] the network's arguments (JSON), argv[2] the
#: optimizer, argv[3] the mode; prints one JSON line.
BUILD = r"""
import json, sys, time
started = time.perf_counter()
import argparse
import numpy as np
import pytensor
from sgn_theano import SGN, adam, compile_mode, link_openblas
from sgn_theano.bench.tasks import build_network
link_openblas()
imported = time.perf_counter() - started
arguments, optimizer, mode_name = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
args = argparse.Namespace(task="fashion-mnist", graph="plain", **arguments)
inputs, outputs, loss, params = build_network(args, seed=0)
rng = np.random.default_rng(0)
batch = (rng.random((1000, 784), dtype=np.float32), rng.integers(0, 10, 1000).astype("int32"))
mode = compile_mode(mode_name)
started = time.perf_counter()
if optimizer == "sgn":
    SGN(loss, params, outputs, inputs, mode=mode).warm_up(*batch)
else:
    pytensor.function(inputs, loss, updates=adam(loss, params, 1e-3), mode=mode)(*batch)
print(json.dumps({"import_s": imported, "build_s": time.perf_counter() - started}))
"""


def build_once(network: str, optimizer: str, mode: str, cold: bool) -> dict:
    """One fresh process's build of ``optimizer`` on ``network``: its import and build
    seconds."""
    environment = dict(os.environ)
    with tempfile.TemporaryDirectory() as directory:
        if cold:
            environment["PYTENSOR_FLAGS"] = f"base_compiledir={directory}"
        completed = subprocess.run(
            [sys.executable, "-c", BUILD, json.dumps(NETWORKS[network]), optimizer, mode],
            capture_output=True, text=True, timeout=1800, env=environment)
    if completed.returncode != 0:
        raise RuntimeError(f"{network} {optimizer} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", choices=sorted(NETWORKS),
                        default=["mlp", "lenet5", "rnn", "lstm", "mlp-ln"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", default="C")
    parser.add_argument("--cold", action="store_true",
                        help="an empty compile cache for every process")
    parser.add_argument("--output", default=os.path.join("results", "bench_build.json"))
    args = parser.parse_args(argv)
    report = {"config": vars(args), "networks": {}}
    print(f"{'network':8} {'SGN s':>8} {'Adam s':>8} {'SGN / Adam':>10} {'import s':>9}")
    for network in args.networks:
        runs = {"sgn": [], "adam": []}
        for _ in range(args.repeats):
            for optimizer in runs:
                runs[optimizer].append(build_once(network, optimizer, args.mode, args.cold))
        medians = {optimizer: statistics.median(run["build_s"] for run in measured)
                   for optimizer, measured in runs.items()}
        imports = statistics.median(run["import_s"] for measured in runs.values()
                                    for run in measured)
        report["networks"][network] = {"runs": runs, "median_build_s": medians,
                                       "median_import_s": imports}
        print(f"{network:8} {medians['sgn']:8.2f} {medians['adam']:8.2f} "
              f"{medians['sgn'] / medians['adam']:10.2f} {imports:9.2f}", flush=True)
    write_report(report, args.output)


if __name__ == "__main__":
    main()
