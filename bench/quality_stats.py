"""The statistics behind docs/results.md (``bench/quality_report.py``): rank correlations with
percentile-bootstrap intervals, paired t p-values, Holm's correction and Fisher-z intervals."""

from __future__ import annotations

import math

import numpy as np

BOOTSTRAP = 2000


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of ``x`` against the same row of ``y`` (average ranks for ties)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    return (rx * ry).sum(1) / np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b (scipy's default) of each row of ``x`` against the same row of ``y``."""
    iu = np.triu_indices(x.shape[1], 1)
    dx = np.sign(x[:, :, None] - x[:, None, :])[:, iu[0], iu[1]]
    dy = np.sign(y[:, :, None] - y[:, None, :])[:, iu[0], iu[1]]
    return (dx * dy).sum(1) / np.sqrt((dx ** 2).sum(1) * (dy ** 2).sum(1))


def rank_correlations(x: list[float], y: list[float], seed: int = 0) -> dict:
    """Spearman's rho and Kendall's tau-b of ``x`` against ``y`` with 95% percentile-bootstrap
    intervals (resampling the recipes; resamples where either side is constant are skipped)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), (BOOTSTRAP, len(x)))  # the same draws as one rng.integers call per resample
    bx, by = x[idx], y[idx]
    ok = (np.ptp(bx, axis=1) > 0) & (np.ptp(by, axis=1) > 0)
    bx, by = bx[ok], by[ok]
    point = {"spearman": _spearman_rows(x[None], y[None])[0], "kendall": _kendall_rows(x[None], y[None])[0]}
    boots = {"spearman": _spearman_rows(bx, by), "kendall": _kendall_rows(bx, by)}
    ci = {k: (float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))) for k, v in boots.items()}
    return {"n": len(x), "spearman": float(point["spearman"]), "spearman_ci": ci["spearman"],
            "kendall": float(point["kendall"]), "kendall_ci": ci["kendall"]}


def paired_p(x: list[float], y: list[float]) -> float:
    """Two-sided p-value of the paired t test of mean(x - y) = 0."""
    from scipy.stats import ttest_rel

    return float(ttest_rel(x, y).pvalue)


def holm(pvalues: dict) -> dict:
    """Holm-adjusted p-values (same keys): step-down, monotone, capped at 1."""
    order = sorted(pvalues, key=pvalues.get)
    m, out, running = len(order), {}, 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, (m - i) * pvalues[k]))
        out[k] = running
    return out


def fisher_z(r: float, n: int) -> tuple[float, float]:
    """95% interval of a Spearman correlation by Fisher's z (standard error 1.06 / sqrt(n - 3), Fieller et al.)."""
    if n < 4 or abs(r) >= 1:
        return (float("nan"), float("nan"))
    z, half = math.atanh(r), 1.96 * 1.06 / math.sqrt(n - 3)
    return (math.tanh(z - half), math.tanh(z + half))


def spearman_difference(a: list[float], b: list[float], y: list[float], seed: int = 0) -> dict:
    """Spearman(a, y) - Spearman(b, y) for two predictors of the same target over the same recipes,
    with a 95% paired percentile-bootstrap interval (the recipes resampled once for both)."""
    a, b, y = (np.asarray(v, float) for v in (a, b, y))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), (BOOTSTRAP, len(y)))
    ba, bb, by = a[idx], b[idx], y[idx]
    ok = (np.ptp(ba, axis=1) > 0) & (np.ptp(bb, axis=1) > 0) & (np.ptp(by, axis=1) > 0)
    d = _spearman_rows(ba[ok], by[ok]) - _spearman_rows(bb[ok], by[ok])
    point = float(_spearman_rows(a[None], y[None])[0] - _spearman_rows(b[None], y[None])[0])
    return {"n": len(y), "difference": point,
            "ci": (float(np.nanpercentile(d, 2.5)), float(np.nanpercentile(d, 97.5)))}
