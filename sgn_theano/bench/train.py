"""Training loop with a time, step or epoch budget, test evaluation at checkpoints, a
progress bar, a history record, and checkpoint files to resume from (also after
Ctrl-C); plus the compiled evaluator and first-order optimizer it drives.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Protocol

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.variable import TensorVariable

try:
    from tqdm.auto import tqdm
except ImportError as missing:  # the harness's dependencies are the `bench` extra
    raise ImportError("sgn_theano.bench needs tqdm: pip install 'sgn_theano[bench]'") from missing

from sgn_theano.bench.checkpoint import load_checkpoint, save_checkpoint
from sgn_theano.data import minibatches
from sgn_theano.data_parallel import DataParallel
from sgn_theano.compilation.modes import check_mode, is_jax_mode
from sgn_theano.validation import check_batch, set_checked_values

#: The progress bar: spent and total budget, in its unit.
BAR_FORMAT = "{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}{postfix}]"

__all__ = ["Checkpoint", "FirstOrder", "LineProgress", "Optimizer", "TrainResult", "TrainingRun",
           "make_evaluator", "progress_bar", "train"]


class Optimizer(Protocol):
    """What :func:`train` drives: :class:`sgn_theano.SGN` and :class:`FirstOrder`."""

    def step(self, *batch):
        """Update the model on one batch; return the loss or an object with ``.loss``."""

    def state_dict(self) -> dict:
        """Everything needed to resume exactly (needed for checkpoint files)."""

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`."""

    # Optional: ``warm_up(*batch)``, a step taken and undone, called before the clock starts.


@dataclass
class Checkpoint:
    """One evaluation during training."""

    step: int  # optimizer steps done
    epoch: float  # passes over the training set done
    time: float  # seconds spent in optimizer steps (evaluation excluded)
    train_loss: float  # mean mini-batch loss since the previous checkpoint (nan at step 0)
    test_loss: float
    test_accuracy: float


@dataclass
class TrainResult:
    """What :func:`train` returns: the history and the totals."""

    name: str
    history: list[Checkpoint] = field(default_factory=list)
    steps: int = 0
    train_time: float = 0.0
    diverged: bool = False  # stopped on a non-finite training loss
    rejected: int | None = 0  # steps rejected (StepInfo.accepted false); None: not kept
    step_losses: list[float] = field(default_factory=list)  # the loss of every step
    step_times: list[float] = field(default_factory=list)  # seconds of steps after each
    # Seconds from the optimizer's construction to the end of its warm-up step; with
    # `build_counted` they are in `train_time` too (the clock started at construction).
    build_time: float = 0.0
    build_counted: bool = False

    @property
    def steps_per_second(self) -> float:
        step_time = self.train_time - (self.build_time if self.build_counted else 0.0)
        return self.steps / step_time if step_time > 0 else math.nan

    def to_dict(self) -> dict:
        """The result as JSON-ready values; the per-step lists to 6 significant digits."""
        rounded = {name: [float(f"{value:.6g}") for value in getattr(self, name)]
                   for name in ("step_losses", "step_times")}
        return {**asdict(self), **rounded, "steps_per_second": self.steps_per_second}

    @classmethod
    def from_dict(cls, record: dict) -> TrainResult:
        """The result :meth:`to_dict` wrote (other keys of ``record`` are ignored)."""
        names = {item.name for item in fields(cls)}
        values = {name: value for name, value in record.items() if name in names}
        values["history"] = [Checkpoint(**point) for point in record["history"]]
        return cls(**values)


