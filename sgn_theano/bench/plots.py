"""PNG figures of ``sgn-bench`` records: against time and against epochs, the training
loss of every step (smoothed) beside the test metric at every evaluation, one line per
optimizer setting and batch size (the median over seeds; a colour per setting, a line
style per batch size), like the figures of the SGN paper. Needs
matplotlib (``pip install sgn_theano[bench]``)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

__all__ = ["line_styles", "plot_runs", "smoothed"]

_AXES = (("time", "training time (s, optimizer steps only)"), ("epoch", "epochs"))
#: Points of the common grid on which the seeds' training-loss curves are merged.
_GRID_POINTS = 200
#: The line style of each batch size of a record, in increasing order.
_LINE_STYLES = ("-", "--", ":", "-.")


def smoothed(values, window: int) -> np.ndarray:
    """The running mean of ``values`` over the last ``window`` entries (fewer at the
    start), as long as ``values``."""
    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def _loss_curve(runs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """The median over ``runs`` (seeds) of their smoothed step losses, on a common grid
    of ``key`` (seconds, or epochs) up to where the shortest run ends."""
    curves = []
    for run in runs:
        losses = run["step_losses"]
        if key == "time":
            xs = np.asarray(run["step_times"])
        else:  # epochs, from the steps per epoch of the last evaluation
            last = run["history"][-1]
            xs = np.arange(1, len(losses) + 1) * (last["epoch"] / max(last["step"], 1))
        curves.append((xs, smoothed(losses, max(1, len(losses) // 40))))
    end = min(xs[-1] for xs, _ in curves)
    grid = np.linspace(min(xs[0] for xs, _ in curves), end, _GRID_POINTS)
    return grid, np.median([np.interp(grid, xs, ys) for xs, ys in curves], axis=0)


def line_styles(record: dict) -> dict[str, dict[str, str]]:
    """``{run name: {"color", "linestyle"}}``: one colour per optimizer setting and one
    line style per batch size, so that a setting's lines read as one group across batch
    sizes (``"SGN k=3 (batch 1000)"`` and ``"SGN k=3 (batch 10000)"`` share a colour)."""
    settings = list(dict.fromkeys(run["optimizer"].split(" (batch ")[0]
                                  for run in record["runs"]))
    batch_sizes = sorted({run["batch_size"] for run in record["runs"]})
    return {run["optimizer"]: {
        "color": f"C{settings.index(run['optimizer'].split(' (batch ')[0]) % 10}",
        "linestyle": _LINE_STYLES[batch_sizes.index(run["batch_size"]) % len(_LINE_STYLES)]}
        for run in record["runs"]}


def _accuracy_range(lines: list[np.ndarray]) -> tuple[float, float] | None:
    """Limits of the accuracy axis on the range where the lines differ: from the worst
    value after the first evaluation (the untrained network's is left out) to the best;
    ``None`` if there is no such range."""
    later = np.concatenate([ys[1:] for ys in lines if len(ys) > 1] or [np.array([])])
    later = later[np.isfinite(later)]
    if not len(later) or later.min() == later.max():
        return None
    pad = 0.05 * (later.max() - later.min())
    return later.min() - pad, later.max() + pad


def plot_runs(record: dict, prefix: str) -> list[str]:
    """Draw ``prefix-time.png`` and ``prefix-epochs.png`` from an ``sgn-bench`` record.

    Each figure has two panels: the training loss of every step, smoothed by a running
    mean over a fortieth of the run, the median over seeds on a common grid; and the test
    metric at every evaluation, the median over seeds of the metric against the median of
    the x value. The accuracy axis spans the values after the first evaluation, where the
    optimizers differ.

    Returns
    -------
    list of str
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = record["config"]["metric"]
    runs = defaultdict(list)
    for run in record["runs"]:
        runs[run["optimizer"]].append(run)
    config = record["config"]
    title = (f"{config['task']}, {config['model']}"
             f"{' ' + config['sizes'] if config['model'] == 'mlp' else ''}, "
             f"batch {config.get('batch_sizes') or config['batch_size']}, "
             f"seeds {config['seeds']}")
    styles = line_styles(record)
    paths = []
    for key, xlabel in _AXES:
        figure, (loss_axes, metric_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
        metric_lines = []
        for name, group in runs.items():
            style = styles[name]
            if all(len(run["step_losses"]) for run in group):
                loss_axes.plot(*_loss_curve(group, key), label=name, **style)
            length = min(len(run["history"]) for run in group)
            xs = [np.median([run["history"][i][key] for run in group]) for i in range(length)]
            ys = np.array([np.median([run["history"][i][metric] for run in group])
                           for i in range(length)])
            metric_axes.plot(xs, ys, marker="o", markersize=3, label=name, **style)
            metric_lines.append(ys)
        loss_axes.set_yscale("log")
        loss_axes.set_ylabel("training loss (smoothed)")
        metric_axes.set_ylabel(metric.replace("_", " "))
        if metric == "test_loss":
            metric_axes.set_yscale("log")
        elif _accuracy_range(metric_lines) is not None:
            metric_axes.set_ylim(*_accuracy_range(metric_lines))
        for axes in (loss_axes, metric_axes):
            axes.set_xlabel(xlabel)
            axes.grid(alpha=0.3)
        metric_axes.legend(fontsize=8)
        figure.suptitle(title, fontsize=9)
        figure.tight_layout()
        path = f"{prefix}-{'epochs' if key == 'epoch' else key}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths.append(path)
    return paths
