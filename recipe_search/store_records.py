"""What the recipe store holds: its MLflow tags, the records read back from them, and the
checks a promotion's arguments pass before anything is written (see :mod:`recipe_search.store`)."""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .stats import Interval, Summary, summary

if TYPE_CHECKING:  # pragma: no cover
    from mlflow.entities import Run

TAG_BACKBONE = "rs.backbone"
TAG_DATASET = "rs.dataset"
TAG_FINGERPRINT = "rs.fingerprint"
TAG_BUDGET = "rs.budget"
TAG_SCHEMA = "rs.schema"
TAG_STATE = "rs.state"
TAG_RECIPE = "rs.recipe"
TAG_PROVENANCE = "rs.provenance"
TAG_SCORES = "rs.scores"
TAG_VAL_SCORES = "rs.val_scores"  # {seed: val_knn_top1}: the evidence a replacement is decided on
TAG_VERDICT = "rs.verdict"
TAG_SOURCE_RUN = "rs.source_run_id"
TAG_PROMOTED_AT = "rs.promoted_at"
TAG_SUPERSEDED_BY = "rs.superseded_by"
TAG_SUPERSEDED_AT = "rs.superseded_at"
TAG_KIND = "rs.kind"
TAG_STAGE = "rs.stage"
TAG_PHASE = "rs.phase"  # a confirmation run's phase: select (val only) | report (reads test)

SCHEMA = "2"
PRIMARY_METRIC = "test_probe_top1"  # the confirmed mean over seeds
CURRENT, SUPERSEDED, PENDING = "current", "superseded", "pending"
WITHHELD = "withheld"  # a verdict that served nothing: kept so the API can say why, never current
MAX_TAG = 8000  # MLflow's tag value limit
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:+@/ -]*$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_KEEP_IN_TAG = ("verdict", "fingerprint")  # provenance keys shrink drops last


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
    """One trial as logged to MLflow (tags ``rs.kind=trial``, ``rs.backbone``).

    Search trials log ``val_knn_top1`` only; confirmation trials (``rs.stage``
    ``confirmation``) also log ``test_probe_top1`` and ``test_knn_top1``."""

    run_id: str
    run_name: str | None
    experiment_id: str
    status: str  # MLflow run status: RUNNING | FINISHED | FAILED | KILLED | SCHEDULED
    stage: str  # "search" | "confirmation" (tag rs.stage; search when absent)
    phase: str | None  # a confirmation run's phase: "select" (val only) | "report" (reads test); None for search
    val_knn_top1: float | None
    test_probe_top1: float | None
    test_knn_top1: float | None
    metrics: dict[str, float]
    params: dict[str, str]
    search_id: str | None
    start_time: str | None  # ISO-8601 UTC


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
    if _SAFE_VALUE.match(value):
        return f"'{value}'"
    return None



def shrink(prov: dict) -> str:
    """Compact provenance JSON under the tag limit: the largest values are replaced by a
    pointer to the ``provenance.json`` artifact, which holds the full provenance (the
    verdict and the fingerprint go last)."""
    out = dict(prov)
    note = "<too long for a tag: see artifact provenance.json>"
    order = sorted(out, key=lambda k: (k in _KEEP_IN_TAG, -len(json.dumps(out[k], default=str))))
    for key in order:
        text = json.dumps(out, separators=(",", ":"), default=str)
        if len(text) <= MAX_TAG - 100:
            break
        out[key] = note
    out["truncated"] = True
    return json.dumps(out, separators=(",", ":"), default=str)


def finite_float(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def fmt_interval(iv: Interval) -> str:
    if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return f"{iv.mean:+.3f} [no interval: needs 2+ seeds on both sides]"
    return iv.fmt(3)



def _phase(tags: dict[str, str]) -> str | None:
    """A confirmation run's phase; runs logged before phases existed all read test: report."""
    if (tags.get(TAG_STAGE) or "search") != "confirmation":
        return None
    return tags.get(TAG_PHASE) or "report"


def to_trial(run: Run) -> TrialRun:
    metrics = {k: float(v) for k, v in run.data.metrics.items() if math.isfinite(v)}
    start = run.info.start_time
    return TrialRun(
        run_id=run.info.run_id,
        run_name=run.info.run_name,
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        stage=run.data.tags.get(TAG_STAGE) or "search",
        phase=_phase(run.data.tags),
        val_knn_top1=metrics.get("val_knn_top1"),
        test_probe_top1=metrics.get("test_probe_top1"),
        test_knn_top1=metrics.get("test_knn_top1"),
        metrics=metrics,
        params=dict(run.data.params),
        search_id=run.data.tags.get("rs.search_id") or run.data.tags.get("mlflow.parentRunId"),
        start_time=None if not start else _dt.datetime.fromtimestamp(
            start / 1000, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    )

def to_record(run: Run) -> PromotedRecipe | None:
    tags = run.data.tags
    try:
        backbone = tags[TAG_BACKBONE]
        fingerprint = tags[TAG_FINGERPRINT]
        recipe = json.loads(tags[TAG_RECIPE])
        metrics = {k: float(v) for k, v in run.data.metrics.items()}
        metric = metrics[PRIMARY_METRIC]
        scores = tuple(float(s) for s in json.loads(tags[TAG_SCORES]))
        if not scores or not isinstance(recipe, dict):
            return None
    except (KeyError, ValueError, TypeError):
        return None  # not a (finished) promotion run: ignore
    try:
        provenance = json.loads(tags.get(TAG_PROVENANCE) or "{}")
    except ValueError:
        provenance = {"error": "provenance tag is not valid JSON"}
    if not isinstance(provenance, dict):
        provenance = {"error": "provenance tag is not a JSON object"}
    updated = tags.get(TAG_PROMOTED_AT)
    if not updated:
        start = run.info.start_time or 0
        updated = (
            _dt.datetime.fromtimestamp(start / 1000, _dt.timezone.utc)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z")
        )
    return PromotedRecipe(
        backbone=backbone,
        dataset=tags.get(TAG_DATASET, ""),
        fingerprint=fingerprint,
        budget=tags.get(TAG_BUDGET, ""),
        recipe=recipe,
        metric=metric,
        scores=scores,
        verdict=tags.get(TAG_VERDICT) or None,
        metrics=metrics,
        provenance=provenance,
        run_id=run.info.run_id,
        source_run_id=tags.get(TAG_SOURCE_RUN) or None,
        state=tags.get(TAG_STATE, ""),
        updated_at=updated,
        val_scores=_val_scores(tags.get(TAG_VAL_SCORES), provenance),
    )


def _val_scores(tag: str | None, provenance: dict) -> dict | None:
    """``{seed: val_knn_top1}`` from the tag, or for a record from before it, from its
    provenance (the winner's confirmation row and the verdict's seeds); None when neither has it."""
    try:
        if tag:
            return {int(k): float(v) for k, v in json.loads(tag).items()}
        v = provenance.get("verdict") or {}
        win = next(r for r in provenance.get("confirmation") or [] if r.get("name") == v.get("winner"))
        vals = (win.get("val_knn_top1") or {}).get("values") or []
        seeds = v.get("seeds") or []
        return {int(s): float(x) for s, x in zip(seeds, vals)} if len(seeds) == len(vals) and vals else None
    except (ValueError, TypeError, AttributeError, StopIteration):
        return None

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
