"""Data-parallel SGN steps over MPI: time per step at given global batch sizes, and the
cost of one all-reduce of a parameter-sized buffer (what each CG iteration adds).

Run it under ``mpirun``; every process takes an equal part of each batch (the
784-256-256-10 relu MLP on random Fashion-MNIST-shaped rows, float32, default SGN step
with k CG iterations), and rank 0 prints and writes the report::

    OPENBLAS_NUM_THREADS=1 mpirun -n 2 python benchmarks/bench_mpi.py --batch-sizes 2000 8000
    OPENBLAS_NUM_THREADS=2 mpirun -n 1 python benchmarks/bench_mpi.py --batch-sizes 2000 8000

Each figure is the median over ``--rounds`` rounds of ``--calls`` steps; the optimizer
state is restored (untimed) before every step, so each does the same work.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pytensor.tensor as pt
from mpi4py import MPI
from report import write_report

from sgn_theano import SGN, softmax_cross_entropy
from sgn_theano.compilation.allocator import reuse_freed_memory
from sgn_theano.models import mlp
from sgn_theano.compilation.modes import compile_mode, link_openblas

SIZES = (784, 256, 256, 10)


def timed(call, prepare, rounds: int, calls: int, comm) -> float:
    """Median over rounds of the mean time of ``calls`` calls, processes in step."""
    samples = []
    for _ in range(rounds):
        elapsed = 0.0
        for _ in range(calls):
            prepare()
            comm.Barrier()
            started = time.perf_counter()
            call()
            elapsed += time.perf_counter() - started
        samples.append(comm.allreduce(elapsed / calls, op=MPI.MAX))
    return float(np.median(samples))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--cg-iters", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--output", default=None,
                        help="default: results/bench_mpi_P<processes>.json")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    reuse_freed_memory()
    link_openblas()
    mode = compile_mode("C")
    x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
    logits, params = mlp(x, SIZES, activation="relu", seed=0)
    optimizer = SGN(softmax_cross_entropy(logits, y), params, logits, [x, y],
                    max_cg_iters=args.cg_iters, cg_tol=0.0, mode=mode, comm=comm)
    start = optimizer.state_dict()
    rng = np.random.default_rng(0)
    report = {"processes": size, "threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
              "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "model": SIZES,
              "cg_iterations": args.cg_iters, "steps": {}}
    for batch in args.batch_sizes:
        rows = np.array_split(np.arange(batch), size)[rank]
        xb = rng.random((batch, SIZES[0]), dtype=np.float32)[rows]
        yb = rng.integers(0, 10, batch).astype(np.int32)[rows]
        optimizer.step(xb, yb)  # compile and warm up
        seconds = timed(lambda: optimizer.step(xb, yb),
                        lambda: optimizer.load_state_dict(start), args.rounds, args.calls, comm)
        report["steps"][str(batch)] = {"seconds_per_step": seconds,
                                       "steps_per_second": 1 / seconds}
    count = 1 + sum(p.get_value().size for p in params)
    buffer = np.zeros(count, dtype=np.float32)
    report["allreduce_seconds"] = timed(
        lambda: comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM), lambda: None,
        args.rounds, 20 * args.calls, comm)
    report["allreduce_floats"] = count
    if rank == 0:
        print(f"{size} process(es), OPENBLAS_NUM_THREADS={report['threads']}, default SGN "
              f"step with k={args.cg_iters}, MLP {'-'.join(map(str, SIZES))}")
        for batch, figures in report["steps"].items():
            print(f"  global batch {batch:>6}: {figures['seconds_per_step'] * 1e3:8.1f} ms per "
                  f"step, {figures['steps_per_second']:6.2f} steps/s")
        print(f"  one all-reduce of {count} float32: "
              f"{report['allreduce_seconds'] * 1e6:.0f} us")
        write_report(report, args.output or f"results/bench_mpi_P{size}.json")


if __name__ == "__main__":
    main()
