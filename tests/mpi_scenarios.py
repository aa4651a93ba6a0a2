"""Data-parallel SGN on the processes of ``mpirun``; run by ``test_data_parallel.py``.

    mpirun -n 2 python tests/mpi_scenarios.py MODE SCENARIO

Each scenario checks its claims on every process and raises (non-zero exit) if one
fails; rank 0 prints ``ok SCENARIO`` at the end.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import pytensor
import pytensor.tensor as pt
from mpi4py import MPI

from sgn_theano import SGN, sgd, softmax_cross_entropy
from sgn_theano.bench.train import FirstOrder, train
from sgn_theano.data_parallel import DataParallel
from sgn_theano.compilation.modes import compile_mode

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()


def model(seed: int, library_loss: bool = False):
    """A 4-6-3 tanh MLP in plain PyTensor with a hand-written loss (or the library's),
    float64; its initialisation differs by rank (``seed + RANK``) so the broadcast is
    tested."""
    rng = np.random.default_rng(seed + RANK)
    x, y = pt.matrix("x"), pt.ivector("y")
    w1 = pytensor.shared(rng.standard_normal((4, 6)) * 0.5, name="w1")
    b1 = pytensor.shared(np.zeros(6), name="b1")
    w2 = pytensor.shared(rng.standard_normal((6, 3)) * 0.5, name="w2")
    logits = pt.tanh(x @ w1 + b1) @ w2
    loss = softmax_cross_entropy(logits, y) if library_loss else -pt.mean(
        pt.special.log_softmax(logits, axis=1)[pt.arange(y.shape[0]), y])
    return x, y, logits, loss, [w1, b1, w2]


def batches(count: int, rows: int, seed: int = 1):
    rng = np.random.default_rng(seed)  # the same global batches on every process
    return [(rng.standard_normal((rows, 4)), rng.integers(0, 3, rows).astype(np.int32))
            for _ in range(count)]


def shard(batch, bounds):
    start, stop = bounds[RANK], bounds[RANK + 1]
    return tuple(array[start:stop] for array in batch)


def values(params):
    return [p.get_value() for p in params]


def assert_same_on_every_process(arrays):
    flat = np.concatenate([np.ravel(a) for a in arrays])
    gathered = COMM.allgather(flat)
    for other in gathered[1:]:
        assert np.array_equal(other.view(np.uint8), gathered[0].view(np.uint8)), \
            "the processes' parameters differ"


def assert_close(ours, reference, tolerance=1e-9):
    for a, b in zip(ours, reference):
        difference = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)
        assert difference <= tolerance, f"relative difference {difference:.3g}"


def sgn_pair(mode, library_loss=False, **options):
    """A data-parallel SGN and a one-process SGN on the whole batch, from rank 0's
    initial parameters."""
    x, y, logits, loss, params = model(0, library_loss)
    parallel = SGN(loss, params, logits, [x, y], mode=mode, comm=COMM, **options)
    x1, y1, logits1, loss1, params1 = model(0, library_loss)
    for mine, theirs in zip(params1, params):
        mine.set_value(theirs.get_value())  # rank 0's, broadcast
    single = SGN(loss1, params1, logits1, [x1, y1], mode=mode, **options)
    return parallel, single


def same_steps(mode, bounds_of, **options):
    # every row is a curvature row: a fraction would pick other rows from each shard
    # than from the whole batch
    parallel, single = sgn_pair(mode, curvature_fraction=1.0, **options)
    assert_same_on_every_process(values(parallel.params))  # broadcast from rank 0
    for batch in batches(6, 20):
        info = parallel.step(*shard(batch, bounds_of(len(batch[0]))))
        reference = single.step(*batch)
        assert info.accepted == reference.accepted and info.reason == reference.reason
        assert info.cg_iterations == reference.cg_iterations
        assert abs(info.loss - reference.loss) <= 1e-9 * abs(reference.loss)
    assert parallel.step_count == 6
    assert_close(values(parallel.params), values(single.params))
    assert_close([np.array(parallel.damping)], [np.array(single.damping)])
    assert_same_on_every_process(values(parallel.params))


def halves(rows):
    return [0, rows // 2, rows]


def unequal(rows):  # 7 rows on rank 0, the rest on rank 1
    return [0, 7, rows]


def collective_errors(mode):
    # The library's loss checks its labels in every backend (a hand-written one
    # indexes out of bounds unchecked in NUMBA).
    parallel, _ = sgn_pair(mode, library_loss=True)
    before = values(parallel.params)
    x, y = shard(batches(1, 20)[0], halves(20))
    bad_x = x.copy()
    if RANK == 1:
        bad_x[0, 0] = np.nan
    try:
        parallel.step(bad_x, y)
    except ValueError as error:
        assert "the batch of process 1 of 2" in str(error) and "NaN" in str(error), error
    else:
        raise AssertionError("a NaN on process 1 raised nothing")
    # A label out of range fails while the step runs, on process 1 only.
    bad_y = y.copy()
    if RANK == 1:
        bad_y[0] = 7
    try:
        parallel.step(x, bad_y)
    except (IndexError, ValueError, RuntimeError) as error:
        assert "the batch of process 1 of 2" in str(error), error
    else:
        raise AssertionError("a label out of range on process 1 raised nothing")
    for old, new in zip(before, values(parallel.params)):
        assert np.array_equal(old, new)
    assert parallel.step_count == 0
    parallel.step(x, y)  # and the processes still work together
    assert_same_on_every_process(values(parallel.params))


def state_round_trip(mode):
    parallel, _ = sgn_pair(mode, momentum=0.5)
    data = [shard(batch, halves(20)) for batch in batches(4, 20)]
    for batch in data[:2]:
        parallel.step(*batch)
    saved = parallel.state_dict()
    for batch in data[2:]:
        parallel.step(*batch)
    after = values(parallel.params)
    parallel.load_state_dict(saved)
    for batch in data[2:]:
        parallel.step(*batch)
    for a, b in zip(after, values(parallel.params)):
        assert np.array_equal(a, b)
    assert_same_on_every_process(values(parallel.params))


def train_resume(mode):
    """train(comm=...): a run stopped after 4 steps and resumed to 8 from rank 0's
    checkpoint file ends where an uninterrupted 8-step run ends."""
    folder = COMM.bcast(tempfile.mkdtemp() if RANK == 0 else None, root=0)
    path = os.path.join(folder, "run.ckpt")
    x_train, y_train = batches(1, 80, seed=3)[0]

    def run(steps, checkpoint_path=None):
        parallel, _ = sgn_pair(mode)
        result = train(parallel, lambda: {"test_loss": 0.0, "test_accuracy": 0.0},
                       (x_train, y_train), batch_size=20, max_steps=steps, progress=False,
                       checkpoint_path=checkpoint_path, comm=COMM)
        return result, values(parallel.params)

    _, uninterrupted = run(8)
    run(4, path)
    assert os.path.exists(path)
    result, resumed = run(8, path)
    assert result.steps == 8
    for a, b in zip(uninterrupted, resumed):
        assert np.array_equal(a, b)
    assert_same_on_every_process(resumed)


def curvature_rows_per_shard(mode):
    parallel, _ = sgn_pair(mode, curvature_fraction=0.5)
    batch = shard(batches(1, 20)[0], unequal(20))  # the same batch: its loss must fall
    losses = [parallel.step(*batch).loss for _ in range(5)]
    assert losses[-1] < losses[0]
    assert_same_on_every_process(values(parallel.params))


def first_order(mode):
    x, y, logits, loss, params = model(0)
    group = DataParallel(COMM, "float64")
    total, gradients = group.loss_and_gradients(loss, params)
    parallel = FirstOrder([x, y], total, sgd(gradients, params, 0.3), mode=mode,
                          parallel=group)
    x1, y1, _, loss1, params1 = model(0)
    for mine, theirs in zip(params1, params):
        mine.set_value(theirs.get_value())
    single = FirstOrder([x1, y1], loss1, sgd(loss1, params1, 0.3), mode=mode)
    for batch in batches(3, 20):
        assert abs(parallel.step(*shard(batch, unequal(20))) - single.step(*batch)) < 1e-12
    assert_close(values(params), values(params1), 1e-12)
    assert_same_on_every_process(values(params))


SCENARIOS = {
    "equal-shards": lambda mode: same_steps(mode, halves),
    "unequal-shards": lambda mode: same_steps(mode, unequal, max_cg_iters=5),
    # the averaged diagonals and the momentum product are sums over the processes too
    "estimators": lambda mode: same_steps(mode, unequal, preconditioner="hutchinson",
                                          model_momentum=True),
    "gradient-squares": lambda mode: same_steps(mode, halves,
                                                preconditioner="gradient_squares"),
    # K-FAC's factors are summed over the processes, and each cuts its probe's rows from
    # one draw for the whole batch
    "kfac": lambda mode: same_steps(mode, unequal, preconditioner="kfac",
                                    kfac_inverse_interval=2),
    "errors": collective_errors,
    "state": state_round_trip,
    "curvature": curvature_rows_per_shard,
    "train-resume": train_resume,
    "first-order": first_order,
}

if __name__ == "__main__":
    mode_name, names = sys.argv[1], sys.argv[2:] or list(SCENARIOS)
    mode = compile_mode(mode_name)
    for name in names:
        SCENARIOS[name](mode)
        COMM.Barrier()
        if RANK == 0:
            print(f"ok {name}", flush=True)
