"""The two Tune stages of a search, run by one :class:`StageRunner` with the same trainable
(``trial.run_trial``), resources and listeners (MLflow logger, progress view, checkpoint janitor).

* :meth:`StageRunner.search` -- the search stage: a Tuner with ``searcher.RecipeSearcher``
  (the ``--sampler``'s Optuna sampler from ``samplers.py``, TPE by default; the baselines
  first, each told at :func:`baseline_point` when it is a point of the space) and
  ``asha.BaselineSafeASHA`` on the validation objective; its study in Tune's state or in an
  Optuna RDB storage, continued by a resumed or another driver.
* :meth:`StageRunner.confirm` -- the confirmation stage: one grid trial per job
  (``confirm.plan_jobs``: recipe x fresh seed), no scheduler; a job an earlier search of the
  experiment finished is re-reported from that run (``reuse.py``), not trained again.

Both retry a trial lost to a system failure (its node, its worker) from its last checkpoint, up to
``--max-retries`` times (``failures.py``; recorded by ``retries.RetryRecorder``), and restore their
Tune experiment on resume; trials that MLflow already records as
completed are re-reported by the trainable instead of re-run (``TrialContext.finished_result``).
Each returns ``(restored, interrupted)``. The search stage stops early when its first wave of
trials all failed with the same error (``failfast.py``); :attr:`StageRunner.failed` says so.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from . import events
from .. import records
from ..baselines import BASELINE_KEY, JOB_KEY
from .janitor import CheckpointJanitor
from ..plan import Plan
from ..verdict.promote import summarize
from .retries import RetryRecorder
from .reuse import describe, reusable, reusable_baselines, sources
from ..study_storage import existing_study, study_name
from ..samplers import get_sampler
from ..space import SearchSpace
from ..state import CONFIRM_SUFFIX, storage_dir
from ..tracking import Tracker, point_key
from .trial_logger import TrialLogger

# Tune snapshots its experiment state every few seconds; after a SIGKILL the snapshot may name a
# checkpoint older than the trial's latest. Keeping the last 3 (weights are stripped from all but
# the latest once a trial ends, see janitor.py) lets --resume find it; with 1 a restored trial
# failed with "Could not recover from checkpoint as it does not exist on storage anymore".
KEEP_CHECKPOINTS = 3
OBJECTIVE = "objective"  # val kNN top-1, per epoch and in the final report (trial.py)


class StageRunner:
    """Runs the two Tune experiments of a search with the same trainable, resources and listeners."""

    def __init__(self, p: Plan, ctx, tracker: Tracker, parent_run_id: str, base: records.Trial, dataset, conc: int,
                 cpt: float, gpt: float, device: str, console, progress: bool, floor: dict):
        self.p, self.ctx, self.tracker, self.parent_run_id = p, ctx, tracker, parent_run_id
        self.base, self.dataset, self.conc, self.device = base, dataset, conc, device  # base: what every trial shares
        self.console, self.progress, self.floor = console, progress, floor
        self.resources = {"cpu": cpt, "gpu": gpt} if gpt > 0 else {"cpu": cpt}
        self.trainable = None
        self.failed: str | None = None  # the search stage stopped: its first wave failed alike (one line)
        self.warm: list[tuple[str, dict]] = []  # the warm start's (source, point), run first

    def _make_trainable(self, finished: tuple[dict, dict], replay: dict[str, dict] | None = None):
        """The trainable with the context shipped to the workers (the trials a crash finished
        already: re-reported, not re-run; the baselines an earlier search ran: replayed)."""
        from ray import tune

        from .trial import run_trial

        ctx = dataclasses.replace(self.ctx, extra={**self.ctx.extra, "finished": finished[0],
                                                   "finished_points": finished[1], "replay": replay or {}})
        self.trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), self.resources)

    def _fit(self, key: str, title: str, num: int, make_tuner, finished: tuple[dict, dict],
             reused: dict[str, str] | None = None, watch: list | None = None,
             replay: dict[str, dict] | None = None) -> tuple[bool, bool]:
        """Run one Tune experiment with the MLflow logger, progress view and janitor listening."""
        from .progress import ProgressView

        search_id = self.p.settings.search_id
        self._make_trainable(finished, replay)
        logger = TrialLogger(self.tracker, parent_run_id=self.parent_run_id, search_id=search_id,
                             ctx=self.ctx, base=self.base, dataset=self.dataset, reused=reused)
        view = ProgressView(title=title, num_samples=num, max_epochs=self.p.max_epochs,
                            max_concurrent=self.conc, ctx=self.ctx, console=self.console,
                            enabled=self.progress, floor=self.floor.get("val"),
                            log_path=storage_dir() / search_id / "progress.log",
                            max_retries=self.p.settings.max_retries)
        stage = "search" if key == search_id else key.removeprefix(search_id + "-")
        events.register(key, [logger, RetryRecorder(logger, stage=stage), view, CheckpointJanitor(),
                              *(watch or [])])
        events.INTERRUPTED.clear()
        try:
            tuner, restored = make_tuner()
            tuner.fit()
        finally:
            view.stop()
            events.unregister(key)
        interrupted = events.INTERRUPTED.is_set()
        if interrupted:
            logger.mark_interrupted(logger.trials)
        return restored, interrupted

    def _run_config(self, name: str, key: str, stop=None):
        from ray import tune

        return tune.RunConfig(name=name, storage_path=str(storage_dir()), verbose=0,
                              callbacks=[events.TuneBridge(key)], stop=stop,
                              checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
                              # a system failure (node lost, worker killed) is retried from the trial's
                              # last checkpoint; an application error never reaches Tune (failures.py)
                              failure_config=tune.FailureConfig(max_failures=self.p.settings.max_retries,
                                                                fail_fast=False))

    def search(self, exp_dir: Path, resume: bool, storage, note) -> tuple[bool, bool]:
        from ray import tune

        from .asha import BaselineSafeASHA
        from .failfast import FirstWave, StopOnFirstWave
        from .searcher import RecipeSearcher

        p, s = self.p, self.p.settings

        def make():
            if resume and tune.Tuner.can_restore(str(exp_dir)):
                return tune.Tuner.restore(str(exp_dir), trainable=self.trainable, resume_unfinished=True,
                                          resume_errored=False, restart_errored=False), True
            n_startup = min(10, max(3, p.num_samples // 4))
            baselines = [(b.name, baseline_point(p.space, self.ctx, b.name)) for b in self.ctx.baselines]
            for name, point in baselines:
                if point is None:
                    note(f"baseline {name} is not a point of the space: the sampler is not told its result")
            base_seed = s.seed if s.sampler_seed is None else s.sampler_seed
            num_samples, sampler_seed, warm = p.num_samples, base_seed, list(self.warm)
            # named for Optuna's tools (optuna-dashboard): the study, its objective, its trials (searcher.py)
            study_kwargs = dict(study_name=study_name(s.search_id), search_id=s.search_id, study_attrs={
                "search_id": s.search_id, "backbone": s.backbone, "mlflow_experiment": s.experiment,
                "mlflow_parent_run_id": self.parent_run_id, "objective": "val_knn_top1 (final val kNN top-1)"})
            if storage is not None:
                study_kwargs["storage"] = storage
                existing = existing_study(storage, study_name(s.search_id)) if resume else None
                if existing is not None:  # resumed on another driver: the study goes on
                    from optuna.trial import TrialState

                    done = len(existing.get_trials(deepcopy=False, states=(
                        TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))
                    if existing.trials:  # the baselines ran already (those outside the space untold)
                        done += sum(1 for _, point in baselines if point is None)
                        baselines, warm = [], []  # the warm points are in the shared study already
                    num_samples = max(1, p.num_samples - done)
                    sampler_seed = base_seed + done  # a fresh RNG stream: not the first driver's points again
                    note(f"Optuna study {study_name(s.search_id)}: {done} trials done, {num_samples} to go")
            sampler = get_sampler(s.sampler).build(sampler_seed, n_startup, constant_liar=self.conc > 1)
            searcher = RecipeSearcher(space=p.space.sampler_space(), metric=OBJECTIVE, mode="max",
                                      sampler=sampler, baselines=baselines, warm=warm,
                                      distributions=p.space.optuna_space, **study_kwargs)
            scheduler = (BaselineSafeASHA(time_attr="epoch", metric=OBJECTIVE, mode="max", max_t=p.max_epochs,
                                          grace_period=p.first_rung,
                                          reduction_factor=p.budget.reduction_factor, stop_last_trials=False,
                                          keep=self.ctx.warm)
                         if s.early_stopping else None)
            return tune.Tuner(
                self.trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=num_samples,
                                            max_concurrent_trials=self.conc, time_budget_s=s.time_budget,
                                            reuse_actors=True),
                run_config=self._run_config(s.search_id, s.search_id, StopOnFirstWave(s.search_id))), False

        how = f"{s.sampler}{'+ASHA' if s.early_stopping else ', no early stopping'}"
        title = (f"search {s.search_id}  ({s.budget}, {p.num_samples} trials, {p.max_epochs} epochs, {how}, "
                 f"{self.device}, {self.conc} at a time; objective val kNN top-1)")
        finished = _finished_trials(self.tracker, s.search_id, "search") if resume else ({}, {})
        replay = self._reusable_baselines(note) if s.reuse_confirmations else {}
        wave = FirstWave(min(self.conc, p.num_samples))
        out = self._fit(s.search_id, title, p.num_samples, make, finished, watch=[wave], replay=replay,
                        reused={k: v["run_id"] for k, v in replay.items()})
        self.failed = wave.line() if wave.error is not None else None
        return out

    def _reusable_baselines(self, note) -> dict[str, dict]:
        """The baseline trials an earlier search of the experiment ran with the same data, budget,
        recipe, seed and version (``reuse.reusable_baselines``), by their trial config's point."""
        s = self.p.settings
        points = {b.name: point_key({BASELINE_KEY: b.name}) for b in self.ctx.baselines}
        recipes = {point: self.ctx.recipe_for({BASELINE_KEY: name})[0].to_json(indent=None)
                   for name, point in points.items()}
        found = reusable_baselines(self.tracker, search_id=s.search_id, backbone=s.backbone,
                                   digest=self.base.fingerprint, version=self.base.version, recipes=recipes)
        if found:
            names = sorted(name for name, point in points.items() if point in found)
            note(f"search: {len(found)} of {len(recipes)} baselines reused from search {sources(found)} (same data, "
                 f"budget, recipe, seed and version: {', '.join(names)}; their epochs are reported again, so ASHA "
                 "and the sampler hear the same values); --no-reuse-confirmations trains them again")
            self.tracker.set_tags(self.parent_run_id, {records.reused_tag("baselines"):
                                                       f"{len(found)}/{len(recipes)} from {sources(found)}"})
        return found

    def confirm(self, exp_dir: Path, jobs: list[dict], resume: bool, note, what: str = "") -> tuple[bool, bool]:
        """One confirmation experiment (``exp_dir``'s name is its Tune name): the select phase's
        jobs, or one look of the report phase's (``what`` says which, for the notes and title)."""
        from ray import tune

        s = self.p.settings
        key = exp_dir.name

        def make():
            if resume and tune.Tuner.can_restore(str(exp_dir)):
                return tune.Tuner.restore(str(exp_dir), trainable=self.trainable, resume_unfinished=True,
                                          resume_errored=False, restart_errored=False), True
            return tune.Tuner(
                self.trainable, param_space={"job": tune.grid_search(jobs)},
                tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=self.conc, reuse_actors=True),
                run_config=self._run_config(key, key)), False

        names = sorted({j["name"] for j in jobs})
        what = what or "confirmation"
        reads = "the test split is read" if any(j.get("phase", "report") == "report" for j in jobs) else \
            "val only: the test split is not read"
        note(f"{what}: {', '.join(names)} x seeds {sorted({j['seed'] for j in jobs})} ({reads})")
        title = f"{what} {s.search_id}  ({len(jobs)} runs, {self.p.max_epochs} epochs, fresh seeds)"
        # always: a search continued from another driver re-confirms the same jobs by adoption
        finished = _finished_trials(self.tracker, s.search_id, "confirmation")
        reused = {}
        if s.reuse_confirmations:
            todo = [j for j in jobs if point_key({JOB_KEY: j}) not in finished[1]]
            found = reusable(self.tracker, search_id=s.search_id, backbone=s.backbone, jobs=todo,
                             digest=self.base.fingerprint, version=self.base.version)
            if found:
                note(describe(found, todo))
                tag = records.reused_tag("confirmations" if key == s.search_id + CONFIRM_SUFFIX else
                                         key.removeprefix(s.search_id + '-'))  # report-5
                self.tracker.set_tags(self.parent_run_id, {tag: f"{len(found)}/{len(jobs)} from {sources(found)}"})
                finished[1].update({k: v["metrics"] for k, v in found.items()})
                reused = {k: v["run_id"] for k, v in found.items()}
        return self._fit(key, title, len(jobs), make, finished, reused)


def baseline_point(space: SearchSpace, ctx, name: str) -> dict | None:
    """What baseline ``name`` runs with as a point of ``space`` (None when it is not one)."""
    recipe = ctx.recipe_for({"baseline": name})[0].to_dict()
    if space.outside(recipe):
        return None
    return space.values_in(recipe)


def _finished_trials(tracker: Tracker, search_id: str, stage: str) -> tuple[dict, dict]:
    """Final metrics of the trials of ``stage`` already completed in MLflow, by trial id and by point."""
    by_id, by_point = {}, {}
    for t in summarize(tracker, search_id):
        if t.stage == stage and t.status == "completed" and t.objective is not None:
            final = {k: v for k, v in t.metrics.items() if isinstance(v, float) and math.isfinite(v)}
            by_id[t.trial_id] = final
            if t.point:
                by_point[t.point] = final
    return by_id, by_point
