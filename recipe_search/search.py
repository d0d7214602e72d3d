"""Orchestration of one recipe search: a search stage, then a confirmation stage, then a verdict.

One search = one backbone.

1. **Search** (Ray Tune's Tuner + ``searcher.RecipeSearcher`` (Optuna TPE) + ASHA): the
   two baselines run first, then sampled recipes; every trial is a proxy pretraining
   (``trial.run_trial``) ranked on the validation objective (val kNN top-1) by ASHA
   and the sampler alike. Nothing in this stage reads the test split.
2. **Confirmation** (``confirmation.py``, ``confirm.py``): *select* -- the top ``confirm_k``
   searched recipes and both baselines are trained again with ``confirm_seeds`` fresh seeds
   and the winner is chosen on val; *report* -- the winner and the reference baseline are
   trained on further fresh seeds, look by look, and the test split is read for the first
   time; the untrained encoder is evaluated at the same seeds.
3. **Verdict** (``verdict.py``, ``sequential.py``): the declared comparisons (winner against
   the reference baseline and the floor, the baseline against the floor) are tested after each
   look, Holm-corrected and valid under repeated looks; what the evidence supports is served
   (``promote.promote_served``), and nothing when nothing beats the floor.

Each trial is a nested MLflow run under the search's parent run (its stage tag says
which stage: :class:`records.Trial` or :class:`records.Confirmation`). ``resume=True`` continues at the stage where the search stopped: finished
trials stay finished, running ones continue from their last epoch checkpoint, and the
same MLflow runs are reused.

This module is the entry point (:func:`run_search`) and the run loop; the parts live in

* ``plan.py`` -- :class:`SearchSettings`, :class:`Plan`, :func:`plan`, :func:`prepare_data`;
* ``state.py`` -- the state on disk (meta file, search ids, ``--resume`` look-up, the
  per-search lock);
* ``runtime.py`` -- Ray's environment and session, trial resources, the Optuna RDB storage;
* ``stages.py`` -- the two Tune stages (:class:`stages.StageRunner`).

The names re-exported below keep ``from recipe_search.search import ...`` working.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, records
from .baselines import FLOOR_BASELINE, baselines_for, by_name
from .confirm import confirmation_seeds, floor_metrics, plan_jobs
from .confirmation import run_confirmation
from .errors import ResumeError, SearchError
from .progress import duration
from .report import log_report
from .plan import DEFAULT_EXPERIMENT, Plan, SearchSettings, plan, prepare_data
from .promote import TrialSummary, best_search_trial, promote_served, provenance, summarize
from .runtime import prepare_environment, quiet_libraries, ray_session, trial_resources
from .study_storage import open_study_storage, redact_url
from .samplers import label as sampler_label
from .stages import OBJECTIVE, StageRunner, baseline_point
from .state import (CONFIRM_SUFFIX, META_FILE, find_resumable, list_searches, new_search_id, search_lock,
                    storage_dir, write_meta)
from .tracking import Tracker
from .verdict import Selection, Verdict

__all__ = [
    "CONFIRM_SUFFIX", "DEFAULT_EXPERIMENT", "META_FILE", "OBJECTIVE", "Plan", "SearchOutcome", "SearchSettings",
    "baseline_point", "find_resumable", "list_searches", "new_search_id", "plan", "prepare_data",
    "prepare_environment", "ray_session", "run_search", "storage_dir",
]


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


# --------------------------------------------------------------------------- the search


def run_search(settings: SearchSettings, *, resume: bool = False, console=None, progress: bool = True,
               on_note=None) -> SearchOutcome:
    """Run (or resume) one search; returns its outcome after promotion."""
    t_start = time.monotonic()
    prepare_environment()
    quiet_libraries()
    note = on_note or (lambda msg: None)
    meta: dict | None = None
    cross_driver = False
    if resume:
        try:
            meta = find_resumable(settings.backbone, settings.experiment, settings.search_id)
        except ResumeError:
            if not (settings.study_storage and settings.search_id):
                raise
            # another driver: no Tune state here, but the study and the MLflow runs are shared
            meta, cross_driver = None, True
            note(f"no saved state of search {settings.search_id} here: continuing its Optuna study "
                 f"from {redact_url(settings.study_storage)} and its MLflow runs")
        if cross_driver:
            pass
        elif meta is None:
            note(f"no unfinished search of {settings.backbone} to resume: starting a new one")
        else:
            saved = SearchSettings.from_dict(meta["settings"])
            saved.ray_address = settings.ray_address
            if settings.study_storage:  # a moved database (or a password given again)
                saved.study_storage = settings.study_storage
            settings = saved
            note(f"resuming search {meta['search_id']} (started {meta.get('created', '?')}) "
                 "with its saved settings")
    p = plan(settings)
    s = p.settings
    search_id = meta["search_id"] if meta else (s.search_id or new_search_id(s.backbone))
    s.search_id = search_id
    exp_dir = storage_dir() / search_id
    meta_path = exp_dir / META_FILE
    if meta is None and meta_path.exists():
        raise SearchError(f"search {search_id!r} already exists in {exp_dir}; use --resume to continue it")
    with search_lock(exp_dir, search_id):
        return _run(p, meta, meta_path, exp_dir, resume=meta is not None or cross_driver, console=console,
                    progress=progress,
                    note=note, t_start=t_start)


def _run(p: Plan, meta: dict | None, meta_path: Path, exp_dir: Path, *, resume: bool, console, progress: bool,
         note, t_start: float) -> SearchOutcome:
    from .estimate import estimate, measure_images_per_sec
    from .fingerprint import fingerprint, mlflow_dataset
    from .trial import TrialContext

    s = p.settings
    search_id = s.search_id
    proxy = prepare_data(p)
    storage = open_study_storage(s.study_storage) if s.study_storage else None  # before any MLflow write
    for n in p.data_notes:
        note(f"data: {n}")
    fp = fingerprint(proxy, dataset=s.dataset, budget=s.budget, image_size=p.budget.image_size,
                     epochs=p.max_epochs, spec=p.data)
    stage = (meta or {}).get("stage", "search")
    failed_before = (meta or {}).get("status") == "failed"  # its first wave failed alike: search again
    from .store import RecipeStore

    RecipeStore(p.tracking_uri).check_schema()  # an outdated recipe store fails now, not after the search

    with ray_session(s.ray_address, s.num_cpus) as ray:
        cpt, gpt, conc, device, notes = trial_resources(p, ray)  # before any MLflow write
        if s.ray_address:  # a cluster: every node must read the data and share the Tune storage
            from .nodes import check_nodes

            note(f"checking the Ray nodes (data {s.data or s.dataset}, Tune storage {storage_dir()})")
            notes += check_nodes(ray, storage_dir(), None if p.data.dataset == "synthetic" else p.data,
                                 p.budget.image_size, s.seed)
        ctx = TrialContext(
            backbone=s.backbone, space=p.space, budget_fixed=dict(p.budget.fixed),
            image_size=p.budget.image_size, max_epochs=p.max_epochs, seed=s.seed, data=p.data,
            device=device, threads=max(1, int(cpt)), baselines=baselines_for(p.space),
            checkpoint_every=p.checkpoint_every, sampler=sampler_label(s.sampler))
        floor_recipe = ctx.compose(dict(by_name(FLOOR_BASELINE).values))[0]
        seeds = confirmation_seeds(s.seed, p.confirm_seeds)
        # the select phase, then at most the report phase's last look (winner + reference baseline)
        confirm_jobs = (p.confirm_k + len(ctx.baselines)) * len(seeds) + 2 * p.report_looks[-1]
        if meta is None or device == "cpu":
            ips = measure_images_per_sec(floor_recipe, proxy, device, ctx.threads)
            est = estimate(images_per_sec=ips, sizes=proxy.sizes(), num_samples=p.num_samples,
                           max_epochs=p.max_epochs, confirm_jobs=confirm_jobs, concurrency=conc, device=device,
                           cpus_per_trial=cpt, gpus_per_trial=gpt, grace_period=p.first_rung)
            for line in [p.budget.summary(int(proxy.test_y.numel())), *est.lines]:
                note(line)
            if device == "cpu" and p.budget.needs_gpu and not s.yes:
                raise SearchError(f"--budget {p.budget.name} is sized for a GPU and this cluster has none: estimated "
                                  f"{duration(est.total_s)} on the CPU; pass --yes to run it anyway, or use "
                                  "--budget smoke")

        tracker = Tracker(p.tracking_uri, s.experiment)
        search_rec = records.Search(search_id=search_id, backbone=s.backbone, dataset=s.dataset, budget=s.budget,
                                    fingerprint=fp["digest"], version=__version__, status="running")
        resolved = {"num_samples": p.num_samples, "max_epochs": p.max_epochs, "confirm_k": p.confirm_k,
                     "confirm_seeds": ",".join(map(str, seeds)), "report_looks": ",".join(map(str, p.report_looks)),
                     "space": ",".join(p.space.sources), "image_size": p.budget.image_size,
                     "fingerprint": fp["digest"]}
        parent_params = {**{k: v for k, v in s.public_dict().items() if v is not None}, **resolved,
                         **{f"budget.{k}": v for k, v in p.budget.to_dict().items()
                            if k not in ("name", "max_epochs", "num_samples", "confirm_k", "confirm_seeds")},
                         **{f"data.{k}": v for k, v in fp["sizes"].items()}}
        dataset = mlflow_dataset(fp, s.data)
        try:
            parent_run_id = tracker.parent_run(search_rec, name=f"search-{search_id}", params=parent_params)
            if meta is None:
                tracker.log_text(parent_run_id, p.space.to_yaml(), "space.yaml")
                tracker.log_dict(parent_run_id, s.public_dict(), "settings.json")
                tracker.log_dataset(parent_run_id, dataset)
        except Exception as e:  # noqa: BLE001 - MLflow/SQLAlchemy errors: the store is unusable
            from .store import StoreUnavailable

            raise StoreUnavailable(f"MLflow tracking store {p.tracking_uri} unavailable: "
                                   f"{type(e).__name__}: {e}") from None
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        prior_wall_s = float((meta or {}).get("wall_s") or 0.0)  # the sessions before this one
        meta = {**(meta or {"created": now}), "search_id": search_id, "backbone": s.backbone,
                "experiment": s.experiment, "tracking_uri": p.tracking_uri, "parent_run_id": parent_run_id,
                "status": "running", "stage": stage, "settings": s.to_dict(), "updated": now,
                "fingerprint": fp["digest"]}
        meta.pop("dir", None)
        write_meta(meta_path, meta)
        for n in notes:
            note(n)

        # the untrained floor on val, at the search's seed: shown beside every trial
        floor = {"val": meta.get("floor_val") or floor_metrics(floor_recipe, proxy, [s.seed],
                                                                evaluate_test=False)[s.seed]}
        if "floor_val" not in meta:
            meta["floor_val"] = floor["val"]
            write_meta(meta_path, meta)
            tracker.log_metrics(parent_run_id, {f"floor_{k}": v for k, v in floor["val"].items()
                                                if k.startswith("val_")})

        outcome = SearchOutcome(search_id=search_id, backbone=s.backbone, status="finished",
                                parent_run_id=parent_run_id, experiment_dir=str(exp_dir),
                                tracking_uri=p.tracking_uri, floor=floor, fingerprint=fp,
                                total_wall_s=prior_wall_s)
        runner = StageRunner(p, ctx, tracker, parent_run_id, search_rec.trial_base(), dataset, conc, cpt, gpt, device,
                              console, progress, floor)
        t_tune = time.monotonic()
        if stage == "search":
            if failed_before:
                note(f"search {search_id} had stopped: {meta.pop('error', '?')}; its search stage starts over")
                tracker.set_tags(parent_run_id, records.Search(status="running", error="").to_tags())
            outcome.resumed, interrupted = runner.search(exp_dir, resume and not failed_before, storage, note)
            outcome.search_s = time.monotonic() - t_tune
            if interrupted:
                return _stop(outcome, tracker, meta, meta_path, t_start, "search")
            if runner.failed:  # the first wave failed alike: no confirmation, the error in one line
                _failed(outcome, tracker, meta, meta_path, t_start, runner.failed)
            trials = summarize(tracker, search_id)
            named = [(b.name, ctx.recipe_for({"baseline": b.name})[0].to_dict()) for b in ctx.baselines]
            meta.update(stage="confirmation", seeds=seeds,
                        jobs=plan_jobs(trials, named, p.confirm_k, seeds))
            write_meta(meta_path, meta)
            resume = False
        t_confirm = time.monotonic()
        confirmed = run_confirmation(runner, p=p, meta=meta, meta_path=meta_path, exp_dir=exp_dir, floor=floor,
                                     floor_recipe=floor_recipe, proxy=proxy, tracker=tracker,
                                     resume=resume and stage == "confirmation", note=note)
        outcome.resumed |= confirmed.restored
        outcome.confirm_s = time.monotonic() - t_confirm
        outcome.tune_s = time.monotonic() - t_tune
        if confirmed.interrupted:
            return _stop(outcome, tracker, meta, meta_path, t_start, meta.get("stage", "confirmation"))

    seeds = meta["seeds"]
    trials = summarize(tracker, search_id)
    outcome.trials = trials
    outcome.best = best_search_trial(trials)
    outcome.trials_train_s = sum(float(t.metrics.get("trial_time_s") or 0.0) for t in trials)
    outcome.confirmation, outcome.report = confirmed.select, confirmed.report
    outcome.selection, outcome.verdict = confirmed.selection, confirmed.verdict
    if outcome.verdict is None:
        outcome.promotion_error = ("no confirmed recipe completed every seed: no verdict, nothing to promote"
                                   if outcome.selection is None else
                                   "a report run of the selected recipes failed: no verdict, nothing to promote")
    else:
        prov = provenance(backbone=s.backbone, dataset=s.dataset, budget=s.budget, verdict=outcome.verdict,
                          confirmation=outcome.confirmation, report=outcome.report, fingerprint=fp,
                          search_id=search_id,
                          parent_run_id=parent_run_id, experiment=s.experiment,
                          space=",".join(p.space.sources),
                          settings={"num_samples": p.num_samples, "max_epochs": p.max_epochs,
                                    "seed": s.seed, "data": s.data, "image_size": p.budget.image_size,
                                    "confirm_k": p.confirm_k, "confirm_seeds": seeds,
                                    "report_seeds": outcome.verdict.seeds, "report_looks": list(p.report_looks)})
        from .store import RecipeStore, StoreUnavailable

        try:
            outcome.promotion = promote_served(RecipeStore(p.tracking_uri), backbone=s.backbone,
                                               dataset=s.dataset, budget=s.budget, verdict=outcome.verdict,
                                               confirmation=outcome.confirmation, report=outcome.report,
                                               provenance=prov,
                                               source_run_id=_winner_run(trials, outcome.verdict.served or ""),
                                               force=s.force)
        except StoreUnavailable as e:
            outcome.promotion_error = str(e)
    _clock(outcome, meta, t_start)
    _finish_parent(tracker, outcome)
    meta.update(status="finished", stage="finished",
                updated=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    write_meta(meta_path, meta)
    return outcome


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
