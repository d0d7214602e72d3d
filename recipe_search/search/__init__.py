"""Orchestration of one recipe search: a search stage, then a confirmation stage, then a verdict.

One search = one backbone.

1. **Search** (Ray Tune's Tuner + ``searcher.RecipeSearcher`` (Optuna TPE) + ASHA): the
   warm start's points (if any), then the two baselines, run first, then sampled recipes;
   every trial is a proxy pretraining (``trial.run_trial``) ranked on the validation
   objective (val kNN top-1) by ASHA and the sampler alike. Nothing in this stage reads the test split.
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

This module is the entry point (:func:`run_search`) and the run loop: :func:`_run` is the list of
steps (data, trial context and plan line, parent run, saved state, floor, search stage,
confirmation, conclusion), each a short function over the session's saved state. The parts live in

* ``plan.py`` -- :class:`SearchSettings`, :class:`Plan`, :func:`plan`, :func:`prepare_data`;
* ``state.py`` -- the state on disk (meta file, search ids, ``--resume`` look-up, the
  per-search lock);
* ``runtime.py`` -- Ray's environment and session, trial resources, the Optuna RDB storage;
* ``stages.py`` -- the two Tune stages (:class:`stages.StageRunner`);
* ``search_record.py`` -- :class:`SearchOutcome` and the parent run's record when the search
  finishes, stops or fails.

The names re-exported below keep ``from recipe_search.search import ...`` working.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, records
from ..baselines import FLOOR_BASELINE, baselines_for, by_name
from ..verdict.confirm import confirmation_seeds, floor_metrics, plan_jobs
from ..verdict.confirmation import run_confirmation
from ..verdict.race import rounds
from ..errors import ResumeError, SearchError
from ..tune.progress import duration
from ..plan import DEFAULT_EXPERIMENT, Plan, SearchSettings, plan, prepare_data
from ..verdict.promote import best_search_trial, promote_served, provenance, summarize
from ..tune.runtime import prepare_environment, quiet_libraries, ray_session, trial_resources
from ..study_storage import open_study_storage, redact_url
from ..samplers import label as sampler_label
from ..tune.stages import OBJECTIVE, StageRunner, baseline_point
from ..state import (CONFIRM_SUFFIX, META_FILE, find_resumable, list_searches, new_search_id, search_lock,
                     storage_dir, write_meta)
from .record import SearchOutcome, _clock, _failed, _finish_parent, _stop, _winner_run
from ..tracking import Tracker

__all__ = [
    "CONFIRM_SUFFIX", "DEFAULT_EXPERIMENT", "META_FILE", "OBJECTIVE", "Plan", "SearchOutcome", "SearchSettings",
    "baseline_point", "find_resumable", "list_searches", "new_search_id", "plan", "prepare_data",
    "prepare_environment", "ray_session", "run_search", "storage_dir",
]


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


@dataclass
class _Session:
    """One session of a search: what its steps share. ``meta`` is the saved state (``state.py``),
    written by :meth:`save` whenever a step changes it, so a killed search resumes at its stage."""

    p: Plan
    meta: dict | None
    meta_path: Path
    exp_dir: Path
    note: Any
    t_start: float
    resume: bool
    proxy: Any = None
    fp: dict = field(default_factory=dict)
    storage: Any = None
    ctx: Any = None  # trial.TrialContext
    resources: tuple = ()  # cpus per trial, gpus per trial, concurrency, device
    floor_recipe: Any = None
    seeds: list[int] = field(default_factory=list)  # the select phase's seeds
    tracker: Tracker | None = None
    search_rec: records.Search | None = None
    parent_run_id: str = ""
    dataset: Any = None  # the MLflow dataset of the proxy data
    estimate: Any = None  # estimate.Estimate of this session (None when a resumed GPU search skips it)
    warm: list = field(default_factory=list)  # warm_start.WarmPoint: the sampler's first points

    @property
    def stage(self) -> str:
        return (self.meta or {}).get("stage", "search")

    def save(self) -> None:
        write_meta(self.meta_path, self.meta)


def _run(p: Plan, meta: dict | None, meta_path: Path, exp_dir: Path, *, resume: bool, console, progress: bool,
         note, t_start: float) -> SearchOutcome:
    """The search's steps in order, each over the saved state: data, trial context and plan line,
    parent run, state, the floor, the search stage, confirmation, then the verdict's promotion."""
    ss = _Session(p, meta, meta_path, exp_dir, note, t_start, resume)
    failed_before = (meta or {}).get("status") == "failed"  # its first wave failed alike: search again
    _open_data(ss)
    with ray_session(p.settings.ray_address, p.settings.num_cpus) as ray:
        notes = _trial_context(ss, ray)
        _warm_start(ss)  # before the plan: the warm points run to the end, which the estimate counts
        _plan_line(ss)
        _open_parent_run(ss)
        prior_wall_s = _save_state(ss)
        for n in notes:
            note(n)
        floor = _floor_val(ss)
        outcome = SearchOutcome(search_id=p.settings.search_id, backbone=p.settings.backbone, status="finished",
                                parent_run_id=ss.parent_run_id, experiment_dir=str(exp_dir),
                                tracking_uri=p.tracking_uri, floor=floor, fingerprint=ss.fp,
                                total_wall_s=prior_wall_s)
        cpt, gpt, conc, device = ss.resources
        runner = StageRunner(p, ss.ctx, ss.tracker, ss.parent_run_id, ss.search_rec.trial_base(), ss.dataset, conc,
                             cpt, gpt, device, console, progress, floor)
        runner.warm = [(w.label(), w.point) for w in ss.warm]
        t_tune = time.monotonic()
        stage = ss.stage
        if stage == "search":
            if not _search_stage(ss, runner, outcome, failed_before):
                return _stop(outcome, ss.tracker, ss.meta, meta_path, t_start, "search")
        t_confirm = time.monotonic()
        confirmed = run_confirmation(runner, p=p, meta=ss.meta, meta_path=meta_path, exp_dir=exp_dir, floor=floor,
                                     floor_recipe=ss.floor_recipe, proxy=ss.proxy, tracker=ss.tracker,
                                     resume=resume and stage == "confirmation", note=note)
        outcome.resumed |= confirmed.restored
        outcome.confirm_s = time.monotonic() - t_confirm
        outcome.tune_s = time.monotonic() - t_tune
        if confirmed.interrupted:
            return _stop(outcome, ss.tracker, ss.meta, meta_path, t_start, ss.meta.get("stage", "confirmation"))
    _conclude(ss, outcome, confirmed)
    return outcome


