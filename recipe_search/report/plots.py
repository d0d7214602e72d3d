"""The report's figures, drawn by matplotlib and Optuna's ``optuna.visualization.matplotlib``,
each returned as PNG bytes.

* :func:`learning_curves` -- val kNN top-1 per epoch of every search trial (matplotlib):
  the baselines highlighted, the trials ASHA stopped marked where it stopped them, the
  untrained floor as a line;
* :func:`best_so_far` -- Optuna's ``plot_optimization_history`` (best value against trial
  number) of the search, beside a random-search study of the same backbone, data and space
  when there is one;
* :func:`importance_plot` -- Optuna's ``plot_param_importances`` with the report's evaluator;
* :func:`slice_plot` -- Optuna's ``plot_slice`` over the important parameters.

pyplot is not thread-safe (the API renders reports in a thread pool): every figure is drawn
under one lock, on the Agg backend when nothing chose another before, and closed after saving.
"""

from __future__ import annotations

import io
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Sequence

_LOCK = threading.Lock()
DPI = 100


@dataclass(frozen=True)
class Curve:
    """One trial's per-epoch val kNN top-1."""

    label: str  # the trial id, or the baseline's name
    points: tuple[tuple[int, float], ...]  # (epoch, value)
    baseline: bool = False
    stopped: bool = False  # ASHA stopped it (status pruned): marked at its last epoch
    failed: bool = False  # failed or diverged: dotted


def _pyplot():
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files only: no window, no GUI toolkit, safe off the main thread
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _figure_of(axes):
    import numpy as np

    first = axes.flat[0] if isinstance(axes, np.ndarray) else axes
    return first.figure


def learning_curves(curves: Sequence[Curve], *, max_epochs: int | None = None, floor: float | None = None,
                    title: str = "") -> bytes:
    """val kNN top-1 against epoch, one line per search trial."""
    with _LOCK:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(9, 5))
        try:
            colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
            marked, n_base = False, 0
            for c in sorted(curves, key=lambda c: c.baseline):  # baselines drawn on top
                if not c.points:
                    continue
                x = [e for e, _ in c.points]
                y = [v for _, v in c.points]
                if c.baseline:
                    ax.plot(x, y, marker="o", linewidth=2.6, color=colors[n_base % len(colors)], zorder=3,
                            label=f"baseline {c.label}")
                    n_base += 1
                else:
                    ax.plot(x, y, marker=".", linewidth=1.0, alpha=0.55, color="0.35",
                            linestyle=":" if c.failed else "-", zorder=2)
                if c.stopped:
                    ax.scatter([x[-1]], [y[-1]], marker="x", s=70, color="tab:red", zorder=4,
                               label=None if marked else "stopped by ASHA")
                    marked = True
            ax.plot([], [], color="0.35", linewidth=1.0, label="searched trial")  # legend entry
            if floor is not None:
                ax.axhline(floor, color="black", linestyle="--", linewidth=1.2, label=f"untrained floor {floor:.3f}")
            if max_epochs:
                ax.set_xlim(0.8, max_epochs + 0.2)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlabel("epoch")
            ax.set_ylabel("val kNN top-1")
            ax.set_title(title or "learning curves of the search trials (validation)")
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize="small")
            return _png(fig)
        finally:
            plt.close(fig)


def _optuna_plot(draw, *args, **kwargs) -> bytes:
    with _LOCK:
        plt = _pyplot()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna.exceptions.ExperimentalWarning
            axes = draw(*args, **kwargs)
        fig = _figure_of(axes)
        try:
            return _png(fig)
        finally:
            plt.close(fig)


def best_so_far(studies: Sequence, *, floor: float | None = None, title: str = "") -> bytes:
    """Optuna's optimization history (every completed trial and the best value so far against
    trial number) of one or more studies, one colour per study."""
    from optuna.visualization.matplotlib import plot_optimization_history

    def draw():
        ax = plot_optimization_history(list(studies) if len(studies) > 1 else studies[0],
                                       target_name="val kNN top-1")
        fig = ax.figure
        fig.set_size_inches(9, 5)
        if floor is not None:
            ax.axhline(floor, color="black", linestyle="--", linewidth=1.2, label=f"untrained floor {floor:.3f}")
            ax.legend(loc="best", fontsize="small")
        if title:
            ax.set_title(title)
        return ax

    return _optuna_plot(draw)


def importance_plot(study, evaluator, params: list[str] | None = None, title: str = "") -> bytes:
    """Optuna's hyperparameter importance bar chart for ``study`` with ``evaluator``."""
    from optuna.visualization.matplotlib import plot_param_importances

    def draw():
        ax = plot_param_importances(study, evaluator=evaluator, params=params, target_name="val kNN top-1")
        ax.figure.set_size_inches(9, max(3, 0.45 * len(params or study.best_trial.params) + 1.5))
        if title:
            ax.set_title(title, loc="left")  # Optuna titles this one on the left
        return ax

    return _optuna_plot(draw)


def slice_plot(study, params: list[str], title: str = "") -> bytes:
    """Optuna's slice plot: the objective of every trial against each of ``params``."""
    from optuna.visualization.matplotlib import plot_slice

    def draw():
        from matplotlib.ticker import NullFormatter

        axes = plot_slice(study, params=list(params), target_name="val kNN top-1")
        fig = _figure_of(axes)
        for ax in fig.axes:
            if ax.get_xscale() == "log":  # log axes: no labels on minor ticks (they collide)
                ax.xaxis.set_minor_formatter(NullFormatter())
        fig.set_size_inches(max(6, 3.2 * len(params)), 4)
        if title:
            fig.suptitle(title)
        return axes

    return _optuna_plot(draw)
