"""Round-robin stepping: optimizers trained side by side at equal seconds of steps.

A fair comparison in wall-clock time on a shared machine: every optimizer trains its own
copy of the network (same initial values, same batch order), and at each turn the one
with the least step time so far takes one step, so all of them advance through the run
together and load on the machine hits all alike. Only the step calls are timed; each
optimizer's test metric is evaluated at its own marks (evaluation untimed). What comes
out is one :class:`~sgn_theano.bench.train.TrainResult` per optimizer, as
:func:`~sgn_theano.bench.train.train` gives, so ``sgn-bench --round-robin`` writes the
same records, tables and plots.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from sgn_theano.bench.train import Optimizer, TrainingRun, TrainResult, progress_bar
from sgn_theano.data import minibatches

__all__ = ["train_round_robin"]


def train_round_robin(
    optimizers: Mapping[str, tuple[Optimizer, Callable[[], dict]]],
    train_arrays: Sequence[np.ndarray],
    *,
    batch_size: int,
    time_budget: float,
    checkpoints: Sequence[float] = (),
    seed: int = 0,
    progress: bool = True,
    construction: Mapping[str, float] | None = None,
    count_build: bool = False,
) -> dict[str, TrainResult]:
    """Step every optimizer in turn, the one with the least step time first, until each
    has spent ``time_budget`` seconds in steps.

    Parameters
    ----------
    optimizers : mapping of str to (Optimizer, callable)
        ``name -> (optimizer, evaluate)``, as :func:`~sgn_theano.bench.train.train`
        takes them; each optimizer updates its own copy of the model.
    train_arrays : sequence of arrays
        Training data; each optimizer draws its own batches, in the order ``seed`` gives.
    batch_size : int
        Rows per step.
    time_budget : float
        Seconds of steps per optimizer, ``> 0`` (each compiles in an untimed warm-up
        step first, :meth:`~sgn_theano.bench.train.TrainingRun.warm_up`).
    checkpoints : sequence of float
        Seconds (of each optimizer's own steps) at which to evaluate; the start and the
        end are always evaluated.
    seed : int
        Seed of the batch order.
    progress : bool
        Show the seconds spent by all optimizers together.
    construction : mapping of str to float, optional
        Seconds each optimizer took to build (recorded with its warm-up as its
        :attr:`~sgn_theano.bench.train.TrainResult.build_time`).
    count_build : bool
        Start each optimizer's clock at its construction: its build time counts as time
        spent, so the one that builds faster steps first.

    Returns
    -------
    dict of str to TrainResult
        Each optimizer's history, steps and time, under its name.
    """
    if not time_budget > 0:
        raise ValueError(f"`time_budget` must be positive, got {time_budget}.")
    steps_per_epoch = max(1, len(train_arrays[0]) // batch_size)
    runs = {name: TrainingRun(optimizer, evaluate, None, steps_per_epoch, True, {},
                              TrainResult(name=name))
            for name, (optimizer, evaluate) in optimizers.items()}
    batches = {name: minibatches(train_arrays, batch_size, seed=seed) for name in runs}
    marks = {name: sorted({float(mark) for mark in checkpoints if 0 < mark < time_budget}
                          | {float(time_budget)}) for name in runs}
    for run in runs.values():
        run.record()
        run.warm_up([array[:batch_size] for array in train_arrays],
                    (construction or {}).get(run.result.name, 0.0), count_build)
    bar = progress_bar(total=time_budget * len(runs), initial=0,
                       desc=f"round robin, seed {seed}", unit="s", disable=not progress)
    try:
        while active := [name for name, run in runs.items()
                         if run.used() < time_budget and not run.result.diverged]:
            name = min(active, key=lambda key: runs[key].used())
            run = runs[name]
            _, elapsed = run.take_step(next(batches[name]))
            bar.update(elapsed)
            if run.record_when_due(marks[name]):
                point = run.result.history[-1]
                metric = (point.test_loss if np.isnan(point.test_accuracy)
                          else point.test_accuracy)
                bar.set_postfix(evaluated=f"{name}: {metric:.4g}")
    finally:
        bar.close()
    return {name: run.result for name, run in runs.items()}
