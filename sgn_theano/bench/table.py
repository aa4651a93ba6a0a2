"""The table ``sgn-bench`` prints, from the results of its runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sgn_theano.bench.tasks import metric_of
from sgn_theano.bench.train import TrainResult

__all__ = ["format_rows", "format_table", "steps_to_target", "value_at"]


def steps_to_target(result: TrainResult, metric: str, target: float) -> float:
    """Steps at the first checkpoint whose metric reaches ``target`` (nan if none)."""
    for point in result.history:
        value = getattr(point, metric)
        if (value >= target) if metric == "test_accuracy" else (value <= target):
            return float(point.step)
    return float("nan")


def value_at(result: TrainResult, mark: float, unit: str, metric: str) -> float:
    """Metric at the first checkpoint at or past ``mark`` (seconds or epochs)."""
    for point in result.history[1:]:
        if getattr(point, unit) >= mark - 1e-9:
            return getattr(point, metric)
    return float("nan")


def format_table(groups: dict[str, list[TrainResult]], marks: Sequence[float], args) -> str:
    """One row per optimizer setting: medians over seeds of the metric at each mark, of
    steps/s, rejected steps, steps to the target and the final train loss."""
    metric, unit = metric_of(args.task), "epoch" if args.epochs is not None else "time"
    short = "acc" if metric == "test_accuracy" else "loss"
    suffix = "ep" if unit == "epoch" else "s"
    header = ["optimizer", *[f"{short}@{mark:g}{suffix}" for mark in marks], "steps",
              "steps/s", "rejected", "final train loss"]
    if args.target is not None:
        header.insert(len(marks) + 1, f"steps to {args.target:g}")
    rows = [header]
    for name, results in groups.items():
        values = [np.median([value_at(r, mark, unit, metric) for r in results]) for mark in marks]
        cells = [f"{100 * v:.1f}%" if short == "acc" else f"{v:.4f}" for v in values]
        row = [name, *cells, f"{np.median([r.steps for r in results]):.0f}",
               f"{np.median([r.steps_per_second for r in results]):.1f}",
               f"{np.median([r.rejected for r in results]):.0f}",
               f"{np.median([r.history[-1].train_loss for r in results]):.4f}"
               + (" (diverged)" if any(r.diverged for r in results) else "")]
        if args.target is not None:
            reached = np.median([steps_to_target(r, metric, args.target) for r in results])
            row.insert(len(marks) + 1, "-" if np.isnan(reached) else f"{reached:.0f}")
        rows.append(row)
    return format_rows(rows)


def format_rows(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as aligned text columns, the first row a header ruled off below."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)
