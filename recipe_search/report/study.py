"""A search's trials as Optuna studies, for the report's Optuna plots and parameter importances.

The search told its sampler one objective per trial (``searcher.py``): COMPLETE at the final
val kNN top-1, PRUNED with its per-epoch curve when ASHA stopped it, COMPLETE at
:data:`searcher.WORST` when it diverged, FAIL when it failed. The report rebuilds the same
trials from MLflow (the one record every search has, with or without ``--study-storage``)
into in-memory Optuna studies, so Optuna's own tools (``optuna.visualization.matplotlib``,
``optuna.importance``) read them:

* :func:`history_study` -- every search-stage trial in trial order (the baselines included,
  without parameters when they are not a point of the space): best-so-far against trial number;
* :func:`space_study` -- only the trials that are points of the space (what importances and
  slice plots need: every trial carries every parameter);
* :func:`importances` -- fANOVA (Optuna's ``FanovaImportanceEvaluator``, seeded) on the
  validation objective.

>>> from recipe_search.verdict.promote import TrialSummary
>>> from recipe_search.space import parse_space
>>> space = parse_space({"lr": {"type": "loguniform", "low": 0.01, "high": 1.0}})
>>> t = [TrialSummary("r1", "t1", None, "completed", 0.5, {"lr": 0.1}, point='{"lr": 0.1}'),
...      TrialSummary("r2", "t2", None, "pruned", None, {"lr": 0.5}, point='{"lr": 0.5}')]
>>> s = space_study("demo", t, space, {"r2": [(1, 0.3)]})
>>> [(x.state.name, x.value, x.params, x.user_attrs["mlflow_run_id"]) for x in s.trials]
[('COMPLETE', 0.5, {'lr': 0.1}, 'r1'), ('PRUNED', None, {'lr': 0.5}, 'r2')]
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from typing import TYPE_CHECKING, Any

from ..verdict.promote import TrialSummary
from ..space import SearchSpace

if TYPE_CHECKING:  # pragma: no cover
    import optuna

OBJECTIVE_NAME = "val_knn_top1"  # what the sampler maximised (the final val kNN top-1)
WORST = 0.0  # searcher.WORST: a diverged recipe (kept here so the report needs no Ray import)
MIN_COMPLETE = 3  # completed points below which importances are not computed


def trial_state(t: TrialSummary) -> tuple[str, float | None] | None:
    """``(Optuna state name, value)`` of a search trial as the sampler was told it; None for a
    trial that has not ended (running, interrupted)."""
    if t.status == "completed" and t.objective is not None:
        return "COMPLETE", float(t.objective)
    if t.status == "diverged":
        return "COMPLETE", WORST
    if t.status == "pruned":
        return "PRUNED", None
    if t.status in ("failed", "oom"):
        return "FAIL", None
    return None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def point_of(t: TrialSummary, space: SearchSpace) -> dict | None:
    """The trial's values of the space's sampled parameters, or None when it is not a point of
    the space (a baseline outside it, a point of another space)."""
    if t.baseline is not None:
        if not t.recipe or space.outside(t.recipe):
            return None
        values = space.values_in(t.recipe)
    else:
        try:
            values = _flatten(json.loads(t.point or "{}"))
        except ValueError:
            return None
    point = {}
    for name, p in space.params.items():
        if name not in values or not p.contains(values[name]):
            return None
        point[name] = values[name]
    return point


def _new_study(name: str) -> "optuna.Study":
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, direction="maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning in some Optuna versions
        study.set_metric_names([OBJECTIVE_NAME])
    return study


def _add(study, t: TrialSummary, state: str, value: float | None, params: dict, distributions: dict,
         curve: list[tuple[int, float]] | None) -> None:
    import optuna
    from optuna.trial import TrialState

    inter = {int(e): float(v) for e, v in (curve or []) if math.isfinite(v)} if state == "PRUNED" else None
    attrs = {"trial_id": t.trial_id, "mlflow_run_id": t.run_id, "stage": t.stage,
             "status": t.status, "baseline": t.baseline or ""}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState[state], value=value, params=params, distributions=distributions,
        intermediate_values=inter or None, user_attrs=attrs))


def history_study(name: str, trials: list[TrialSummary], space: SearchSpace | None,
                  curves: dict[str, list[tuple[int, float]]] | None = None) -> "optuna.Study":
    """Every ended search-stage trial, in trial order (parameters when it is a point of ``space``)."""
    study = _new_study(name)
    dists = space.optuna_space() if space is not None else {}
    for t in trials:
        told = trial_state(t) if t.stage == "search" else None
        if told is None:
            continue
        point = point_of(t, space) if space is not None else None
        _add(study, t, *told, point or {}, {k: dists[k] for k in (point or {})}, (curves or {}).get(t.run_id))
    return study


def space_study(name: str, trials: list[TrialSummary], space: SearchSpace,
                curves: dict[str, list[tuple[int, float]]] | None = None) -> "optuna.Study":
    """The ended search-stage trials that are points of ``space``, every one with every parameter."""
    study = _new_study(name)
    dists = space.optuna_space()
    for t in trials:
        told = trial_state(t) if t.stage == "search" else None
        point = point_of(t, space) if told is not None else None
        if point is not None:
            _add(study, t, *told, point, dists, (curves or {}).get(t.run_id))
    return study


def completed(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def evaluator(seed: int = 0):
    """The importance evaluator of the report: fANOVA (a random forest over the completed
    trials, seeded so the report is reproducible)."""
    from optuna.importance import FanovaImportanceEvaluator

    return FanovaImportanceEvaluator(seed=seed)


def precomputed(values: dict[str, float]):
    """An importance evaluator that returns ``values`` (computed once by :func:`importances`), so
    Optuna's ``plot_param_importances`` draws them without fitting fANOVA's forest again."""
    from optuna.importance import BaseImportanceEvaluator

    class Precomputed(BaseImportanceEvaluator):
        def evaluate(self, study, params=None, *, target=None) -> dict[str, float]:
            return {k: v for k, v in values.items() if params is None or k in params}

    return Precomputed()


def importances(study, seed: int = 0) -> tuple[dict[str, float], str | None]:
    """``({param: importance}, None)`` with the most important first, or ``({}, reason)`` when
    they cannot be computed (too few completed trials, no variation)."""
    import optuna

    n = completed(study)
    if n < MIN_COMPLETE:
        return {}, (f"{n} completed trial(s) that are points of the space; importances need at least "
                    f"{MIN_COMPLETE}")
    values = {t.value for t in study.get_trials(deepcopy=False) if t.value is not None}
    if len(values) < 2:
        return {}, "every completed trial has the same score: nothing to attribute"
    logging.getLogger("optuna").setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(study, evaluator=evaluator(seed))
    except (RuntimeError, ValueError) as e:
        return {}, f"Optuna could not compute importances: {e}"
    out = {k: float(v) for k, v in imp.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    return out, None if out else "Optuna returned no importances"


def important_params(imp: dict[str, float], k: int = 6, share: float = 0.9) -> list[str]:
    """The few parameters that explain most of the variance: by importance until ``share`` of the
    total is covered, at most ``k``."""
    total = sum(imp.values())
    out, covered = [], 0.0
    for name, v in sorted(imp.items(), key=lambda kv: kv[1], reverse=True):
        if len(out) >= k or (out and total > 0 and covered >= share * total):
            break
        out.append(name)
        covered += v
    return out


def describe(study) -> dict[str, Any]:
    """Counts per state (for the report's captions)."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts
