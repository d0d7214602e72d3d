"""Small-sample statistics for verdicts: mean ± std and t intervals on differences.

Confirmation trains every recipe on the same R seeds, so the lift of a recipe over a
baseline is *paired* by seed: ``d_r = a_r - b_r`` and the interval is the Student t
interval of the mean of ``d`` (``mean(d) ± t_{R-1, 1-α/2} · sd(d) / √R``). Two searches
(different seeds) are compared with Welch's unpaired t interval.

>>> s = summary([0.30, 0.32, 0.34])
>>> round(s.mean, 3), round(s.std, 3), s.n
(0.32, 0.02, 3)
>>> iv = paired_interval([0.40, 0.42, 0.44], [0.30, 0.33, 0.34])
>>> round(iv.mean, 3), iv.low > 0
(0.097, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

CONFIDENCE = 0.95
PAIRED_METHOD = "paired t interval over seeds (95%)"
WELCH_METHOD = "Welch t interval, unpaired (95%)"


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for one value
    n: int
    values: tuple[float, ...]

    @property
    def sem(self) -> float:
        return self.std / math.sqrt(self.n) if self.n > 1 else float("nan")

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n, "values": list(self.values)}

    def fmt(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int
    method: str

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def excludes_zero_above(self) -> bool:
        return self.low > 0

    def fmt(self, digits: int = 3) -> str:
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def summary(values: Sequence[float]) -> Summary:
    vals = tuple(float(v) for v in values)
    if not vals:
        raise ValueError("summary of no values")
    n = len(vals)
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return Summary(mean, std, n, vals)


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom."""
    if df <= 0 or not 0 < q < 1:
        raise ValueError(f"t_quantile needs df > 0 and 0 < q < 1, got df={df}, q={q}")
    try:
        from scipy.stats import t

        return float(t.ppf(q, df))
    except ImportError:  # pragma: no cover - scipy comes with mlflow's dependencies
        return _t_quantile_cornish_fisher(q, df)


def _t_quantile_cornish_fisher(q: float, df: float) -> float:
    """Hill (1970) expansion around the normal quantile; < 1e-3 relative error for df >= 2."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(q)
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3 + g4 / df ** 4


def paired_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Interval on ``mean(a - b)`` for values paired by position (the same seeds)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    d = summary([x - y for x, y in zip(a, b)])
    if d.n < 2:
        return Interval(d.mean, -math.inf, math.inf, d.n, PAIRED_METHOD)
    half = t_quantile(0.5 + confidence / 2, d.n - 1) * d.sem
    return Interval(d.mean, d.mean - half, d.mean + half, d.n, PAIRED_METHOD)


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Interval on ``mean(a) - mean(b)`` for independent samples (Welch-Satterthwaite df)."""
    sa, sb = summary(a), summary(b)
    diff = sa.mean - sb.mean
    if sa.n < 2 or sb.n < 2:
        return Interval(diff, -math.inf, math.inf, min(sa.n, sb.n), WELCH_METHOD)
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, diff, diff, min(sa.n, sb.n), WELCH_METHOD)
    df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))
    half = t_quantile(0.5 + confidence / 2, df) * se
    return Interval(diff, diff - half, diff + half, min(sa.n, sb.n), WELCH_METHOD)