def _open_data(ss: _Session) -> None:
    """The proxy data and its fingerprint; the study storage and the recipe store are checked
    before anything is written (an outdated store fails now, not after the search)."""
    from ..fingerprint import fingerprint
    from ..store import RecipeStore

    p, s = ss.p, ss.p.settings
    ss.proxy = prepare_data(p)
    ss.storage = open_study_storage(s.study_storage) if s.study_storage else None
    for n in p.data_notes:
        ss.note(f"data: {n}")
    ss.fp = fingerprint(ss.proxy, dataset=s.dataset, budget=s.budget, image_size=p.budget.image_size,
                        epochs=p.max_epochs, spec=p.data)
    RecipeStore(p.tracking_uri).check_schema()


def _trial_context(ss: _Session, ray) -> list[str]:
    """Trial resources (and, on a cluster, every node's data and storage), the trial context, the
    floor's recipe and the select seeds; returns the notes to print once the state is saved."""
    from ..tune.trial import TrialContext

    p, s = ss.p, ss.p.settings
    cpt, gpt, conc, device, notes = trial_resources(p, ray)  # before any MLflow write
    if s.ray_address:  # a cluster: every node must read the data and share the Tune storage
        from ..tune.nodes import check_nodes

        ss.note(f"checking the Ray nodes (data {s.data or s.dataset}, Tune storage {storage_dir()})")
        notes += check_nodes(ray, storage_dir(), None if p.data.dataset == "synthetic" else p.data,
                             p.budget.image_size, s.seed)
    ss.resources = (cpt, gpt, conc, device)
    ss.ctx = TrialContext(
        backbone=s.backbone, space=p.space, budget_fixed=dict(p.budget.fixed),
        image_size=p.budget.image_size, max_epochs=p.max_epochs, seed=s.seed, data=p.data,
        device=device, threads=max(1, int(cpt)), baselines=baselines_for(p.space),
        checkpoint_every=p.checkpoint_every, sampler=sampler_label(s.sampler))
    ss.floor_recipe = ss.ctx.compose(dict(by_name(FLOOR_BASELINE).values))[0]
    ss.seeds = confirmation_seeds(s.seed, p.confirm_seeds)
    return notes


