"""Read a search's trials back from MLflow, pick its finalists, promote its confirmed winner.

The trials are read back from MLflow (the child runs of the search), so a search
resumed after a crash sees every trial exactly once. Search-stage trials carry
validation metrics only; the finalists are the completed searched (non-baseline)
trials with the best final ``val_knn_top1``. Confirmation runs (tag
``rs.stage=confirmation``) carry the test metrics; ``verdict.decide`` turns them into
the verdict, and :func:`promote_winner` hands the winner to the store unless it is
below the untrained floor.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .tracking import (TAG_BASELINE, TAG_ERROR, TAG_JOB, TAG_POINT, TAG_RECIPE, TAG_SEED, TAG_STAGE,
                       TAG_STATUS, TAG_TRIAL, Tracker)
from .verdict import BELOW_FLOOR, RecipeRuns, Verdict

OBJECTIVE_METRIC = "val_knn_top1"


@dataclass(frozen=True)
class TrialSummary:
    run_id: str
    trial_id: str
    baseline: str | None
    status: str  # completed | pruned | failed | diverged | oom | running | interrupted
    objective: float | None  # the final val_knn_top1 (None unless completed)
    recipe: dict | None
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    point: str | None = None  # the sampled point, canonical JSON
    stage: str = "search"  # search | confirmation
    job: str | None = None  # confirmation: the recipe's name
    seed: int | None = None

    @property
    def label(self) -> str:
        return self.job or self.baseline or "tpe"


def summarize(tracker: Tracker, search_id: str) -> list[TrialSummary]:
    out = []
    for run in tracker.trial_runs(search_id):
        tags, metrics = run.data.tags, run.data.metrics
        try:
            recipe = json.loads(tags[TAG_RECIPE]) if TAG_RECIPE in tags else None
        except ValueError:
            recipe = None
        status = tags.get(TAG_STATUS, run.info.status.lower())
        objective = metrics.get(OBJECTIVE_METRIC)
        done = status == "completed" and objective is not None and math.isfinite(objective)
        seed = tags.get(TAG_SEED)
        out.append(TrialSummary(
            run_id=run.info.run_id, trial_id=tags.get(TAG_TRIAL, ""), baseline=tags.get(TAG_BASELINE),
            status=status, objective=objective if done else None, recipe=recipe, metrics=dict(metrics),
            error=tags.get(TAG_ERROR), point=tags.get(TAG_POINT), stage=tags.get(TAG_STAGE, "search"),
            job=tags.get(TAG_JOB), seed=int(seed) if seed and seed.lstrip("-").isdigit() else None))
    return out


def search_trials(trials: list[TrialSummary]) -> list[TrialSummary]:
    return [t for t in trials if t.stage != "confirmation"]


def finalists(trials: list[TrialSummary], k: int) -> list[TrialSummary]:
    """The ``k`` completed searched trials with the best final val objective (distinct recipes;
    baselines are confirmed anyway)."""
    if k <= 0:
        return []
    done = sorted((t for t in search_trials(trials)
                   if t.baseline is None and t.objective is not None and t.recipe),
                  key=lambda t: t.objective, reverse=True)
    out, seen = [], set()
    for t in done:
        key = json.dumps({k_: v for k_, v in t.recipe.items() if k_ != "seed"}, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(t)
        if len(out) == k:
            break
    return out


def best_search_trial(trials: list[TrialSummary]) -> TrialSummary | None:
    done = [t for t in search_trials(trials) if t.objective is not None]
    return max(done, key=lambda t: t.objective) if done else None


def confirmation_runs(trials: list[TrialSummary], jobs: list[dict]) -> list[RecipeRuns]:
    """The confirmation jobs grouped per recipe, with each completed seed's final metrics."""
    by_name: dict[str, RecipeRuns] = {}
    for job in jobs:
        by_name.setdefault(job["name"], RecipeRuns(job["name"], job["role"], job["recipe"]))
    for t in trials:
        if t.stage == "confirmation" and t.job in by_name and t.seed is not None and t.status == "completed":
            by_name[t.job].runs[t.seed] = {k: v for k, v in t.metrics.items() if math.isfinite(v)}
    return list(by_name.values())


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


def provenance(*, backbone: str, dataset: str, budget: str, verdict: Verdict, confirmation: list[RecipeRuns],
               fingerprint: dict, search_id: str, parent_run_id: str, experiment: str, space: str,
               settings: dict) -> dict:
    seeds = verdict.seeds
    rows = []
    for r in confirmation:
        row = {"name": r.name, "role": r.role, "recipe": r.recipe}
        for m in ("test_probe_top1", "test_knn_top1", "val_knn_top1", "val_probe_top1"):
            s = r.summary(m, seeds)
            row[m] = s.to_dict() if s is not None else None
        rows.append(row)
    winner = next(r for r in confirmation if r.name == verdict.winner)
    return {
        "backbone": backbone, "dataset": dataset, "budget": budget, "fingerprint": fingerprint,
        "verdict": verdict.to_dict(), "confirmation": rows,
        "winner": f"baseline:{winner.name}" if winner.role == "baseline" else winner.name,
        "search_id": search_id, "search_run_id": parent_run_id, "experiment": experiment, "space": space,
        "settings": settings, "code_version": code_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def promote_winner(store, *, backbone: str, dataset: str, budget: str, verdict: Verdict,
                   confirmation: list[RecipeRuns], provenance: dict, source_run_id: str | None = None,
                   force: bool = False):
    """Promote the verdict's winner into ``store`` (a :class:`recipe_search.store.RecipeStore`);
    None (nothing written) when it is below the untrained floor."""
    if verdict.verdict == BELOW_FLOOR:
        return None
    winner = next(r for r in confirmation if r.name == verdict.winner)
    seeds = verdict.seeds
    metrics = {m: s.mean for m in ("test_probe_top1", "test_knn_top1", "val_knn_top1", "val_probe_top1")
               if (s := winner.summary(m, seeds)) is not None}
    metrics["test_probe_top1_std"] = verdict.score.std
    metrics["floor_test_probe_top1"] = verdict.floor.mean
    for name, iv in verdict.lift.items():
        metrics[f"lift_{name}"] = iv.mean
        metrics[f"lift_{name}_low"] = iv.low
    recipe = {**winner.recipe, "seed": provenance.get("settings", {}).get("seed", winner.recipe.get("seed", 0))}
    return store.promote(backbone, dataset, provenance["fingerprint"]["digest"], recipe, metrics, provenance,
                         scores=verdict.score.values, budget=budget, source_run_id=source_run_id, force=force)
