"""Data-parallel SGN over MPI: ``mpirun -n 2 --oversubscribe`` on localhost, with a
timeout so that a hang fails (the scenarios are in ``mpi_scenarios.py``)."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytensor.tensor as pt
import pytest

from sgn_theano import SGN, softmax_cross_entropy
from sgn_theano.data_parallel import AllreduceSum, DataParallel
from sgn_theano.models import mlp

HERE = os.path.dirname(os.path.abspath(__file__))
NEEDS_MPI = pytest.mark.skipif(
    shutil.which("mpirun") is None or importlib.util.find_spec("mpi4py") is None,
    reason="needs OpenMPI's mpirun and mpi4py (docs, installation)")
TIMEOUT = 600


def mpirun(*arguments: str, processes: int = 2) -> subprocess.CompletedProcess:
    """``mpirun -n 2 --oversubscribe python ...`` on localhost (root allowed, as in CI)."""
    environment = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1",
                       OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    command = ["mpirun", "-n", str(processes), "--oversubscribe", sys.executable, *arguments]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT,
                              env=environment, cwd=HERE)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"{' '.join(command)} hung for {TIMEOUT} s:\n{expired.stdout}\n"
                    f"{expired.stderr}")


@NEEDS_MPI
@pytest.mark.slow  # every scenario compiles SGN steps in C in two processes: minutes
@pytest.mark.parametrize("mode_name, scenarios", [
    ("C", ["equal-shards", "unequal-shards", "estimators", "gradient-squares", "kfac",
           "errors", "state", "curvature", "train-resume", "first-order"]),
    ("NUMBA", ["unequal-shards", "errors"]),
])
def test_two_processes_take_the_steps_of_one_on_the_whole_batch(mode_name, scenarios):
    completed = mpirun("mpi_scenarios.py", mode_name, *scenarios)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    # terminal colour codes (the NUMBA mode's output may leave one beside a line) removed
    output = re.sub(r"\x1b\[[0-9;]*m", "", completed.stdout)
    reported = [line.split()[-1] for line in output.splitlines() if "ok " in line]
    assert reported == scenarios


@NEEDS_MPI
@pytest.mark.slow
def test_sgn_bench_under_mpirun_trains_data_parallel_and_rank_0_writes(tmp_path):
    pytest.importorskip("mlxtend")
    output = tmp_path / "boston.json"
    completed = mpirun("-m", "sgn_theano", "--task", "boston", "--sizes", "13-8-1",
                       "--epochs", "3", "--optimizers", "sgn:3", "adam", "--no-progress",
                       "--no-plots", "--output", str(output))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.count("data-parallel over 2 processes") == 1  # rank 0 only
    runs = json.loads(output.read_text())["runs"]
    assert [run["optimizer"] for run in runs] == ["SGN k=3", "ADAM lr=0.001"]
    for run in runs:
        assert run["steps"] == 12 and run["history"][-1]["test_loss"] < run["history"][0][
            "test_loss"]
    refused = mpirun("-m", "sgn_theano", "--paper", "--quick", "--output",
                     str(tmp_path / "paper.json"))
    assert refused.returncode != 0 and "--paper runs in one process" in refused.stderr



def test_comm_must_be_a_communicator_and_sums_need_one_dtype():
    with pytest.raises(TypeError, match="mpi4py communicator"):
        DataParallel(object(), "float64")

    class OneProcess:  # what DataParallel needs of a communicator
        def Allreduce(self, *args, **kwargs): ...
        def allgather(self, value): return [value]
        def Bcast(self, *args, **kwargs): ...
        def Get_rank(self): return 0
        def Get_size(self): return 1

    with pytest.raises(TypeError, match="one dtype"):
        AllreduceSum(OneProcess())(pt.vector(dtype="float32"), pt.vector(dtype="float64"))
    group = DataParallel(OneProcess(), "float64")
    with pytest.raises(RuntimeError, match="loss_and_gradients"):
        group.weighted_sum([pt.vector()])
    assert np.dtype(group.weight.dtype) == np.float64
    if importlib.util.find_spec("jax") is not None:
        x, y = pt.matrix("x"), pt.ivector("y")
        logits, params = mlp(x, [3, 2], seed=0)
        with pytest.raises(ValueError, match="JAX mode has no MPI op"):
            SGN(softmax_cross_entropy(logits, y), params, logits, [x, y], mode="JAX",
                comm=OneProcess())
