"""The table ``sgn-bench`` prints, from the results of its runs, and the same table in
Markdown from the JSON record it writes (the docs' results pages are built from those)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import os
import platform

import numpy as np
import pytensor

from sgn_theano.bench.tasks import metric_of
from sgn_theano.bench.train import TrainResult

__all__ = ["format_rows", "format_table", "machine_facts", "markdown_rows", "record_markdown",
           "steps_to_target", "table_rows", "value_at"]


def machine_facts() -> dict:
    """Where a record was measured: platform, CPU cores, and the versions that matter."""
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "pytensor": pytensor.__version__,
            "numpy": np.__version__}


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
    """:func:`table_rows` as aligned text columns."""
    return format_rows(table_rows(groups, marks, args))


def table_rows(groups: dict[str, list[TrainResult]], marks: Sequence[float],
               args) -> list[list[str]]:
    """A header and one row per optimizer setting: medians over seeds of the metric at
    each mark, of steps/s, rejected steps, steps to the target and the final train loss.
    ``args`` has ``sgn-bench``'s ``task``, ``epochs`` and ``target``."""
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
               _median_count([r.rejected for r in results]),
               f"{np.median([r.history[-1].train_loss for r in results]):.4f}"
               + (" (diverged)" if any(r.diverged for r in results) else "")]
        if args.target is not None:
            reached = np.median([steps_to_target(r, metric, args.target) for r in results])
            row.insert(len(marks) + 1, "-" if np.isnan(reached) else f"{reached:.0f}")
        rows.append(row)
    return rows


def _median_count(counts: Sequence[int | None]) -> str:
    """The median of counts, or ``"-"`` where a record did not keep them (``None``)."""
    return "-" if None in counts else f"{np.median(counts):.0f}"


def format_rows(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as aligned text columns, the first row a header ruled off below."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_rows(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as a Markdown table, the first row its header."""
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    return "\n".join(lines)


def record_markdown(record: dict) -> str:
    """The table of an ``sgn-bench`` JSON record in Markdown, one per batch size, with
    the command, date and machine it came from."""
    config = record["config"]
    args = SimpleNamespace(**config)
    by_batch: dict[int, dict[str, list[TrainResult]]] = {}
    for run in record["runs"]:
        name = run["optimizer"].split(" (batch ")[0]
        by_batch.setdefault(run["batch_size"], {}).setdefault(name, []).append(
            TrainResult.from_dict(run))
    parts = []
    for batch_size, groups in by_batch.items():
        parts.append(f"Batch {batch_size}:\n\n" + markdown_rows(
            table_rows(groups, config["marks"], args)))
    machine = record["machine"]
    parts.append(f"(`{config['command']}`; {record['date'][:10]}, {machine['cpus']} CPU "
                 f"cores, mode {config['mode']}, PyTensor {machine['pytensor']}, medians "
                 f"over seeds {config['seeds']}.)")
    return "\n\n".join(parts) + "\n"
