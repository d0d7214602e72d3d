"""A prior-guided Optuna sampler: a share of the trials near the incumbent, the rest from TPE.

The baselines, the warm start's points and every finished trial are told to the study; the
*incumbent* is the best complete trial so far. For a new trial, with probability ``share`` every
parameter is drawn near the incumbent's value (a trust region, as local search in πBO and
trust-region BO); otherwise the trial is TPE's. Before any trial completes, every trial is TPE's.

Near a value ``v`` of a parameter's distribution:

* a float on a log scale: ``v * exp(N(0, radius * log(high / low)))``, clipped into the range;
* a float on a linear scale: ``v + N(0, radius * (high - low))``, clipped (a step, if any, kept);
* an int: the same on its scale, rounded;
* a choice: ``v`` with probability ``1 - radius``, else one of the choices uniformly.

A parameter the incumbent does not have (another method's, in a define-by-run space) is TPE's.

>>> import optuna
>>> s = IncumbentSampler(optuna.samplers.TPESampler(seed=0), seed=0)
>>> study = optuna.create_study(direction="maximize", sampler=s)
>>> study.enqueue_trial({"x": 0.5})
>>> study.optimize(lambda t: -abs(t.suggest_float("x", 0.0, 1.0) - 0.5), n_trials=12)
>>> abs(study.best_params["x"] - 0.5) < 0.1
True
"""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import TrialState


class IncumbentSampler(BaseSampler):
    """``share`` of the trials near the incumbent (within ``radius`` of each range), the rest by
    ``base`` (TPE), which also models every result."""

    def __init__(self, base: BaseSampler, *, share: float = 0.5, radius: float = 0.1, seed: int | None = None):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share!r}")
        if not 0.0 < radius <= 1.0:
            raise ValueError(f"radius must be in (0, 1], got {radius!r}")
        self.base, self.share, self.radius = base, share, radius
        self._rng = np.random.RandomState(seed)
        self._local_trials: dict[int, bool] = {}  # trial number -> drawn near the incumbent

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng.seed()

    def infer_relative_search_space(self, study, trial):
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        if self._local(study, trial) is not None:
            return {}  # near the incumbent: every parameter independently, below
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, name, dist):
        incumbent = self._local(study, trial)
        if incumbent is None or name not in incumbent.params or incumbent.distributions.get(name) != dist:
            return self.base.sample_independent(study, trial, name, dist)
        return self._near(incumbent.params[name], dist)

    def before_trial(self, study, trial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def _local(self, study, trial):
        """The incumbent when ``trial`` is drawn near it (decided once per trial), else None."""
        local = self._local_trials.get(trial.number)
        if local is None:
            local = self._local_trials[trial.number] = bool(self._rng.rand() < self.share)
        if not local:
            return None
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        done = [t for t in done if t.value is not None and math.isfinite(t.value)]
        if not done:
            return None
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        return pick(done, key=lambda t: t.value)

    def _near(self, value, dist):
        r = self.radius
        if isinstance(dist, CategoricalDistribution):
            if value in dist.choices and self._rng.rand() >= r:
                return value
            return dist.choices[self._rng.randint(len(dist.choices))]
        low, high = float(dist.low), float(dist.high)
        if dist.log:
            x = math.exp(math.log(value) + self._rng.normal(0.0, r * math.log(high / low)))
        else:
            x = value + self._rng.normal(0.0, r * (high - low))
        x = min(max(x, low), high)
        step = getattr(dist, "step", None)
        if isinstance(dist, IntDistribution):
            step = step or 1
            return int(min(max(low + round((x - low) / step) * step, low), high))
        if isinstance(dist, FloatDistribution) and step:
            return float(min(low + round((x - low) / step) * step, high))
        return float(x)
