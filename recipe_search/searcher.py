"""The search's sampler: Ray's OptunaSearch (TPE), the baselines first, one objective for all.

* **Baselines run first, outside the sampler.** Their trials get the config
  ``{"baseline": name}`` (the recipe is the baseline's own, see ``trial.py``). Optuna
  hears of a baseline only when what it actually ran with is a point of the space,
  and then at exactly those values (``add_evaluated_point``); a baseline outside the
  space (MoCo-v2's plain head in a BN-head-only space, say) is not told at all,
  rather than told at a projected point it never ran.
* **Every trial reaches Optuna ranked on the same quantity**, the validation
  objective (val kNN top-1; see ``trial.py``):

  ============================  =============================================
  trial                          what Optuna receives
  ============================  =============================================
  finished                       COMPLETE, final val objective
  stopped early by ASHA          PRUNED, with its per-epoch intermediate values
  diverged (NaN loss)            COMPLETE, :data:`WORST` (0.0): TPE learns it
  failed (error, OOM, bad point) FAIL
  ============================  =============================================

Ray's stock OptunaSearch tells a stopped trial COMPLETE at its last intermediate
value (an epoch-2 kNN ranked against finished trials' final scores) and a diverged
one FAIL (TPE never learns which learning rates blow up).
"""

from __future__ import annotations

import logging
import math

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch
from .baselines import BASELINE_KEY

WORST = 0.0  # top-1 accuracy cannot be lower: a diverged recipe ranks last
log = logging.getLogger(__name__)


def outcome_of(result: dict | None, error: bool) -> tuple[str, float | None]:
    """``(optuna state name, value)`` for a trial that ended with ``result`` (its last report)."""
    r = result or {}
    if r.get("diverged"):
        return TrialState.COMPLETE.name, WORST
    if error:
        return TrialState.FAIL.name, None
    value = r.get("objective")
    if r.get("final") and value is not None and math.isfinite(value):
        return TrialState.COMPLETE.name, float(value)
    return TrialState.PRUNED.name, None


class RecipeSearcher(OptunaSearch):
    """OptunaSearch that issues the baselines first and tells Optuna one consistent objective.

    ``baselines`` is ``[(name, point or None)]``: ``point`` is what the baseline runs with,
    restricted to the space's parameters, or None when it is not a point of the space.
    """

    def __init__(self, *args, baselines: list[tuple[str, dict | None]] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self._baselines = [(name, None if p is None else dict(p)) for name, p in baselines]
        self._issued: dict[str, str] = {}  # trial id -> baseline name
        self._last: dict[str, dict] = {}  # trial id -> last result (for intermediate values)
        self._history: dict[str, list[float]] = {}

    def suggest(self, trial_id: str):
        issued = set(self._issued.values())
        for name, _point in self._baselines:
            if name not in issued:
                self._issued[trial_id] = name
                return {BASELINE_KEY: name}
        return super().suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._last[trial_id] = dict(result)
        if not result.get("final") and result.get("objective") is not None:
            self._history.setdefault(trial_id, []).append(float(result["objective"]))
        if trial_id in self._issued or result.get("final"):
            return  # baselines are told at the end; a final report is no intermediate value
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        result = result or self._last.get(trial_id)
        state, value = outcome_of(result, error)
        history = self._history.pop(trial_id, [])
        self._last.pop(trial_id, None)
        if trial_id in self._issued:
            self._tell_baseline(self._issued[trial_id], state, value, history)
            return
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        try:
            self._ot_study.tell(self._ot_trials[trial_id], value, state=TrialState[state])
        except Exception as e:  # noqa: BLE001 - e.g. told twice after a restore
            log.warning("could not tell Optuna about trial %s: %s", trial_id, e)
        self._completed_trials.add(trial_id)

    def _tell_baseline(self, name: str, state: str, value: float | None, history: list[float]) -> None:
        point = dict(self._baselines).get(name)
        if point is None:
            return  # not a point of this space: the sampler never hears of it
        try:
            self.add_evaluated_point(point, WORST if value is None else value,
                                     error=state == TrialState.FAIL.name,
                                     pruned=state == TrialState.PRUNED.name,
                                     intermediate_values=history or None)
        except Exception as e:  # noqa: BLE001
            log.warning("could not tell Optuna about baseline %s: %s", name, e)