def _plan_line(ss: _Session) -> None:
    """The plan and its wall-time estimate (measured rates, ``estimate.py``'s cost model); a GPU budget
    on a CPU cluster stops here unless ``--yes``. A resumed GPU search skips the measurement."""
    from .estimate import estimate, measure

    p, s = ss.p, ss.p.settings
    cpt, gpt, conc, device = ss.resources
    if ss.meta is not None and device != "cpu":
        return
    rates = measure(ss.floor_recipe, ss.proxy, device, ss.ctx.threads)
    one_sided = sum(not ss.ctx.recipe_for({"baseline": b.name})[0].symmetric for b in ss.ctx.baselines)
    ss.estimate = estimate(rates=rates, sizes=ss.proxy.sizes(), num_samples=p.num_samples,
                           baselines=len(ss.ctx.baselines), max_epochs=p.max_epochs,
                           select_jobs=(p.confirm_k + len(ss.ctx.baselines)) * len(ss.seeds),
                           report_looks=p.report_looks, concurrency=conc, device=device, cpus_per_trial=cpt,
                           gpus_per_trial=gpt, grace_period=p.first_rung,
                           reduction_factor=p.budget.reduction_factor, one_sided_baselines=one_sided,
                           select_seeds=len(ss.seeds),
                           # the budget's measured stopping looks, unless --report-looks changed the looks
                           report_stop_share=p.budget.report_stop_share
                           if tuple(p.report_looks) == tuple(p.budget.report_looks) else (),
                           kept=len(ss.warm))
    race = ([f"race: the select phase runs its seeds in rounds {' then '.join(map(str, rounds(ss.seeds)))}; a "
             "finalist whose mean val over the seeds so far is below the best baseline's stops there (the "
             "estimate counts every select run)"] if s.race else [])
    # the budget as this search runs it: --confirm-k, --confirm-seeds and --report-looks replace its own
    effective = dataclasses.replace(p.budget, confirm_k=p.confirm_k, confirm_seeds=p.confirm_seeds,
                                    report_looks=tuple(p.report_looks))
    for line in [effective.summary(int(ss.proxy.test_y.numel())), *ss.estimate.lines, *race]:
        ss.note(line)
    if device == "cpu" and p.budget.needs_gpu and not s.yes:
        raise SearchError(f"--budget {p.budget.name} is sized for a GPU and this cluster has none: estimated "
                          f"{duration(ss.estimate.total_s)} on the CPU (at most {duration(ss.estimate.total_max_s)}); "
                          "pass --yes to run it anyway, or use --budget smoke")


def _warm_start(ss: _Session) -> None:
    """The sampler's first points from other backbones' results (``warm_start.py``), chosen when the
    search starts; a resumed search reads them back from its state."""
    from ..store import RecipeStore
    from .. import known_results
    from .warm_start import WarmPoint, describe, trial_key, warm_points, warm_share

    p, s = ss.p, ss.p.settings
    source = s.warm_start_from or s.dataset
    if ss.meta is not None and "warm_start" in ss.meta:
        ss.warm = [WarmPoint(**d) for d in ss.meta["warm_start"]]
    elif s.warm_start:
        skip = [baseline_point(p.space, ss.ctx, b.name) for b in ss.ctx.baselines]
        known = (known_results.read(s.warm_start_file) if s.warm_start_file
                 else known_results.from_store(RecipeStore(p.tracking_uri), source))
        ss.warm = warm_points(known, backbone=s.backbone, dataset=source, space=p.space,
                              limit=warm_share(p.num_samples - len(ss.ctx.baselines)), skip=skip)
    ss.ctx = dataclasses.replace(ss.ctx, warm={trial_key(w.point): w.label() for w in ss.warm})
    ss.note(describe(ss.warm, source, enabled=s.warm_start, origin=s.warm_start_file or "store"))


