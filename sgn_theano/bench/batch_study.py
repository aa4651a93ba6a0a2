"""The big-batch study of ``sgn-bench --batch-sizes``: each method's best grid point at
each batch size and budget, as a table and a plot (the SGN paper's claim that SGN gains
on first-order methods as the batch grows, tested at equal wall-clock time)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sgn_theano.bench.table import format_rows, value_at
from sgn_theano.bench.train import TrainResult

__all__ = ["best_settings", "format_batch_study", "plot_batch_study"]

#: ``{batch size: {method: {setting label: [result per seed]}}}``
Study = dict[int, dict[str, dict[str, list[TrainResult]]]]


def best_settings(study: Study, marks: Sequence[float], unit: str,
                  metric: str) -> dict[int, dict[str, list[tuple[str, float]]]]:
    """Per batch size and method, at each mark: the ``(setting, median over seeds)`` of
    the grid point with the best median (highest accuracy, lowest loss); settings whose
    runs have no value there (nan) are skipped."""
    better = max if metric == "test_accuracy" else min
    best = {}
    for batch_size, methods in study.items():
        best[batch_size] = {}
        for method, settings in methods.items():
            row = []
            for mark in marks:
                medians = {name: float(np.median([value_at(r, mark, unit, metric)
                                                  for r in results]))
                           for name, results in settings.items()}
                finite = {name: value for name, value in medians.items() if np.isfinite(value)}
                row.append(better(finite.items(), key=lambda item: item[1]) if finite
                           else ("-", float("nan")))
            best[batch_size][method] = row
    return best


def format_batch_study(best: dict[int, dict[str, list[tuple[str, float]]]],
                       marks: Sequence[float], metric: str, suffix: str) -> str:
    """One row per batch size and method: the best grid point's median at each mark,
    with the setting that gave it."""
    accuracy = metric == "test_accuracy"
    header = ["batch", "method", *[f"best@{mark:g}{suffix}" for mark in marks]]
    rows = [header]
    for batch_size, methods in best.items():
        for method, row in methods.items():
            cells = [f"{100 * value:.1f}% ({name})" if accuracy else f"{value:.4f} ({name})"
                     for name, value in row]
            rows.append([str(batch_size), method, *cells])
    return format_rows(rows)


def plot_batch_study(best: dict[int, dict[str, list[tuple[str, float]]]],
                     marks: Sequence[float], metric: str, suffix: str, path: str,
                     title: str) -> str:
    """Draw the best grid point's metric against the batch size, one line per method and
    budget (solid: the full budget; dotted: the earlier marks). Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch_sizes = sorted(best)
    methods = list(dict.fromkeys(method for row in best.values() for method in row))
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for index, method in enumerate(methods):
        color = f"C{index}"
        for position, mark in enumerate(marks):
            values = [best[size][method][position][1] if method in best[size] else np.nan
                      for size in batch_sizes]
            last = position == len(marks) - 1
            axes.plot(batch_sizes, values, marker="o", markersize=3, color=color,
                      linestyle="-" if last else ":", alpha=1.0 if last else 0.6,
                      label=f"{method} @{mark:g}{suffix}")
    axes.set_xscale("log")
    axes.set_xlabel("batch size")
    axes.set_ylabel(f"best grid point: {metric.replace('_', ' ')}")
    if metric != "test_accuracy":
        axes.set_yscale("log")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
