"""A search's record of itself: its parent MLflow run's figures and tags, and its saved state,
when the search finishes, stops (interrupted: resumable) or fails (its first wave failed alike).
The steps that produce them are in ``search.py``."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import records
from ..errors import SearchError
from ..verdict.promote import TrialSummary, best_search_trial, summarize
from ..report import log_report
from ..state import write_meta
from ..tracking import Tracker

from ..verdict import Selection, Verdict


@dataclass
class SearchOutcome:
    search_id: str
    backbone: str
    status: str  # finished | interrupted
    parent_run_id: str
    experiment_dir: str
    tracking_uri: str
    trials: list[TrialSummary] = field(default_factory=list)
    best: TrialSummary | None = None  # the best search-stage trial on the val objective
    floor: dict = field(default_factory=dict)  # {"val": metrics at the search seed, "test": {seed: metrics}}
    confirmation: list = field(default_factory=list)  # verdict.RecipeRuns of the select phase (val)
    report: list = field(default_factory=list)  # verdict.RecipeRuns of the report phase (val and test)
    selection: Selection | None = None
    verdict: Verdict | None = None
    fingerprint: dict = field(default_factory=dict)
    promotion: Any = None  # store.PromotionResult
    promotion_error: str | None = None
    wall_s: float = 0.0  # this session
    total_wall_s: float = 0.0  # every session of the search (a resumed one ran before; kill -9 loses a session's)
    tune_s: float = 0.0
    search_s: float = 0.0
    confirm_s: float = 0.0
    trials_train_s: float = 0.0
    resumed: bool = False
    stage: str = "search"  # where an interrupted search stopped

    @property
    def overhead(self) -> float | None:
        """Search wall time (every session) / the sum of the trials' training time (>= 1 when serial)."""
        return self.total_wall_s / self.trials_train_s if self.trials_train_s > 0 else None


def _winner_run(trials: list[TrialSummary], winner: str) -> str | None:
    """The search-stage MLflow run of the recipe named ``winner`` (a trial id or a baseline)."""
    for t in trials:
        if t.stage == "search" and (t.trial_id == winner or t.baseline == winner):
            return t.run_id
    return None


def _stop(outcome: SearchOutcome, tracker: Tracker, meta: dict, meta_path: Path, t_start: float,
          stage: str) -> SearchOutcome:
    """An interrupted search: its trials as they stand, the parent run KILLED, resumable at ``stage``."""
    outcome.status, outcome.stage = "interrupted", stage
    outcome.trials = summarize(tracker, outcome.search_id)
    outcome.best = best_search_trial(outcome.trials)
    _clock(outcome, meta, t_start)
    _finish_parent(tracker, outcome)
    meta.update(status="interrupted", updated=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    write_meta(meta_path, meta)
    return outcome


def _failed(outcome: SearchOutcome, tracker: Tracker, meta: dict, meta_path: Path, t_start: float,
            error: str) -> None:
    """A search stopped in its search stage because every trial of its first wave failed alike:
    the parent run FAILED with status ``failed`` and the error (:class:`records.Search`); raises SearchError."""
    outcome.status, outcome.stage = "failed", "search"
    outcome.trials = summarize(tracker, outcome.search_id)
    _clock(outcome, meta, t_start)
    tracker.log_metrics(outcome.parent_run_id, {"search_wall_s": outcome.wall_s,
                                                "trials_failed": sum(t.status == "failed" for t in outcome.trials)})
    tracker.set_tags(outcome.parent_run_id, records.Search(status="failed", stage="search", error=error).to_tags())
    tracker.terminate(outcome.parent_run_id, "FAILED")
    meta.update(status="failed", error=error,
                updated=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    write_meta(meta_path, meta)
    raise SearchError(f"search {outcome.search_id} stopped: {error}")


def _clock(outcome: SearchOutcome, meta: dict, t_start: float) -> None:
    """This session's wall time, added to the earlier sessions' (saved in the search's state)."""
    outcome.wall_s = time.monotonic() - t_start
    outcome.total_wall_s += outcome.wall_s
    meta["wall_s"] = round(outcome.total_wall_s, 1)


def _finish_parent(tracker: Tracker, o: SearchOutcome) -> None:
    counts: dict[str, int] = {}
    for t in o.trials:
        key = f"{'confirm' if t.stage == 'confirmation' else 'trials'}_{t.status}"
        counts[key] = counts.get(key, 0) + 1
    metrics: dict[str, Any] = dict(counts)
    metrics.update(search_wall_s=o.wall_s, search_total_wall_s=o.total_wall_s, tune_wall_s=o.tune_s,
                   search_stage_s=o.search_s, confirm_stage_s=o.confirm_s, trials_train_s=o.trials_train_s,
                   overhead_ratio=o.overhead)
    if o.best is not None:
        metrics["best_search_val_knn_top1"] = o.best.objective
    tags: dict[str, Any] = {"status": o.status, "stage": o.stage if o.status == "interrupted" else "finished"}
    v = o.verdict
    if v is not None:
        metrics.update(floor_test_probe_top1=v.floor.mean, floor_test_probe_top1_std=v.floor.std,
                       winner_test_probe_top1=v.score.mean, winner_test_probe_top1_std=v.score.std,
                       report_seeds=len(v.seeds))
        if v.mde is not None:
            metrics["detectable_lift"] = v.mde
        for r in o.confirmation:  # the select phase: val only
            sm = r.summary("val_knn_top1", v.selection.seeds)
            if sm is not None:
                metrics[f"confirm_{r.name}_val_knn_top1"] = sm.mean
                metrics[f"confirm_{r.name}_val_knn_top1_std"] = sm.std
        for r in o.report:  # the report phase
            for m in ("test_probe_top1", "test_knn_top1"):
                sm = r.summary(m, v.seeds)
                if sm is not None:
                    metrics[f"report_{r.name}_{m}"] = sm.mean
                    metrics[f"report_{r.name}_{m}_std"] = sm.std
        for name, iv in v.lift.items():
            metrics.update({f"lift_{name}": iv.mean, f"lift_{name}_low": iv.low, f"lift_{name}_high": iv.high})
        tags.update(verdict=v.verdict, verdict_line=v.line, winner=v.winner, served=v.served or "", stop=v.stop,
                    winner_run_id=_winner_run(o.trials, v.winner))
        tracker.log_dict(o.parent_run_id, v.to_dict(), "verdict.json")
    tracker.log_metrics(o.parent_run_id, metrics)
    if o.best is not None:
        tags.update(best_trial_id=o.best.trial_id, best_run_id=o.best.run_id)
    if o.promotion is not None:
        tags.update(promoted=o.promotion.promoted, promotion=o.promotion.reason)
    elif o.promotion_error:
        tags.update(promoted=False, promotion=o.promotion_error)
    tracker.set_tags(o.parent_run_id, records.Search(**tags).to_tags())
    tracker.log_dict(o.parent_run_id, [dataclasses.asdict(t) for t in o.trials], "leaderboard.json")
    if o.status == "finished":  # the report's page and plots as artifacts report/ (a failure is a note)
        log_report(tracker, o.search_id, o.parent_run_id)
    tracker.terminate(o.parent_run_id, "KILLED" if o.status == "interrupted" else "FINISHED")