def resolved_values(p: Plan, seeds: list[int], fp: dict) -> dict:
    """What the plan resolved beyond the settings (the budget's defaults, the seeds, the space's
    sources, the data's fingerprint): one source for the parent run's params and the provenance."""
    return {"num_samples": p.num_samples, "max_epochs": p.max_epochs, "confirm_k": p.confirm_k,
            "confirm_seeds": list(seeds), "report_looks": list(p.report_looks),
            "space": ",".join(p.space.sources), "image_size": p.budget.image_size, "fingerprint": fp["digest"]}


def _open_parent_run(ss: _Session) -> None:
    """The search's parent MLflow run (created, or found again on resume) with its params, and on a
    new search the space, the settings and the dataset as artifacts."""
    from ..fingerprint import mlflow_dataset

    p, s = ss.p, ss.p.settings
    ss.tracker = Tracker(p.tracking_uri, s.experiment)
    ss.search_rec = records.Search(search_id=s.search_id, backbone=s.backbone, dataset=s.dataset, budget=s.budget,
                                   fingerprint=ss.fp["digest"], version=__version__, status="running")
    resolved = {k: ",".join(map(str, v)) if isinstance(v, list) else v
                for k, v in resolved_values(p, ss.seeds, ss.fp).items()}
    params = {**{k: v for k, v in s.public_dict().items() if v is not None}, **resolved,
              **{f"budget.{k}": v for k, v in p.budget.to_dict().items()
                 if k not in ("name", "max_epochs", "num_samples", "confirm_k", "confirm_seeds")},
              **{f"data.{k}": v for k, v in ss.fp["sizes"].items()}, "warm_start_points": len(ss.warm)}
    ss.dataset = mlflow_dataset(ss.fp, s.data)
    try:
        ss.parent_run_id = ss.tracker.parent_run(ss.search_rec, name=f"search-{s.search_id}", params=params)
        if ss.meta is None:
            ss.tracker.log_text(ss.parent_run_id, p.space.to_yaml(), "space.yaml")
            ss.tracker.log_dict(ss.parent_run_id, s.public_dict(), "settings.json")
            ss.tracker.log_dict(ss.parent_run_id, [w.to_dict() for w in ss.warm], "warm_start.json")
            ss.tracker.log_dataset(ss.parent_run_id, ss.dataset)
            if ss.estimate is not None:  # what the plan said, beside what the search will measure
                ss.tracker.log_metrics(ss.parent_run_id, ss.estimate.metrics())
    except Exception as e:  # noqa: BLE001 - MLflow/SQLAlchemy errors: the store is unusable
        from ..store import StoreUnavailable

        raise StoreUnavailable(f"MLflow tracking store {p.tracking_uri} unavailable: "
                               f"{type(e).__name__}: {e}") from None


def _save_state(ss: _Session) -> float:
    """The search's state on disk, started or carried on; returns the wall time of earlier sessions."""
    s = ss.p.settings
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    prior_wall_s = float((ss.meta or {}).get("wall_s") or 0.0)
    stage = ss.stage
    ss.meta = {**(ss.meta or {"created": now}), "search_id": s.search_id, "backbone": s.backbone,
               "experiment": s.experiment, "tracking_uri": ss.p.tracking_uri, "parent_run_id": ss.parent_run_id,
               "status": "running", "stage": stage, "settings": s.to_dict(), "updated": now,
               "fingerprint": ss.fp["digest"], "warm_start": [w.to_dict() for w in ss.warm]}
    ss.meta.pop("dir", None)
    ss.save()
    return prior_wall_s


