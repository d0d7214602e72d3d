"""What the recipe store hands out: the records read back from its runs (their tags are
:mod:`recipe_search.records`'), and the
checks a promotion's arguments pass before anything is written (see :mod:`recipe_search.store`)."""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .. import records
from ..records import CURRENT, PENDING, SCHEMA, SUPERSEDED, WITHHELD  # noqa: F401 - re-exported (store.py)
from ..verdict.stats import Interval, Summary, summary

if TYPE_CHECKING:  # pragma: no cover
    from mlflow.entities import Run

PRIMARY_METRIC = "test_probe_top1"  # the confirmed mean over seeds
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True)
class PromotedRecipe:
    backbone: str
    dataset: str
    fingerprint: str  # 16 hex: the proxy data actually used + the budget shape
    budget: str  # the budget's name (informative; not part of the key)
    recipe: dict  # Recipe.to_dict()
    metric: float  # test_probe_top1: the confirmed mean over the seeds
    scores: tuple[float, ...]  # the per-seed confirmed test_probe_top1 values
    verdict: str | None  # better_than_baselines | no_significant_lift | below_floor
    metrics: dict[str, float]
    provenance: dict
    run_id: str  # the store run's id
    source_run_id: str | None
    state: str  # "current" | "superseded" | "withheld"
    updated_at: str  # ISO-8601 UTC: when it was promoted
    val_scores: dict = None  # {seed: val_knn_top1} of the served recipe's confirmation runs (None: unknown)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.backbone, self.dataset, self.fingerprint)

    @property
    def score(self) -> Summary:
        """Mean ± std (n, values) of the confirmed test_probe_top1 scores."""
        return summary(self.scores)

    @property
    def verdict_line(self) -> str | None:
        """The verdict's one sentence (``provenance["verdict"]["line"]``), if any."""
        v = self.provenance.get("verdict")
        line = v.get("line") if isinstance(v, dict) else None
        return line if isinstance(line, str) else None


@dataclass(frozen=True)
class TrialRun:
    """One trial as logged to MLflow (a :class:`records.Trial` of a backbone).

    Search trials log ``val_knn_top1`` only; confirmation trials (stage ``confirmation``)
    also log ``test_probe_top1`` and ``test_knn_top1``."""

    run_id: str
    run_name: str | None
    experiment_id: str
    status: str  # MLflow run status: RUNNING | FINISHED | FAILED | KILLED | SCHEDULED
    stage: str  # "search" | "confirmation" (search when absent)
    phase: str | None  # a confirmation run's phase: "select" (val only) | "report" (reads test); None for search
    val_knn_top1: float | None
    test_probe_top1: float | None
    test_knn_top1: float | None
    metrics: dict[str, float]
    params: dict[str, str]
    search_id: str | None
    start_time: str | None  # ISO-8601 UTC
    backbone: str | None = None
    dataset: str | None = None
    baseline: str | None = None  # a baseline's trial: its name
    recipe: dict | None = None  # what it trained (the trial's recipe tag; None: not recorded)


@dataclass(frozen=True)
class PromotionResult:
    promoted: bool
    reason: str
    current: PromotedRecipe | None  # what is current for the key after the call (None: nothing)
    lift: Interval | None = None  # val interval vs the previous current recipe (None for the first)



def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def quote(value: str) -> str | None:
    """A filter-string literal for ``value``, or None when it cannot be expressed safely."""
    return f"'{value}'" if records.filterable(value) else None


