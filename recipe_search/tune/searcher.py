"""The search's sampler: Ray's OptunaSearch (TPE), known points first, one objective for all.

* **The warm start's points run first** (``warm``: other backbones' results,
  ``search/warm_start.py``), enqueued in the study (``enqueue_trial``, user attribute
  ``warm_start`` naming the source): Optuna asks them before anything else, and models their
  results like any trial's. They are the best recipes known on the data, so a warm search
  can reach their level after one trial's epochs instead of after the baselines' too. ASHA
  never stops them (``asha.py``): run first without that, they met only each other at the
  first rungs, and in the transfer study's repeat 1 the point that reaches the cold search's
  final incumbent at epoch 8 was stopped at epoch 6 behind another (docs/results.md section 7).
* **Then the baselines, outside the sampler.** Their trials get the config
  ``{"baseline": name}`` (the recipe is the baseline's own, see ``trial.py``). Optuna
  hears of a baseline only when what it actually ran with is a point of the space,
  and then at exactly those values (``add_evaluated_point``); a baseline outside the
  space (MoCo-v2's plain head in a BN-head-only space, say) is not told at all,
  rather than told at a projected point it never ran. A baseline is never stopped early
  (``asha.py``), whenever it starts.
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

**Names for Optuna's own tools** (``optuna-dashboard <storage url>``, ``optuna.load_study``):
the study is ``study_storage.study_name(search_id)`` with the objective named ``val_knn_top1``
and ``study_attrs`` as its user attributes (search id, backbone, MLflow parent run); every
trial told carries the user attributes ``trial_id`` (Tune's), ``mlflow_run_id`` (its MLflow
child run, from the search's ``TrialLogger`` registered in ``events``), ``stage``
(``search``), ``search_id`` and, for a baseline, ``baseline``.
"""

from __future__ import annotations

import logging
import math
import warnings

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from . import events
from ..baselines import BASELINE_KEY

WORST = 0.0  # top-1 accuracy cannot be lower: a diverged recipe ranks last
log = logging.getLogger(__name__)


def outcome_of(result: dict | None, error: bool) -> tuple[str, float | None]:
    """``(optuna state name, value)`` for a trial that ended with ``result`` (its last report)."""
    r = result or {}
    if r.get("failed"):  # an application error the trainable reported (failures.py)
        return TrialState.FAIL.name, None
    if r.get("diverged"):
        return TrialState.COMPLETE.name, WORST
    if error:
        return TrialState.FAIL.name, None
    value = r.get("objective")
    if r.get("final") and value is not None and math.isfinite(value):
        return TrialState.COMPLETE.name, float(value)
    return TrialState.PRUNED.name, None


class RecipeSearcher(OptunaSearch):
    """OptunaSearch that issues the warm start's points, then the baselines, then sampled points,
    and tells Optuna one consistent objective.

    ``baselines`` is ``[(name, point or None)]``: ``point`` is what the baseline runs with,
    restricted to the space's parameters, or None when it is not a point of the space.
    """

    OBJECTIVE_NAME = "val_knn_top1"  # the objective's name in the study (Optuna's metric name)

    def __init__(self, *args, baselines: list[tuple[str, dict | None]] = (), search_id: str | None = None,
                 study_attrs: dict | None = None, distributions=None, warm: list[tuple[str, dict]] = (), **kwargs):
        self._search_id = search_id  # set before OptunaSearch.__init__, which creates the study
        self._study_attrs = dict(study_attrs or {})
        self._warm = [(label, dict(point)) for label, point in warm]  # enqueued when the study is set up
        super().__init__(*args, **kwargs)
        self._baselines = [(name, None if p is None else dict(p)) for name, p in baselines]
        self._distributions = distributions  # point -> its distributions (a define-by-run space has no dict)
        self._issued: dict[str, str] = {}  # trial id -> baseline name
        self._last: dict[str, dict] = {}  # trial id -> last result (for intermediate values)
        self._history: dict[str, list[float]] = {}

    def _setup_study(self, mode):
        super()._setup_study(mode)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning
                self._ot_study.set_metric_names([self.OBJECTIVE_NAME])
            for key, value in getattr(self, "_study_attrs", {}).items():
                self._ot_study.set_user_attr(key, value)
        except Exception as e:  # noqa: BLE001 - names are a convenience, never a reason to fail
            log.warning("could not name the Optuna study's objective and attributes: %s", e)
        for label, point in getattr(self, "_warm", []):  # asked for first (see suggest)
            self._ot_study.enqueue_trial(point, user_attrs={"warm_start": label}, skip_if_exists=True)

    def trial_attrs(self, trial_id: str, baseline: str | None = None) -> dict[str, str]:
        """The user attributes of a trial told to Optuna (see the module's docstring)."""
        search_id = getattr(self, "_search_id", None)
        attrs = {"trial_id": trial_id, "stage": "search"}
        if search_id:
            attrs["search_id"] = search_id
            for listener in events.listeners(search_id):  # the MLflow logger knows the run of each trial
                run_id = (getattr(listener, "runs", None) or {}).get(trial_id)
                if run_id:
                    attrs["mlflow_run_id"] = run_id
                    break
        if baseline:
            attrs["baseline"] = baseline
        return attrs

    def _point_distributions(self, point: dict) -> dict:
        """The Optuna distributions of a baseline's ``point``: the space's dict, or, for a
        define-by-run space, those of the parameters that point's method samples."""
        distributions = getattr(self, "_distributions", None)  # a searcher pickled before it existed: None
        dists = distributions(point) if distributions is not None else self._space
        return {k: dists[k] for k in point}

    def _warm_waiting(self) -> bool:
        """Whether a warm start's point is still queued in the study (Optuna's WAITING trials: a
        resumed search restores the queue with the study, so this holds across restarts)."""
        study = getattr(self, "_ot_study", None)
        if study is None or not getattr(self, "_warm", None):
            return False
        return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def suggest(self, trial_id: str):
        if self._warm_waiting():  # Optuna's ask pops the queue: the warm points first
            return super().suggest(trial_id)
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
            self._tell_baseline(trial_id, self._issued[trial_id], state, value, history)
            return
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        try:
            for key, attr in self.trial_attrs(trial_id).items():
                self._ot_trials[trial_id].set_user_attr(key, attr)
        except Exception as e:  # noqa: BLE001 - e.g. a trial another driver finished
            log.warning("could not set the user attributes of Optuna trial %s: %s", trial_id, e)
        try:
            self._ot_study.tell(self._ot_trials[trial_id], value, state=TrialState[state])
        except Exception as e:  # noqa: BLE001 - e.g. told twice after a restore
            log.warning("could not tell Optuna about trial %s: %s", trial_id, e)
        self._completed_trials.add(trial_id)

    def _tell_baseline(self, trial_id: str, name: str, state: str, value: float | None,
                       history: list[float]) -> None:
        """Tell Optuna a baseline's result at its own values (what Ray's ``add_evaluated_point``
        does, plus the trial's user attributes)."""
        import optuna

        point = dict(self._baselines).get(name)
        if point is None:
            return  # not a point of this space: the sampler never hears of it
        failed = state == TrialState.FAIL.name
        try:
            self._ot_study.add_trial(optuna.trial.create_trial(
                state=TrialState[state], value=None if failed else (WORST if value is None else value),
                params=point, distributions=self._point_distributions(point),
                intermediate_values=dict(enumerate(history)) if history else None,
                user_attrs=self.trial_attrs(trial_id, baseline=name)))
        except Exception as e:  # noqa: BLE001
            log.warning("could not tell Optuna about baseline %s: %s", name, e)