def _floor_val(ss: _Session) -> dict:
    """The untrained floor on val at the search's seed, shown beside every trial (measured once)."""
    seed = ss.p.settings.seed
    floor = {"val": ss.meta.get("floor_val") or floor_metrics(ss.floor_recipe, ss.proxy, [seed],
                                                               evaluate_test=False)[seed]}
    if "floor_val" not in ss.meta:
        ss.meta["floor_val"] = floor["val"]
        ss.save()
        ss.tracker.log_metrics(ss.parent_run_id, {f"floor_{k}": v for k, v in floor["val"].items()
                                                  if k.startswith("val_")})
    return floor


def _search_stage(ss: _Session, runner: StageRunner, outcome: SearchOutcome, failed_before: bool) -> bool:
    """The search stage, then the select phase's jobs saved; False when it was interrupted.
    A first wave that failed alike stops the search (:func:`_failed` raises)."""
    p, s = ss.p, ss.p.settings
    if failed_before:
        ss.note(f"search {s.search_id} had stopped: {ss.meta.pop('error', '?')}; its search stage starts over")
        ss.tracker.set_tags(ss.parent_run_id, records.Search(status="running", error="").to_tags())
    t0 = time.monotonic()
    outcome.resumed, interrupted = runner.search(ss.exp_dir, ss.resume and not failed_before, ss.storage, ss.note)
    outcome.search_s = time.monotonic() - t0
    if interrupted:
        return False
    if runner.failed:  # the first wave failed alike: no confirmation, the error in one line
        _failed(outcome, ss.tracker, ss.meta, ss.meta_path, ss.t_start, runner.failed)
    trials = summarize(ss.tracker, s.search_id)
    named = [(b.name, ss.ctx.recipe_for({"baseline": b.name})[0].to_dict()) for b in ss.ctx.baselines]
    ss.meta.update(stage="confirmation", seeds=ss.seeds, jobs=plan_jobs(trials, named, p.confirm_k, ss.seeds))
    ss.save()
    ss.resume = False
    return True


def _conclude(ss: _Session, outcome: SearchOutcome, confirmed) -> None:
    """The verdict's outcome: the trials, what is served (promoted into the store), the parent
    run's figures, and the state marked finished."""
    p, s = ss.p, ss.p.settings
    seeds = ss.meta["seeds"]
    trials = summarize(ss.tracker, s.search_id)
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
        resolved = resolved_values(p, seeds, ss.fp)
        settings = {k: resolved[k] for k in ("num_samples", "max_epochs", "image_size", "confirm_k",
                                             "confirm_seeds", "report_looks")}
        settings.update(seed=s.seed, data=s.data, report_seeds=outcome.verdict.seeds, race=s.race,
                        warm_start=[w.to_dict() for w in ss.warm])
        prov = provenance(backbone=s.backbone, dataset=s.dataset, budget=s.budget, verdict=outcome.verdict,
                          confirmation=outcome.confirmation, report=outcome.report, fingerprint=ss.fp,
                          search_id=s.search_id, parent_run_id=ss.parent_run_id, experiment=s.experiment,
                          space=resolved["space"], settings=settings)
        from ..store import RecipeStore, StoreUnavailable

        try:
            outcome.promotion = promote_served(RecipeStore(p.tracking_uri), backbone=s.backbone,
                                               dataset=s.dataset, budget=s.budget, verdict=outcome.verdict,
                                               confirmation=outcome.confirmation, report=outcome.report,
                                               provenance=prov,
                                               source_run_id=_winner_run(trials, outcome.verdict.served or ""),
                                               force=s.force)
        except StoreUnavailable as e:
            outcome.promotion_error = str(e)
    _clock(outcome, ss.meta, ss.t_start)
    _finish_parent(ss.tracker, outcome)
    ss.meta.update(status="finished", stage="finished",
                   updated=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    ss.save()
