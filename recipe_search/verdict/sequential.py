"""Seeds until the answer is known: group-sequential tests of a verdict's declared comparisons.

A comparison is a paired lift ``d_r = a_r - b_r`` over report seeds ``r`` (a recipe against a
baseline, or against the untrained floor at the same seeds). Seeds come in *looks*
``n_1 < n_2 < ... < n_K`` (e.g. 3, 5, 8); after each look every open comparison is tested,
and confirmation stops as soon as the comparisons the verdict needs are decided.

* **Statistic.** ``T = mean(d) / se`` with ``se^2 = sd(d)^2 / n + v_img``: the seed part plus
  the evaluation images' part. Paired (when both sides recorded which test images they got
  right at every seed): ``v_img = var_i(dbar_i) / N``, where ``dbar_i`` is image ``i``'s
  correctness difference averaged over the seeds -- the sampling variance of the mean
  difference over ``N`` test images drawn from the population, which is small when the two
  encoders err on the same hard images, as they do. Otherwise the independence bound
  ``v_img = (p_a (1 - p_a) + p_b (1 - p_b)) / N`` (both accuracies as if sampled
  independently: an upper bound on the paired one up to the sampling of ``dbar``). Either
  ``v_img`` only lowers ``T``; ``var_i(dbar_i)`` also holds the seed-by-image noise divided by
  ``n``, which ``sd(d)`` already counts, so the paired ``se`` is slightly conservative. With the
  whole CIFAR-10 test split (``N`` = 10,000) the bound is ~0.6 points near 25 % accuracy, with a
  50-image-per-class ImageFolder it is several.
* **Boundary (Pocock-type, calibrated).** Each look tests at one constant nominal one-sided
  level ``p*`` chosen so that, when the true lift is 0 and the ``d_r`` are normal, the chance
  that *any* look rejects is exactly ``alpha``. Because ``T`` is scale-free, that chance does
  not depend on the unknown spread, so ``p*`` depends only on the looks and ``alpha`` and is
  found once by Monte Carlo (200,000 sequences, a fixed seed; :func:`nominal_level`). We chose
  a calibrated constant boundary over an alpha-spending function because with 3-12 seeds the
  t statistic's heavy tails make the usual normal-theory spending boundaries wrong, and over
  an anytime-valid (e-value) interval because those need many more seeds for the same lift.
* **Several comparisons (Holm, graphical).** The family is tested with Holm's step-down
  carried across looks (Maurer & Bretz 2013): with ``m`` not-yet-rejected comparisons each is
  tested at ``alpha / m``; a rejection passes its level to the rest, which are then tested at
  their new level from that look on. The family-wise error over comparisons and looks stays
  at most ``alpha``.
* **Futility (non-binding).** A comparison stops being pursued when, even if its current mean
  and spread held, the interval at the last look would still include 0. Stopping for futility
  never raises the error rate (it can only reject less).
* **Detectable lift.** ``mde = (t_{1-p*, n-1} + t_{0.8, n-1}) * se``: the lift the final test
  had an 80 % chance to detect, printed with every verdict.
* **Seeds to show a lift** (:func:`seeds_to_show`): turned around, the fewest fresh seeds ``n``
  whose detectable lift, at the comparison's level in one look and its seed and image spread,
  is at most the lift it measured: what a comparison that could not be decided would take.

>>> looks = (3, 5, 8)
>>> 0.005 < nominal_level(looks, 0.025) < 0.025     # stricter than one test at 2.5 %
True
>>> c = Comparison("w-b", [0.50, 0.52, 0.51], [0.40, 0.41, 0.39])
>>> seq = Sequential(looks, alpha=0.025)
>>> [s.state for s in seq.test([c]).values()]
['rejected']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Sequence

ALPHA = 0.025  # one-sided: a lift is shown when its 95 % two-sided interval lies above 0
POWER = 0.8  # for the detectable lift
MC_SEQUENCES = 200_000
OPEN, REJECTED, FUTILE = "open", "rejected", "futile"


def check_looks(looks: Sequence[int]) -> tuple[int, ...]:
    looks = tuple(int(n) for n in looks)
    if not looks or looks[0] < 2 or any(b <= a for a, b in zip(looks, looks[1:])):
        raise ValueError(f"looks must be increasing seed counts starting at >= 2, got {list(looks)}")
    return looks


@lru_cache(maxsize=64)
def nominal_level(looks: tuple[int, ...], alpha: float) -> float:
    """The per-look one-sided p-value threshold ``p*`` that spends exactly ``alpha`` over ``looks``
    (Monte Carlo under the null; a single look gives ``alpha`` itself)."""
    looks = check_looks(looks)
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    if len(looks) == 1:
        return alpha
    import numpy as np
    from scipy.stats import t as student

    rng = np.random.default_rng(20261204)
    d = rng.standard_normal((MC_SEQUENCES, looks[-1]))
    csum, csq = np.cumsum(d, axis=1), np.cumsum(d * d, axis=1)
    min_p = np.ones(MC_SEQUENCES)
    for n in looks:
        mean = csum[:, n - 1] / n
        var = (csq[:, n - 1] - n * mean * mean) / (n - 1)
        tstat = mean / np.sqrt(np.maximum(var, 1e-300) / n)
        min_p = np.minimum(min_p, student.sf(tstat, n - 1))
    return float(np.quantile(min_p, alpha))


def t_crit(p: float, df: int) -> float:
    from scipy.stats import t as student

    return float(student.isf(p, df))


SHOW_CAP = 200  # seeds_to_show looks no further


def seeds_to_show(d: "Decision | dict", power: float = POWER, cap: int = SHOW_CAP) -> int | None:
    """The fewest fresh report seeds at which a one-look test at ``d``'s level would have a
    ``power`` chance to show ``d``'s measured lift, if its mean and its seed and image spread held:
    ``(t_{1-alpha, n-1} + t_{power, n-1}) * sqrt(seed_var / n + image_var) <= mean``. The test
    images' part does not shrink with seeds, so a lift within it is never shown. None when the
    lift is not positive, more than ``cap`` seeds would be needed, or ``d`` (a :class:`Decision`
    or its :meth:`~Decision.to_dict`, as a verdict.json holds it) lacks a figure.

    >>> d = Decision("w-b", "futile", mean=0.026, low=-0.2, high=0.25, n=3, alpha=0.0125, nominal=0.004,
    ...              p_value=0.1, mde=0.19, seed_se=0.0212, image_se=0.003, look=1)
    >>> seeds_to_show(d)  # a 2.6-point lift, the differences' seed std 3.7 points
    25
    >>> seeds_to_show(Decision("w-b", "futile", mean=-0.01, low=-0.2, high=0.2, n=3, alpha=0.0125,
    ...                        nominal=0.004, p_value=0.6, mde=0.19, seed_se=0.02, image_se=0.003, look=1)) is None
    True
    """
    get = d.get if isinstance(d, dict) else lambda k: getattr(d, k, None)
    mean, n0, seed_se, image_se, alpha = (get(k) for k in ("mean", "n", "seed_se", "image_se", "alpha"))
    if any(x is None for x in (mean, n0, seed_se, image_se, alpha)):
        return None
    if not (mean > 0 and n0 >= 2 and math.isfinite(seed_se) and math.isfinite(image_se)):
        return None
    seed_var, image_var = seed_se ** 2 * n0, image_se ** 2
    for n in range(2, cap + 1):
        if (t_crit(alpha, n - 1) + t_crit(1 - power, n - 1)) * math.sqrt(seed_var / n + image_var) <= mean:
            return n
    return None


@dataclass
class Comparison:
    """One declared lift ``mean(a - b)`` over the same report seeds (``a``, ``b`` in seed order).
    ``n_images``: test images behind each accuracy (0: leave the images' part out).
    ``a_correct``, ``b_correct``: per seed, which test images each side got right (bool arrays
    of ``n_images`` each, seed order): the images' part is then paired (:attr:`image_method`)."""

    name: str
    a: Sequence[float]
    b: Sequence[float]
    n_images: int = 0
    a_correct: Sequence | None = None
    b_correct: Sequence | None = None

    def __post_init__(self):
        if len(self.a) != len(self.b):
            raise ValueError(f"{self.name}: paired values need equal lengths, got {len(self.a)} and {len(self.b)}")

    @property
    def image_method(self) -> str:
        """``paired``, ``bound`` (the independence bound) or ``none`` (no images' part)."""
        if self.n_images <= 0:
            return "none"
        a, b = self.a_correct, self.b_correct
        if a is None or b is None or len(a) != self.n or len(b) != self.n:
            return "bound"
        sizes = {len(x) for x in (*a, *b)}
        return "paired" if sizes == {self.n_images} and self.n_images > 1 else "bound"

    @property
    def n(self) -> int:
        return len(self.a)

    @property
    def diffs(self) -> list[float]:
        return [x - y for x, y in zip(self.a, self.b)]

    @property
    def mean(self) -> float:
        return sum(self.diffs) / self.n

    @property
    def seed_var(self) -> float:
        d, m = self.diffs, self.mean
        return sum((x - m) ** 2 for x in d) / (self.n - 1) if self.n > 1 else math.inf

    @cached_property
    def image_var(self) -> float:
        method = self.image_method
        if method == "none":
            return 0.0
        if method == "paired":
            import numpy as np

            d = np.mean([np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
                         for x, y in zip(self.a_correct, self.b_correct)], axis=0)
            return float(d.var(ddof=1) / d.size)
        return self.bound_image_var

    @property
    def bound_image_var(self) -> float:
        """The independence bound on the images' part (reported beside a paired one: what pairing saved)."""
        if self.n_images <= 0:
            return 0.0
        pa, pb = sum(self.a) / self.n, sum(self.b) / self.n
        clip = lambda p: min(max(p, 0.0), 1.0)  # noqa: E731
        return (clip(pa) * (1 - clip(pa)) + clip(pb) * (1 - clip(pb))) / self.n_images

    def se(self, n: int | None = None) -> float:
        """Standard error of the mean lift at ``n`` seeds (default: the seeds it has)."""
        n = n or self.n
        return math.sqrt(self.seed_var / n + self.image_var)

    def p_value(self) -> float:
        """One-sided p-value of 'lift <= 0'."""
        from scipy.stats import t as student

        se = self.se()
        if self.n < 2 or not math.isfinite(se):
            return 1.0
        if se == 0:
            return 0.0 if self.mean > 0 else 1.0
        return float(student.sf(self.mean / se, self.n - 1))


@dataclass
class Decision:
    """Where one comparison stands after a look: its state, the level it was tested at and the
    interval at that level (a repeated confidence interval: valid whenever the looks stop)."""

    name: str
    state: str  # open | rejected | futile
    mean: float
    low: float
    high: float
    n: int
    alpha: float  # its Holm share of the family's alpha at its last test
    nominal: float  # the per-look p-value threshold that share gives over the looks
    p_value: float
    mde: float  # the lift this test had an 80 % chance to detect
    seed_se: float
    image_se: float
    look: int  # the look (1-based) of the last test
    image_method: str = "bound"  # how image_se was measured: paired | bound | none (Comparison.image_method)
    image_se_bound: float | None = None  # the independence bound, whatever image_se used

    def to_dict(self) -> dict:
        """Its fields, plus ``seeds_to_show`` (:func:`seeds_to_show`; None once shown) for the API and the
        provenance."""
        return {**self.__dict__, "seeds_to_show": None if self.state == REJECTED else seeds_to_show(self)}

    def fmt(self, digits: int = 3) -> str:
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


@dataclass
class Sequential:
    """The sequential Holm procedure over ``looks`` at family-wise one-sided ``alpha``."""

    looks: tuple[int, ...]
    alpha: float = ALPHA
    rejected: dict = field(default_factory=dict)  # name -> the Holm share it was rejected at
    futile: set = field(default_factory=set)

    def __post_init__(self):
        self.looks = check_looks(self.looks)

    def look_of(self, n: int) -> int:
        if n not in self.looks:
            raise ValueError(f"{n} seeds is not one of the looks {list(self.looks)}")
        return self.looks.index(n) + 1

    def test(self, comparisons: Sequence[Comparison]) -> dict[str, Decision]:
        """Test every comparison at this look (all have the same number of seeds, one of the
        looks); remembers rejections and futility for the next look."""
        ns = {c.n for c in comparisons}
        if len(ns) != 1:
            raise ValueError(f"comparisons at one look need the same seeds, got counts {sorted(ns)}")
        n = ns.pop()
        look = self.look_of(n)
        family = [c.name for c in comparisons]
        out: dict[str, Decision] = {}
        while True:  # Holm step-down: a rejection raises the others' level, test again
            standing = [name for name in family if name not in self.rejected]
            share = self.alpha / max(1, len(standing))
            newly = False
            for c in sorted(comparisons, key=lambda c: c.p_value()):
                if c.name in self.rejected or c.name in self.futile:
                    continue
                if c.p_value() < nominal_level(self.looks, share):
                    self.rejected[c.name] = share
                    newly = True
                    break
            if not newly:
                break
        standing = [name for name in family if name not in self.rejected]
        for c in comparisons:
            share = self.rejected.get(c.name, self.alpha / max(1, len(standing)))
            if c.name not in self.rejected and c.name not in self.futile and n < self.looks[-1]:
                crit_cap = t_crit(nominal_level(self.looks, share), self.looks[-1] - 1)
                if c.mean - crit_cap * c.se(self.looks[-1]) <= 0:
                    self.futile.add(c.name)
            out[c.name] = self._decision(c, share, look)
        return out

    def _decision(self, c: Comparison, share: float, look: int) -> Decision:
        nominal = nominal_level(self.looks, share)
        se = c.se()
        finite = c.n >= 2 and math.isfinite(se)
        crit = t_crit(nominal, c.n - 1) if c.n >= 2 else math.inf
        half = crit * se if finite else math.inf
        mde = (crit + t_crit(1 - POWER, c.n - 1)) * se if finite else math.inf
        state = REJECTED if c.name in self.rejected else FUTILE if c.name in self.futile else OPEN
        return Decision(name=c.name, state=state, mean=c.mean, low=c.mean - half, high=c.mean + half, n=c.n,
                        alpha=share, nominal=nominal, p_value=c.p_value(), mde=mde,
                        seed_se=math.sqrt(c.seed_var / c.n) if finite else math.inf,
                        image_se=math.sqrt(c.image_var), look=look, image_method=c.image_method,
                        image_se_bound=math.sqrt(c.bound_image_var))