def make_evaluator(
    inputs: Sequence[TensorVariable],
    outputs: TensorVariable,
    loss: TensorVariable,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    mode=None,
    chunk_size: int = 2000,
    accuracy: bool = True,
) -> Callable[[], dict]:
    """Compile ``() -> {"test_loss", "test_accuracy"}`` over a test set.

    ``inputs`` are ``[x, y]`` and ``loss`` the mean loss of ``outputs``. With
    ``accuracy``, ``outputs`` are logits ``(B, C)`` and ``y`` integer labels; without
    (regression), ``test_accuracy`` is nan. The set is evaluated in chunks of
    ``chunk_size`` rows (memory stays bounded) and the results are weighted by chunk size.
    """
    mode = check_mode(mode)
    measured = [loss]
    if accuracy:
        measured.append(pt.sum(pt.eq(pt.argmax(outputs, axis=1), inputs[1])))
    evaluate_chunk = pytensor.function(list(inputs), measured, mode=mode)

    def evaluate() -> dict:
        total_loss, total_correct = 0.0, 0
        for start in range(0, len(x_test), chunk_size):
            xb, yb = x_test[start : start + chunk_size], y_test[start : start + chunk_size]
            chunk_loss, *chunk_correct = evaluate_chunk(xb, yb)
            total_loss += float(chunk_loss) * len(xb)
            total_correct += int(sum(chunk_correct))
        return {"test_loss": total_loss / len(x_test),
                "test_accuracy": total_correct / len(x_test) if accuracy else math.nan}

    return evaluate


class FirstOrder:
    """An updates dict (``sgd``, ``momentum``, ``adam``) compiled into an optimizer.

    ``step(*batch) -> loss``; its state is every shared variable the updates write
    (parameters, moment buffers, step counters), in the order of ``updates``.

    With ``parallel`` (:class:`sgn_theano.data_parallel.DataParallel`), each process
    steps on its shard of every batch: build ``loss, gradients =
    parallel.loss_and_gradients(shard_loss, params)`` and the updates from those
    gradients (``sgd(gradients, params, lr)``); the state is set to rank 0's here, and
    a bad batch on any process raises the same error on all (the batch is checked).
    """

    def __init__(self, inputs: Sequence[TensorVariable], loss: TensorVariable, updates, *,
                 mode=None, parallel: DataParallel | None = None):
        self._variables = list(updates)
        self._inputs, self._parallel = list(inputs), parallel
        weights = [] if parallel is None else parallel.inputs
        mode = check_mode(mode)
        self._function = pytensor.function(self._inputs + weights, loss, updates=updates,
                                           mode=mode, on_unused_input="ignore")
        # In JAX mode the batch is checked here (`check_batch` leaves a device array on
        # its device), not by PyTensor's input check, which copies it to the host.
        self._checked = is_jax_mode(mode)
        self._function.trust_input = self._checked
        if parallel is not None:
            parallel.broadcast(self._variables)

    def step(self, *batch) -> float:
        if self._parallel is None:
            if self._checked:
                batch = check_batch(self._inputs, batch)
            return float(self._function(*batch))
        shard = self._parallel.shard(self._inputs, batch)
        return float(self._parallel.run(self._function, *shard.arrays, *shard.weights))

    def warm_up(self, *batch) -> None:
        """Compile for batches shaped like ``batch``: one step taken and undone, the
        state restored bit for bit (as :meth:`sgn_theano.SGN.warm_up`)."""
        saved = self.state_dict()
        self.step(*batch)
        self.load_state_dict(saved)

    def state_dict(self) -> dict:
        return {"state": [variable.get_value(borrow=False) for variable in self._variables]}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`, checking every array before changing any."""
        values = state.get("state") if isinstance(state, dict) else None
        if not isinstance(values, list) or len(values) != len(self._variables):
            raise ValueError("`state` is not a state dict of this optimizer: is it from "
                             "another model or update rule?")
        set_checked_values([(f"`state['state'][{i}]` ({variable.name or variable})", variable,
                             value) for i, (variable, value) in
                            enumerate(zip(self._variables, values))])


class LineProgress:
    """Progress for a log: one line per evaluation (a :meth:`set_postfix` call with
    ``refresh``), where a progress bar would write hundreds of redraws.

    The part of tqdm's interface :func:`train` uses: ``n``, :meth:`update`,
    :meth:`set_postfix` and :meth:`close`.
    """

    def __init__(self, total: float, initial: float = 0, desc: str = "", unit: str = "s",
                 disable: bool = False):
        self.total, self.n, self.desc = total, initial, desc
        self.unit, self.disable = unit, disable

    def update(self, amount: float) -> None:
        self.n += amount

    def set_postfix(self, refresh: bool = True, **values) -> None:
        """Print ``desc: n/total unit, key=value...`` when ``refresh``."""
        if refresh and not self.disable:
            shown = ", ".join(f"{key}={value}" for key, value in values.items())
            print(f"{self.desc}: {self.n:.0f}/{self.total:.0f} {self.unit}, {shown}", flush=True)

    def close(self) -> None:
        """Nothing to clear: every line stays in the log."""


def progress_bar(*, total: float, initial: float, desc: str, unit: str, disable: bool):
    """A tqdm bar when standard output is a terminal, else a :class:`LineProgress`."""
    if sys.stdout.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable,
                    bar_format=BAR_FORMAT)
    return LineProgress(total, initial, desc, unit, disable)


@contextlib.contextmanager
def _deferred_interrupts() -> Iterator[list]:
    """Hold Ctrl-C (SIGINT) while the body runs; yield the list of signals received.

    A step is never cut in half: the loop looks at the list between steps, saves a
    checkpoint and raises ``KeyboardInterrupt`` itself. Outside the main thread (where
    handlers cannot be installed) signals are not deferred.
    """
    received: list = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)


def train(
    optimizer: Optimizer,
    evaluate: Callable[[], dict],
    train_arrays: Sequence[np.ndarray],
    *,
    batch_size: int,
    time_budget: float | None = None,
    max_steps: int | None = None,
    max_epochs: float | None = None,
    checkpoints: Sequence[float] = (),
    seed: int = 0,
    name: str = "",
    progress: bool = True,
    checkpoint_path: str | os.PathLike | None = None,
    save_every: int | None = None,
    comm=None,
    construction: float = 0.0,
    count_build: bool = False,
) -> TrainResult:
    """Run ``optimizer`` on shuffled mini-batches until the budget is spent.

    Parameters
    ----------
    optimizer : Optimizer
        ``optimizer.step(*batch)`` updates the model in place and returns the loss (or
        a :class:`sgn_theano.StepInfo`); ``state_dict``/``load_state_dict`` are used
        for checkpoint files.
    evaluate : callable
        ``() -> {"test_loss": float, "test_accuracy": float}``.
    train_arrays : sequence of arrays
        Training data, e.g. ``(x_train, y_train)``; batches are rows of each.
    batch_size : int
        Rows per step.
    time_budget : float, optional
        Seconds of optimizer steps: neither evaluations nor the untimed warm-up step
        (:meth:`TrainingRun.warm_up`, where a JIT backend compiles) are counted.
    max_steps : int, optional
        Number of steps.
    max_epochs : float, optional
        Passes over the training set, rounded up to whole steps. Exactly one of
        ``time_budget``, ``max_steps`` and ``max_epochs`` is given.
    checkpoints : sequence of float
        Where to evaluate, in the budget's unit (seconds, or steps for a step or epoch
        budget); the start and the end are always evaluated.
    seed : int
        Seed of the batch order.
    name : str
        Label of the run (progress bar and result).
    progress : bool
        Show a tqdm progress bar.
    checkpoint_path : path, optional
        A checkpoint file (:mod:`sgn_theano.bench.checkpoint`). If it exists, training
        resumes from it: optimizer state, step count, time spent, history and position
        in the batch order, so a step budget ends exactly where an uninterrupted run
        would (same float bits); the budget may differ from the saved run's, ``seed``
        and ``batch_size`` may not. It is written at every evaluation, every
        ``save_every`` steps, at the end, and on Ctrl-C, which then stops training
        after the current step and raises ``KeyboardInterrupt``.
    save_every : int, optional
        Also save every that many steps.
    comm : mpi4py communicator, optional
        Data-parallel training: every process of ``comm`` calls ``train`` with the same
        arguments and an optimizer built with that ``comm``
        (:class:`sgn_theano.SGN`'s ``comm``, or :class:`FirstOrder`'s ``parallel``).
        Each takes its part of every batch (``numpy.array_split`` into as many parts
        as processes, in rank order); the seconds of each step are rank 0's, so every
        process stops after the same step; only rank 0 shows progress and writes the
        checkpoint file, which every process reads to resume (with the same number of
        processes).
    construction : float
        Seconds the optimizer took to build, recorded with its warm-up as
        :attr:`TrainResult.build_time`.
    count_build : bool
        Start the clock at the optimizer's construction: its build time counts against
        ``time_budget`` and in every checkpoint's time, as a user's wall clock counts it.

    Returns
    -------
    TrainResult
        The checkpoints, steps, time and whether training diverged (a non-finite loss
        stops the run).
    """
    steps_per_epoch = max(1, len(train_arrays[0]) // batch_size)
    by_time, budget = _check_budget(time_budget, max_steps, max_epochs, steps_per_epoch,
                                    save_every)
    settings = {"seed": seed, "batch_size": batch_size}
    rank = 0
    if comm is not None:
        rank, settings["processes"] = comm.Get_rank(), comm.Get_size()
    run = TrainingRun(optimizer, evaluate, checkpoint_path, steps_per_epoch, by_time, settings,
               TrainResult(name=name), comm)
    if checkpoint_path is not None and os.path.exists(checkpoint_path):
        _resume(checkpoint_path, run.settings, optimizer, run.result)
    else:
        run.record()
    run.warm_up([array[:batch_size] for array in train_arrays], construction, count_build)
    marks = sorted({float(mark) for mark in checkpoints if run.used() < mark < budget}
                   | {budget})
    bar = progress_bar(total=budget, initial=min(run.used(), budget), desc=name,
                       unit=run.unit, disable=not progress or rank != 0)
    batches = minibatches(train_arrays, batch_size, seed=seed, start=run.result.steps)
    with _deferred_interrupts() as interrupts:
        try:
            while marks and run.used() < budget and not run.result.diverged:
                loss, elapsed = run.take_step(next(batches))
                bar.update(min(elapsed if by_time else 1, budget - bar.n))
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if run.record_when_due(marks):
                    bar.set_postfix(loss=f"{loss:.4f}",
                                    acc=f"{run.result.history[-1].test_accuracy:.3f}")
                elif save_every and run.result.steps % save_every == 0:
                    run.save()
                if interrupts:
                    run.save()
                    raise KeyboardInterrupt
        finally:
            bar.close()
    return run.result


def _check_budget(time_budget, max_steps, max_epochs, steps_per_epoch: int,
                  save_every) -> tuple[bool, float]:
    """``(by_time, budget)``: whether the budget is in seconds, and its size (seconds, or
    steps for a step or epoch budget)."""
    budgets = [time_budget, max_steps, max_epochs]
    if sum(budget is not None for budget in budgets) != 1:
        raise ValueError("Give exactly one of `time_budget`, `max_steps` and `max_epochs`.")
    if max_epochs is not None:
        max_steps = math.ceil(max_epochs * steps_per_epoch)
    by_time = time_budget is not None
    budget = float(time_budget) if by_time else int(max_steps)
    if budget <= 0:
        raise ValueError(f"The budget must be positive, got {budget}.")
    if save_every is not None and (not isinstance(save_every, int) or save_every < 1):
        raise ValueError(f"`save_every` must be a positive integer, got {save_every!r}.")
    return by_time, budget


@dataclass
class TrainingRun:
    """One optimizer's run: what it steps, records and saves (:func:`train` drives one,
    :func:`sgn_theano.bench.round_robin.train_round_robin` several in turn)."""

    optimizer: Optimizer
    evaluate: Callable[[], dict]
    checkpoint_path: str | os.PathLike | None
    steps_per_epoch: int
    by_time: bool
    settings: dict  # what a resumed run must share with the saved one
    result: TrainResult
    comm: object = None  # the processes of a data-parallel run

    @property
    def unit(self) -> str:
        """The budget's unit: ``"s"`` or ``"step"``."""
        return "s" if self.by_time else "step"

    def used(self) -> float:
        """The budget spent: seconds of steps, or steps."""
        return self.result.train_time if self.by_time else self.result.steps

    def warm_up(self, batch, construction: float = 0.0, count_build: bool = False) -> None:
        """Before the first step, the optimizer's ``warm_up`` on ``batch`` where it has
        one (:meth:`sgn_theano.SGN.warm_up`, :meth:`FirstOrder.warm_up`: a step taken and
        undone), so that a backend that compiles at the first call (JAX's JIT, NUMBA)
        compiles here, not in the first timed step. The build time is ``construction``
        (the seconds the optimizer took to build) and the warm-up's; with
        ``count_build`` the clock starts at the construction: they count as spent. A
        resumed run keeps the build time it saved."""
        started = time.perf_counter()
        if hasattr(self.optimizer, "warm_up"):
            self.optimizer.warm_up(*self._shard(batch))
        if self.result.steps:
            return
        self.result.build_time = construction + time.perf_counter() - started
        if count_build:
            self.result.build_counted = True
            self.result.train_time += self.result.build_time

    def _shard(self, batch) -> list:
        """This process's part of ``batch`` (all of it outside a data-parallel run)."""
        if self.comm is None:
            return list(batch)
        parts = [np.array_split(array, self.comm.Get_size()) for array in batch]
        return [part[self.comm.Get_rank()] for part in parts]

    def take_step(self, batch) -> tuple[float, float]:
        """One optimizer step: ``(loss, seconds)``; a non-finite loss marks divergence."""
        batch = self._shard(batch)
        started = time.perf_counter()
        outcome = self.optimizer.step(*batch)
        elapsed = time.perf_counter() - started
        if self.comm is not None:  # every process counts rank 0's seconds
            elapsed = self.comm.bcast(elapsed, root=0)
        loss = float(getattr(outcome, "loss", outcome))
        self.result.rejected += not getattr(outcome, "accepted", True)
        self.result.steps += 1
        self.result.train_time += elapsed
        self.result.step_losses.append(loss)
        self.result.step_times.append(self.result.train_time)
        self.result.diverged = not math.isfinite(loss)
        return loss, elapsed

    def record_when_due(self, marks: list[float]) -> bool:
        """Evaluate (:meth:`record`) if the run diverged or reached ``marks[0]``, and drop
        the marks it has passed from ``marks`` (sorted, in the budget's unit); whether it
        evaluated."""
        if not (self.result.diverged or marks and self.used() >= marks[0]):
            return False
        self.record()
        while marks and self.used() >= marks[0]:
            marks.pop(0)
        return True

    def record(self) -> None:
        """Evaluate, append a :class:`Checkpoint` to the history, and save."""
        steps = self.result.steps
        since = self.result.history[-1].step if self.result.history else steps
        losses = self.result.step_losses[since:]
        mean_loss = float(np.mean(losses)) if losses else math.nan
        self.result.history.append(Checkpoint(
            step=steps, epoch=steps / self.steps_per_epoch, time=self.result.train_time,
            train_loss=mean_loss, **self.evaluate()))
        self.save()

    def save(self) -> None:
        """Write the checkpoint file, if there is one (rank 0 of a data-parallel run)."""
        if self.checkpoint_path is None or (self.comm is not None and self.comm.Get_rank()):
            return
        result = self.result
        save_checkpoint(self.checkpoint_path, {
            "run": self.settings, "optimizer": self.optimizer.state_dict(),
            "result": {"steps": result.steps, "train_time": result.train_time,
                       "diverged": result.diverged, "rejected": result.rejected,
                       "step_losses": list(result.step_losses),
                       "step_times": list(result.step_times),
                       "build_time": result.build_time, "build_counted": result.build_counted,
                       "history": [asdict(point) for point in result.history]}})


def _resume(path, run: dict, optimizer: Optimizer, result: TrainResult) -> None:
    """Load a checkpoint of :func:`train` into ``optimizer`` and ``result``."""
    saved = load_checkpoint(path)
    if saved.get("run") != run:
        raise ValueError(f"{path} was saved by a run with {saved.get('run')}, not {run}: "
                         "resume with the same seed and batch size, or use another file.")
    if "step_losses" not in saved["result"]:
        raise ValueError(f"{path} was saved by an older sgn_theano, which kept no loss of "
                         "every step; start the run again with another file.")
    optimizer.load_state_dict(saved["optimizer"])
    progress = saved["result"]
    result.steps, result.train_time = progress["steps"], progress["train_time"]
    result.diverged, result.rejected = progress["diverged"], progress["rejected"]
    result.history = [Checkpoint(**point) for point in progress["history"]]
    result.step_losses, result.step_times = progress["step_losses"], progress["step_times"]
    result.build_time = progress.get("build_time", 0.0)  # absent before 2026-12-08
    result.build_counted = progress.get("build_counted", False)
