"""Read a search's trials back from MLflow, pick its finalists, promote its confirmed winner.

The trials are read back from MLflow (the child runs of the search), so a search
resumed after a crash sees every trial exactly once. Search-stage trials carry
validation metrics only; the finalists are the completed searched (non-baseline)
trials with the best final ``val_knn_top1``. Confirmation runs (:class:`records.Confirmation`,
phase select or report) are grouped per recipe by
:func:`confirmation_runs`; ``verdict.decide`` turns them into the verdict, and
:func:`promote_served` writes what it serves into the store (or a withheld record).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import subprocess
from dataclasses import dataclass, field

from .. import __version__
from ..samplers import DEFAULT_LABEL
from .. import records
from ..config import REPO_ROOT
from ..tracking import Tracker
from .stats import summary
from . import BELOW_FLOOR, RecipeRuns, Verdict

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
    phase: str | None = None  # confirmation: select | report
    run_status: str | None = None  # MLflow's: RUNNING | FINISHED | FAILED | KILLED
    sampler: str | None = None  # a sampled trial: its sampler's label (None for runs recorded before it was)
    reused_from: str | None = None  # the run of an earlier search whose figures this run re-reports (reuse.py)

    @property
    def label(self) -> str:
        return self.job or self.baseline or self.sampler or DEFAULT_LABEL


def summarize(tracker: Tracker, search_id: str) -> list[TrialSummary]:
    """Every trial run of a search (search stage and confirmation), each once, oldest first."""
    return [summary_of(run) for run in tracker.trial_runs(search_id)]


def summary_of(run) -> TrialSummary:
    """A trial run (an MLflow ``Run``) as a :class:`TrialSummary`."""
    rec, metrics = records.Trial.read(run.data.tags), run.data.metrics
    status = rec.status or run.info.status.lower()
    objective = metrics.get(OBJECTIVE_METRIC)
    done = status == "completed" and objective is not None and math.isfinite(objective)
    return TrialSummary(
        run_id=run.info.run_id, trial_id=rec.trial_id or "", baseline=rec.baseline, status=status,
        objective=objective if done else None, recipe=rec.recipe_dict, metrics=dict(metrics), error=rec.error,
        point=rec.point, stage=rec.stage or records.Trial.STAGE, job=getattr(rec, "job", None), seed=rec.seed,
        phase=getattr(rec, "phase", None), run_status=run.info.status, sampler=rec.sampler,
        reused_from=rec.reused_from)


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


def confirmation_runs(trials: list[TrialSummary], jobs: list[dict], phase: str | None = None) -> list[RecipeRuns]:
    """The confirmation jobs grouped per recipe, with each completed seed's final metrics (of
    ``phase`` only, when given: select or report)."""
    by_name: dict[str, RecipeRuns] = {}
    for job in jobs:
        by_name.setdefault(job["name"], RecipeRuns(job["name"], job["role"], job["recipe"]))
    for t in trials:
        if phase is not None and t.phase != phase:
            continue
        if t.stage == "confirmation" and t.job in by_name and t.seed is not None and t.status == "completed":
            by_name[t.job].runs[t.seed] = {k: v for k, v in t.metrics.items() if math.isfinite(v)}
            by_name[t.job].run_ids[t.seed] = t.run_id
    return list(by_name.values())


def code_version() -> str:
    """``<package version>+g<git sha>[.dirty]`` when run from a git checkout."""
    root = REPO_ROOT
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
               report: list[RecipeRuns], fingerprint: dict, search_id: str, parent_run_id: str, experiment: str,
               space: str, settings: dict) -> dict:
    """What a store record says of where it came from: the verdict, every confirmed recipe's
    figures (select phase: val over the select seeds; report phase: val and test over the
    report seeds), the search and its settings."""
    rows = []
    reported = {r.name: r for r in report}
    for r in confirmation:
        row = {"name": r.name, "role": r.role, "recipe": r.recipe}
        s = r.summary("val_knn_top1", verdict.selection.seeds)
        row["select_val_knn_top1"] = s.to_dict() if s is not None else None
        if r.name in verdict.selection.raced_out:  # --race: its select figure is over the seeds it ran
            row["raced_out"] = verdict.selection.raced_out[r.name]
        rep = reported.get(r.name)
        for m in ("test_probe_top1", "test_knn_top1", "val_knn_top1", "val_probe_top1"):
            s = rep.summary(m, verdict.seeds) if rep is not None else None
            row[m] = s.to_dict() if s is not None else None
        rows.append(row)
    served = verdict.served
    return {
        "backbone": backbone, "dataset": dataset, "budget": budget, "fingerprint": fingerprint,
        "verdict": verdict.to_dict(), "confirmation": rows,
        "winner": f"baseline:{verdict.winner}" if verdict.winner_role == "baseline" else verdict.winner,
        "served": None if served is None else f"baseline:{served}" if verdict.served_role == "baseline" else served,
        "candidate": verdict.winner if verdict.winner_role == "finalist" and served != verdict.winner else None,
        "withheld_because": None if served is not None else withheld_because(verdict),
        "search_id": search_id, "search_run_id": parent_run_id, "experiment": experiment, "space": space,
        "settings": settings, "code_version": code_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def withheld_because(verdict: Verdict) -> str:
    """Why nothing is served, and what to run next."""
    if verdict.verdict == BELOW_FLOOR:
        why = "the best confirmed recipe is not above the untrained floor"
    else:
        why = f"{verdict.verdict}: no recipe's lift over the untrained floor is shown"
    more = (f" (the smallest lift this confirmation could detect was {verdict.mde:+.3f}"
            + (f"; {verdict.to_show()}" if verdict.to_show() else "") + ")" if verdict.mde is not None else "")
    return (f"{why}{more}; next: a longer budget (more epochs or data), or more report seeds "
            f"(--report-looks), e.g. recipe-search run --backbone {{backbone}} --budget cpu")


def promote_served(store, *, backbone: str, dataset: str, budget: str, verdict: Verdict,
                   confirmation: list[RecipeRuns], report: list[RecipeRuns], provenance: dict,
                   source_run_id: str | None = None, force: bool = False):
    """Write what the verdict serves into ``store`` (a :class:`recipe_search.store.RecipeStore`):
    the winner under ``better_than_baselines``, else the baseline whose lift over the floor is
    shown, else a ``withheld`` record (nothing served; the current recipe, if any, stays)."""
    name = verdict.served or verdict.winner
    rec = next(r for r in report if r.name == name)
    seeds = verdict.seeds
    metrics = {m: s.mean for m in ("test_probe_top1", "test_knn_top1", "val_knn_top1", "val_probe_top1")
               if (s := rec.summary(m, seeds)) is not None}
    scores = rec.values("test_probe_top1", seeds)
    metrics["test_probe_top1_std"] = summary(scores).std
    metrics["floor_test_probe_top1"] = verdict.floor.mean
    for key, iv in verdict.lift.items():
        metrics[f"lift_{key}"] = iv.mean
        metrics[f"lift_{key}_low"] = iv.low
    if verdict.mde is not None:
        metrics["detectable_lift"] = verdict.mde
    select = next((r for r in confirmation if r.name == name), None)
    val = {s: float(v["val_knn_top1"]) for s, v in rec.runs.items() if s in seeds and "val_knn_top1" in v}
    if select is not None:
        val.update({s: float(select.runs[s]["val_knn_top1"]) for s in verdict.selection.seeds
                    if "val_knn_top1" in select.runs.get(s, {})})
    prov = dict(provenance)
    if prov.get("withheld_because"):
        prov["withheld_because"] = prov["withheld_because"].replace("{backbone}", backbone)
    recipe = {**rec.recipe, "seed": provenance.get("settings", {}).get("seed", rec.recipe.get("seed", 0))}
    return store.promote(backbone, dataset, provenance["fingerprint"]["digest"], recipe, metrics, prov,
                         scores=scores, val_scores=val, served=verdict.served is not None, budget=budget,
                         source_run_id=source_run_id, force=force)
