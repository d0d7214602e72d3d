"""The plots of docs/results.md (``bench/quality_report.py``), drawn with matplotlib (Agg) into
the results folder; each function returns the markdown line that shows its PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _spread(ax, x: float, values: list[float], color: str, label: str | None) -> None:
    """One recipe's per-seed values (dots) and their mean ± std (bar), in percent."""
    v = [100 * a for a in values]
    ax.scatter([x] * len(v), v, color=color, alpha=0.5, s=14, label=label)
    ax.errorbar(x + 0.12, np.mean(v), yerr=np.std(v, ddof=1) if len(v) > 1 else 0, fmt="_", color=color,
                markersize=10, capsize=2)


def search_plot(rows: list[dict], out: Path) -> str:
    """Per repeat: each method's searched finalist and promoted recipe, and the floor (confirmed test probe)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    series = [("tpe-asha", "finalist", "TPE+ASHA finalist", "C0"), ("random", "finalist", "random finalist", "C1"),
              ("tpe-asha", "promoted", "promoted by TPE+ASHA", "C2"), ("random", "promoted", "promoted by random", "C3")]
    by = {(r["repeat"], r["method"]): r for r in rows}
    reps = sorted({r["repeat"] for r in rows})
    for i, rep in enumerate(reps):
        for j, (method, what, label, color) in enumerate(series):
            r = by.get((rep, method))
            if r is None:
                continue
            if what == "promoted":
                values = r["verdict"]["score"]["values"]
            else:
                fin = [c for c in (r.get("confirmed") or {}).values() if c["role"] == "finalist"]
                if not fin or not fin[0]["test_probe_top1"]:
                    continue
                values = fin[0]["test_probe_top1"]
            _spread(ax, 6 * i + j, values, color, label if i == 0 else None)
        floor = next((by[(rep, m)]["verdict"]["floor"]["values"] for m in ("tpe-asha", "random") if (rep, m) in by))
        _spread(ax, 6 * i + 4, floor, "0.5", "untrained floor" if i == 0 else None)
    ax.set_xticks([6 * i + 2 for i in range(len(reps))], [f"repeat {r}" for r in reps])
    ax.set_ylabel("confirmed test probe top-1 (%)")
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.tight_layout()
    fig.savefig(out / "search_vs_random.png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f"![search against random search]({out.name}/search_vs_random.png)"


def seed_noise_plot(names: list[str], by: dict, out: Path) -> str:
    """Each recipe's per-seed val kNN and test probe (``by``: name -> seed -> metrics)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, m in zip(axes, ("val_knn_top1", "test_probe_top1")):
        for i, n in enumerate(names):
            _spread(ax, i, [v[m] for v in by[n].values() if m in v], "0.5" if n == "floor" else f"C{i}", None)
        ax.set_xticks(range(len(names)), names)
        ax.set_title(m)
        ax.set_ylabel("top-1 (%)")
    fig.tight_layout()
    fig.savefig(out / "seed_noise.png", dpi=80)
    plt.close(fig)
    return f"![seed noise]({out.name}/seed_noise.png)"


def fidelity_plot(both: list[str], sv: list[float], rv: list[float], long_: dict, epochs: tuple, out: Path) -> str:
    """The long runs' test probe against the short run's val kNN (``sv``) and at ASHA's rung (``rv``);
    ``epochs``: (short run, rung, long run)."""
    e_short, rung, e_long = epochs
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    for ax, x, label in ((axes[0], sv, f"short run val kNN (epoch {e_short})"),
                         (axes[1], rv, f"val kNN at epoch {rung} (ASHA rung)")):
        y = [100 * long_[n]["metrics"]["test_probe_top1"] for n in both]
        ax.scatter([100 * v for v in x], y)
        for n, xv, yv in zip(both, x, y):
            if not n.startswith("random"):
                ax.annotate(n, (100 * xv, yv), fontsize=7)
        ax.set_xlabel(label + " (%)")
        ax.set_ylabel(f"long run ({e_long} ep) test probe (%)")
    fig.tight_layout()
    fig.savefig(out / "fidelity.png", dpi=80)
    plt.close(fig)
    return f"![proxy fidelity]({out.name}/fidelity.png)"


def lift_plot(v: dict, out: Path) -> str:
    """The verdict's winner, baselines and untrained floor (per-seed test probe)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    bars = [(f"winner {v['winner']}", v["score"]["values"]),
            *[(name, b["values"]) for name, b in v.get("baselines", {}).items()], ("floor", v["floor"]["values"])]
    for i, (name, values) in enumerate(bars):
        _spread(ax, i, values, f"C{i}" if name != "floor" else "0.5", None)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set_ylabel("test probe top-1 (%)")
    fig.tight_layout()
    fig.savefig(out / "lift.png", dpi=80)
    plt.close(fig)
    return f"![lift]({out.name}/lift.png)"
