"""PNG figures of ``sgn-bench`` records: the test metric against time and against epochs,
one line per optimizer setting (the median over seeds at each checkpoint), like the
figures of the SGN paper. Needs matplotlib (``pip install sgn_theano[bench]``)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

__all__ = ["plot_runs"]

_AXES = (("time", "training time (s, optimizer steps only)"), ("epoch", "epochs"))


def plot_runs(record: dict, prefix: str) -> list[str]:
    """Draw ``prefix-time.png`` and ``prefix-epochs.png`` from an ``sgn-bench`` record.

    Runs of one optimizer setting (several seeds) are merged checkpoint by checkpoint:
    the median of the metric against the median of the x value.

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
        runs[run["optimizer"]].append(run["history"])
    config = record["config"]
    title = (f"{config['task']}, {config['model']}"
             f"{' ' + config['sizes'] if config['model'] == 'mlp' else ''}, "
             f"batch {config.get('batch_sizes') or config['batch_size']}, "
             f"seeds {config['seeds']}")
    paths = []
    for key, xlabel in _AXES:
        figure, axes = plt.subplots(figsize=(6.4, 4.2))
        for name, histories in runs.items():
            length = min(len(history) for history in histories)
            xs = [np.median([h[i][key] for h in histories]) for i in range(length)]
            ys = [np.median([h[i][metric] for h in histories]) for i in range(length)]
            axes.plot(xs, ys, marker="o", markersize=3, label=name)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(metric.replace("_", " "))
        if metric == "test_loss":
            axes.set_yscale("log")
        axes.set_title(title, fontsize=9)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = f"{prefix}-{'epochs' if key == 'epoch' else key}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths.append(path)
    return paths