def finite_float(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def fmt_interval(iv: Interval) -> str:
    if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return f"{iv.mean:+.3f} [no interval: needs 2+ seeds on both sides]"
    return iv.fmt(3)



def to_trial(run: Run) -> TrialRun:
    metrics = {k: float(v) for k, v in run.data.metrics.items() if math.isfinite(v)}
    start = run.info.start_time
    rec = records.Trial.read(run.data.tags)
    return TrialRun(
        run_id=run.info.run_id,
        run_name=run.info.run_name,
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        stage=rec.stage or records.Trial.STAGE,
        phase=getattr(rec, "phase", None),
        val_knn_top1=metrics.get("val_knn_top1"),
        test_probe_top1=metrics.get("test_probe_top1"),
        test_knn_top1=metrics.get("test_knn_top1"),
        metrics=metrics,
        params=dict(run.data.params),
        search_id=rec.search_id or rec.parent_run_id,
        start_time=None if not start else _dt.datetime.fromtimestamp(
            start / 1000, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        backbone=rec.backbone, dataset=rec.dataset, baseline=rec.baseline, recipe=rec.recipe_dict,
    )


def to_record(run: Run) -> PromotedRecipe | None:
    """The store record of a promotion run (None: not a finished promotion)."""
    p = records.Promotion.from_tags(run.data.tags, run.info.start_time)
    metrics = {k: float(v) for k, v in run.data.metrics.items()}
    if p is None or PRIMARY_METRIC not in metrics:
        return None
    return PromotedRecipe(
        backbone=p.backbone, dataset=p.dataset, fingerprint=p.fingerprint, budget=p.budget, recipe=p.recipe,
        metric=metrics[PRIMARY_METRIC], scores=p.scores, verdict=p.verdict, metrics=metrics,
        provenance=p.provenance, run_id=run.info.run_id, source_run_id=p.source_run_id, state=p.state,
        updated_at=p.promoted_at, val_scores=p.val_scores)


def validate_promotion(
    backbone: str, dataset: str, fingerprint: str, budget: str, recipe: Any, metrics: dict,
    scores: Sequence[float],
) -> tuple[dict, dict[str, float], tuple[float, ...], tuple[str, str, str]]:
    for name, value in (("backbone", backbone), ("dataset", dataset)):
        if not isinstance(value, str) or not value or "/" in value or len(value) > 250:
            raise ValueError(f"{name} must be a non-empty string without '/', got {value!r}")
    if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        raise ValueError(f"fingerprint must be 16 lowercase hex digits, got {fingerprint!r}")
    if not isinstance(budget, str) or len(budget) > 250:
        raise ValueError(f"budget must be a string (the budget's name), got {budget!r}")
    from trainer.recipe import Recipe

    if isinstance(recipe, Recipe):
        rec = recipe
    else:
        rec = Recipe.from_dict(dict(recipe))  # validates; raises RecipeError
    if rec.backbone != backbone:
        raise ValueError(f"recipe.backbone is {rec.backbone!r} but promoting for {backbone!r}")
    if isinstance(scores, (str, bytes)) or not isinstance(scores, Iterable):
        raise ValueError(f"scores must be the per-seed {PRIMARY_METRIC} values, got {scores!r}")
    scores_t = tuple(finite_float(s) for s in scores)
    if not scores_t or any(s is None for s in scores_t):
        raise ValueError(
            f"scores must be one or more finite per-seed {PRIMARY_METRIC} values, got {scores!r}")
    metrics_f: dict[str, float] = {}
    for k, v in (metrics or {}).items():
        f = finite_float(v)  # non-numeric extras belong in provenance
        if f is not None:
            metrics_f[str(k)] = f
    if PRIMARY_METRIC not in metrics_f:
        raise ValueError(
            f"metrics must contain a finite {PRIMARY_METRIC!r} (the confirmed mean), got "
            f"{(metrics or {}).get(PRIMARY_METRIC)!r}"
        )
    mean = summary(scores_t).mean  # type: ignore[arg-type]
    if abs(metrics_f[PRIMARY_METRIC] - mean) > 1e-6:
        raise ValueError(
            f"metrics[{PRIMARY_METRIC!r}] = {metrics_f[PRIMARY_METRIC]!r} is not the mean of the "
            f"scores ({mean!r})"
        )
    return rec.to_dict(), metrics_f, scores_t, (backbone, dataset, fingerprint)  # type: ignore[return-value]


def trial_leaderboard(client, backbone: str | None, limit: int, **where: str) -> list[TrialRun]:
    """The trial runs (:class:`records.Trial`) of ``backbone`` (None: of every backbone) in every
    active experiment, narrowed by ``where`` (:func:`records.filter`'s keywords), best
    ``val_knn_top1`` first (runs without it last), at most ``limit``."""
    flt = records.filter(kind=records.TRIAL, **({"backbone": backbone} if backbone else {}), **where)
    exp_ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        exp_ids.extend(e.experiment_id for e in page)
        token = page.token
        if not token:
            break
    runs = []
    for i in range(0, len(exp_ids), 100):
        runs.extend(client.search_runs(exp_ids[i: i + 100], filter_string=flt, max_results=min(limit, 50000),
                                       order_by=["metrics.val_knn_top1 DESC", "attributes.start_time DESC"]))
    rows = [to_trial(r) for r in runs]
    rows.sort(key=lambda t: (t.val_knn_top1 is not None, t.val_knn_top1 or 0.0), reverse=True)
    return rows[:limit]
