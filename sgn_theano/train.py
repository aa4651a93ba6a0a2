"""Training loop with a time or step budget, test evaluation at checkpoints, a progress
bar and a history record; plus the compiled evaluator and step functions it drives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.variable import TensorVariable
from tqdm.auto import tqdm

from sgn_theano.data import minibatches

__all__ = ["Checkpoint", "TrainResult", "make_evaluator", "make_first_order_step", "train"]


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

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.train_time if self.train_time > 0 else math.nan

    def to_dict(self) -> dict:
        return {**asdict(self), "steps_per_second": self.steps_per_second}


def make_evaluator(
    inputs: Sequence[TensorVariable],
    outputs: TensorVariable,
    loss: TensorVariable,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    mode=None,
    chunk_size: int = 2000,
) -> Callable[[], dict]:
    """Compile ``() -> {"test_loss", "test_accuracy"}`` over a labelled test set.

    ``inputs`` are ``[x, y]``; ``outputs`` are logits ``(B, C)`` and ``loss`` their
    mean loss. The set is evaluated in chunks of ``chunk_size`` rows (memory stays
    bounded) and the results are weighted by chunk size.
    """
    correct = pt.sum(pt.eq(pt.argmax(outputs, axis=1), inputs[1]))
    evaluate_chunk = pytensor.function(list(inputs), [loss, correct], mode=mode)

    def evaluate() -> dict:
        total_loss, total_correct = 0.0, 0
        for start in range(0, len(x_test), chunk_size):
            xb, yb = x_test[start : start + chunk_size], y_test[start : start + chunk_size]
            chunk_loss, chunk_correct = evaluate_chunk(xb, yb)
            total_loss += float(chunk_loss) * len(xb)
            total_correct += int(chunk_correct)
        return {"test_loss": total_loss / len(x_test),
                "test_accuracy": total_correct / len(x_test)}

    return evaluate


def make_first_order_step(
    inputs: Sequence[TensorVariable], loss: TensorVariable, updates, *, mode=None
) -> Callable[..., float]:
    """Compile an updates dict (``sgd``, ``adam``...) into ``step(*batch) -> loss``."""
    function = pytensor.function(list(inputs), loss, updates=updates, mode=mode)
    return lambda *batch: float(function(*batch))


def train(
    step: Callable[..., float],
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
) -> TrainResult:
    """Run ``step`` on shuffled mini-batches until the budget is spent.

    Parameters
    ----------
    step : callable
        ``step(*batch) -> loss`` (a float); it updates the model in place.
    evaluate : callable
        ``() -> {"test_loss": float, "test_accuracy": float}``.
    train_arrays : sequence of arrays
        Training data, e.g. ``(x_train, y_train)``; batches are rows of each.
    batch_size : int
        Rows per step.
    time_budget : float, optional
        Seconds of optimizer steps (evaluation time is not counted).
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

    Returns
    -------
    TrainResult
        The checkpoints, steps, time and whether training diverged (a non-finite loss
        stops the run).
    """
    budgets = [time_budget, max_steps, max_epochs]
    if sum(budget is not None for budget in budgets) != 1:
        raise ValueError("Give exactly one of `time_budget`, `max_steps` and `max_epochs`.")
    steps_per_epoch = max(1, len(train_arrays[0]) // batch_size)
    if max_epochs is not None:
        max_steps = math.ceil(max_epochs * steps_per_epoch)
    by_time = time_budget is not None
    budget = float(time_budget) if by_time else int(max_steps)
    if budget <= 0:
        raise ValueError(f"The budget must be positive, got {budget}.")
    marks = sorted({float(mark) for mark in checkpoints if 0 < mark < budget} | {budget})
    result = TrainResult(name=name)
    losses: list[float] = []

    def record():
        mean_loss = float(np.mean(losses)) if losses else math.nan
        losses.clear()
        result.history.append(Checkpoint(step=result.steps,
                                         epoch=result.steps / steps_per_epoch,
                                         time=result.train_time, train_loss=mean_loss,
                                         **evaluate()))

    record()
    bar = tqdm(total=budget, desc=name, unit="s" if by_time else "step", disable=not progress,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}{postfix}]")
    try:
        for batch in minibatches(train_arrays, batch_size, seed=seed):
            started = time.perf_counter()
            loss = step(*batch)
            elapsed = time.perf_counter() - started
            result.steps += 1
            result.train_time += elapsed
            losses.append(loss)
            used = result.train_time if by_time else result.steps
            bar.update(min(elapsed if by_time else 1, budget - bar.n))
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if not math.isfinite(loss):
                result.diverged = True
                break
            if used >= marks[0]:
                record()
                bar.set_postfix(loss=f"{loss:.4f}",
                                acc=f"{result.history[-1].test_accuracy:.3f}")
                while marks and used >= marks[0]:
                    marks.pop(0)
                if not marks:
                    break
    finally:
        bar.close()
    if result.diverged:
        record()
    return result
