"""Pick a search's best trial, measure its lift over the baselines, promote it.

The trials are read back from MLflow (the child runs of the search), so a search
resumed after a crash sees every trial exactly once. The best trial is the
completed one with the highest linear-probe top-1 -- a baseline may win, with a
lift of 0. The store keeps it only if it beats the current recipe for the same
backbone, dataset and budget (or with ``force``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .tracking import (TAG_BASELINE, TAG_ERROR, TAG_POINT, TAG_RECIPE, TAG_STATUS, TAG_TRIAL,
                       Tracker)


@dataclass(frozen=True)
class TrialSummary:
    run_id: str
    trial_id: str
    baseline: str | None
    status: str  # completed | pruned | failed | diverged | oom | running | interrupted
    probe_top1: float | None
    knn_top1: float | None
    recipe: dict | None
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    point: str | None = None  # the sampled point, canonical JSON

    @property
    def label(self) -> str:
        return self.baseline or "tpe"


def summarize(tracker: Tracker, search_id: str) -> list[TrialSummary]:
    out = []
    for run in tracker.trial_runs(search_id):
        tags, metrics = run.data.tags, run.data.metrics
        try:
            recipe = json.loads(tags[TAG_RECIPE]) if TAG_RECIPE in tags else None
        except ValueError:
            recipe = None
        probe = metrics.get("probe_top1")
        out.append(TrialSummary(
            run_id=run.info.run_id, trial_id=tags.get(TAG_TRIAL, ""), baseline=tags.get(TAG_BASELINE),
            status=tags.get(TAG_STATUS, run.info.status.lower()),
            probe_top1=probe if probe is not None and math.isfinite(probe) else None,
            knn_top1=metrics.get("knn_top1"), recipe=recipe, metrics=dict(metrics),
            error=tags.get(TAG_ERROR), point=tags.get(TAG_POINT)))
    return out


def best_trial(trials: list[TrialSummary]) -> TrialSummary | None:
    done = [t for t in trials if t.status == "completed" and t.probe_top1 is not None and t.recipe]
    return max(done, key=lambda t: t.probe_top1) if done else None


def baseline_metrics(trials: list[TrialSummary]) -> dict[str, dict]:
    out = {}
    for t in trials:
        if t.baseline:
            out[t.baseline] = {"probe_top1": t.probe_top1, "knn_top1": t.knn_top1, "status": t.status,
                               "run_id": t.run_id, "trial_id": t.trial_id}
    return out


def lift(best: TrialSummary | None, baselines: dict[str, dict]) -> dict[str, float | None]:
    """``{"<baseline>": best - baseline, ..., "best_baseline": best - max(baselines)}`` in
    probe top-1 points (None where a baseline has no probe result)."""
    if best is None or best.probe_top1 is None:
        return {}
    out: dict[str, float | None] = {}
    scores = []
    for name, m in baselines.items():
        p = m.get("probe_top1")
        out[name] = None if p is None else best.probe_top1 - p
        if p is not None:
            scores.append(p)
    out["best_baseline"] = best.probe_top1 - max(scores) if scores else None
    return out


def code_version() -> str:
    """``<package version>+g<git sha>[.dirty]`` when run from a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5)
        if sha.returncode != 0:
            return __version__
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        suffix = ".dirty" if dirty.returncode == 0 and dirty.stdout.strip() else ""
        return f"{__version__}+g{sha.stdout.strip()}{suffix}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def provenance(*, backbone: str, dataset: str, budget: str, best: TrialSummary, baselines: dict,
               lifts: dict, search_id: str, parent_run_id: str, experiment: str, space: str,
               settings: dict) -> dict:
    return {
        "backbone": backbone, "dataset": dataset, "budget": budget,
        "metrics": {k: v for k, v in best.metrics.items() if k in (
            "probe_top1", "knn_top1", "probe_val_top1", "train_time_s", "mean_images_per_sec",
            "epochs_completed")},
        "baselines": {k: {"probe_top1": v["probe_top1"], "knn_top1": v["knn_top1"], "status": v["status"]}
                      for k, v in baselines.items()},
        "lift": lifts,
        "winner": best.baseline and f"baseline:{best.baseline}" or "tpe",
        "search_id": search_id, "search_run_id": parent_run_id, "trial_id": best.trial_id,
        "trial_run_id": best.run_id, "experiment": experiment, "space": space,
        "settings": settings,
        "code_version": code_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def promote_best(store, *, backbone: str, dataset: str, budget: str, best: TrialSummary,
                 provenance: dict, force: bool = False):
    """Promote ``best`` into ``store`` (a :class:`recipe_search.store.RecipeStore`)."""
    metrics = {k: v for k, v in best.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    return store.promote(backbone, dataset, budget, best.recipe, metrics, provenance,
                         source_run_id=best.run_id, force=force)
