"""The Tune side of MLflow logging: each Tune trial mirrored into a nested child run of its search.

:class:`TrialLogger` is a listener of :mod:`recipe_search.tune.events`: a run per trial (found again
by its tags under ``--resume``), per-epoch metrics logged once per epoch, the final report and
artifacts when a trial ends, its error when it fails. It writes through the search's
:class:`recipe_search.tracking.Tracker`.
"""

from __future__ import annotations

import dataclasses

from trainer.per_image import KEY as CORRECT_KEY

from .. import records
from ..baselines import JOB_KEY
from ..tracking import CORRECT_ARTIFACT, EPOCH_KEYS, FINAL_KEYS, FINAL_MARK, Tracker, finite, point_key


class TrialLogger:
    """Listener (see ``events.py``) that mirrors Tune trials into nested MLflow runs."""

    def __init__(self, tracker: Tracker, *, parent_run_id: str, search_id: str, ctx,
                 base: records.Trial | None = None, dataset=None, reused: dict[str, str] | None = None):
        self.tracker = tracker
        self.dataset = dataset  # mlflow.entities.Dataset of the proxy, logged on every run
        self.parent_run_id = parent_run_id
        self.search_id = search_id
        self.ctx = ctx  # trial.TrialContext: recomposes each trial's recipe
        self.base = base or records.Trial()  # the tags every trial shares with its search
        self.runs: dict[str, str] = {}
        self.last_step: dict[str, int] = {}
        self.trials: list = []  # Tune's trial objects, as of the last event
        # per-epoch series of the trials whose every epoch this logger saw (no read-back at the end)
        self.series: dict[str, dict[str, dict[int, float]]] = {}
        self.replayed: set[str] = set()  # trials that re-reported a result logged before a crash
        self.reused = dict(reused or {})  # point -> run id of an earlier search's twin (reuse.py)

    # -- helpers ------------------------------------------------------------------------
    def _recipe(self, trial):
        from trainer.errors import TrainerError

        try:
            recipe, notes, base = self.ctx.recipe_for(trial.config)
            return recipe, notes, base, None
        except TrainerError as e:
            return None, [], self.ctx.baseline_for(trial.config), str(e)

    def run_for(self, trial) -> str:
        run_id = self.runs.get(trial.trial_id)
        if run_id is not None:
            return run_id
        recipe, notes, base, error = self._recipe(trial)
        job = (trial.config or {}).get(JOB_KEY)
        warm = None if base is not None or job is not None else self.ctx.warm.get(point_key(trial.config or {}))
        sampler = "warm" if warm else self.ctx.sampler
        label = f"baseline-{base.name}" if base is not None else sampler
        if warm:
            notes = [*notes, f"warm start from {warm}"]
        if job is not None:
            label = f"confirm-{job['name']}-s{job['seed']}"
        rec = dataclasses.replace(
            self.base, stage=records.Trial.STAGE, baseline=base.name if base is not None else None,
            seed=recipe.seed if recipe is not None else None, status="running", notes="; ".join(notes) or None,
            sampler=sampler if base is None and job is None else None,
            point=point_key(trial.config), recipe=recipe.to_json(indent=None) if recipe is not None else None)
        if job is not None:
            rec = rec.confirmation(job=job["name"], phase=job.get("phase", "report"))
        run_id, last = self.tracker.child_run(self.parent_run_id, self.search_id, trial.trial_id,
                                              name=f"{label}-{trial.trial_id}", trial=rec,
                                              known_trial_ids=[t.trial_id for t in self.trials])
        if last == 0:  # fresh (or never reported): log the recipe as params
            self.tracker.log_params(run_id, recipe.to_dict() if recipe is not None else dict(trial.config))
            if self.dataset is not None:
                self.tracker.log_dataset(run_id, self.dataset)
            self.series[trial.trial_id] = {}
            twin = self.reused.get(rec.point)
            if twin is not None:  # measured once by an earlier search: its curves, and where they came from
                last = self._copy_curves(trial.trial_id, run_id, twin)
        else:
            self.tracker.set_tags(run_id, records.Trial(status="running").to_tags())
        self.runs[trial.trial_id] = run_id
        self.last_step[trial.trial_id] = last
        return run_id

    def _copy_curves(self, trial_id: str, run_id: str, twin: str) -> int:
        """Log the per-epoch series of run ``twin`` on ``run_id``; the last epoch copied."""
        curves = self.tracker.curves(twin)
        by_step: dict[int, dict[str, float]] = {}
        for key, pts in curves.items():
            for step, value in pts:
                by_step.setdefault(step, {})[key] = value
        for step in sorted(by_step):
            self.tracker.log_metrics(run_id, by_step[step], step=step)
        self.series[trial_id] = {k: dict(pts) for k, pts in curves.items()}
        correct = self.tracker.read_text(twin, CORRECT_ARTIFACT)
        if correct is not None:  # a reused report run: the twin's per-image correctness too
            self.tracker.log_text(run_id, correct, CORRECT_ARTIFACT)
        self.tracker.set_tags(run_id, records.Trial(reused_from=twin).to_tags())
        return max(by_step, default=0)

    def _artifacts(self, run_id: str, trial) -> None:
        recipe, notes, base, error = self._recipe(trial)
        if recipe is not None:
            self.tracker.log_text(run_id, recipe.to_json(), "recipe.json")
        series = self.series.pop(trial.trial_id, None)
        self.tracker.log_curves(run_id, None if series is None else
                                {k: sorted(v.items()) for k, v in series.items() if v})

    # -- events -------------------------------------------------------------------------
    def on_step(self, trials) -> None:
        self.trials = list(trials)

    def on_trial_start(self, trial, trials) -> None:
        self.trials = list(trials)
        self.run_for(trial)

    def on_trial_result(self, trial, result, trials) -> None:
        run_id = self.run_for(trial)
        step = int(result.get("epoch") or result.get("training_iteration") or 0)
        if result.get("failed"):  # an application error: logged when the trial ends (on_trial_error)
            return
        if result.get("final"):
            have = self.tracker.client.get_run(run_id).data.metrics
            if FINAL_MARK in have:  # re-reported after a resume: already logged
                self.replayed.add(trial.trial_id)
                return
            final = {k: result[k] for k in FINAL_KEYS if k in result}
            final["trial_time_s"] = result.get("trial_wall_s")
            if isinstance(result.get(CORRECT_KEY), str):  # a report run: which test images its probe got right
                self.tracker.log_text(run_id, result[CORRECT_KEY], CORRECT_ARTIFACT)  # before FINAL_MARK is logged
            self.tracker.log_metrics(run_id, final, step=step)
            return
        if step <= self.last_step.get(trial.trial_id, 0):
            return  # an epoch re-reported after a resume
        metrics = {k: result[k] for k in EPOCH_KEYS if k in result}
        metrics["trial_time_s"] = result.get("trial_elapsed_s")
        self.tracker.log_metrics(run_id, metrics, step=step)
        series = self.series.get(trial.trial_id)
        if series is not None:
            for k in EPOCH_KEYS:
                if finite(metrics.get(k)):
                    series.setdefault(k, {})[step] = float(metrics[k])
        self.last_step[trial.trial_id] = step

    def on_trial_complete(self, trial, trials) -> None:
        run_id = self.run_for(trial)
        result = trial.last_result or {}
        status = "completed" if result.get("final") else "pruned"
        tags = records.Trial(status=status).to_tags()
        if result.get("diverged"):  # the NaN guard ended it: a result the sampler ranks last
            status = "diverged"
            tags = records.Trial(status=status, error=str(result.get("error") or "diverged")).to_tags()
        end = "FAILED" if status == "diverged" else "FINISHED"
        if trial.trial_id in self.replayed:
            self.tracker.set_tags(run_id, tags)
            self.tracker.terminate(run_id, end)
            return
        self.tracker.log_metrics(run_id, {"duration_s": result.get("time_total_s")},
                                 step=int(result.get("epoch") or 0))
        self.tracker.set_tags(run_id, tags)
        self._artifacts(run_id, trial)
        self.tracker.terminate(run_id, end)

    def on_trial_error(self, trial, trials) -> None:
        from .events import trial_error

        run_id = self.run_for(trial)
        kind, message, text = trial_error(trial)
        recipe, notes, base, error = self._recipe(trial)
        if error:  # the sampled point made no valid recipe
            kind, message = "failed", f"RecipeError: {error}"
        result = trial.last_result or {}
        if result.get("time_total_s") is not None:
            self.tracker.log_metrics(run_id, {"duration_s": result.get("time_total_s")},
                                     step=int(result.get("epoch") or 0))
        self.tracker.set_tags(run_id, records.Trial(status=kind, error=message).to_tags())
        if text:
            self.tracker.log_text(run_id, text, "error.txt")
        self._artifacts(run_id, trial)
        self.tracker.terminate(run_id, "FAILED")

    def mark_interrupted(self, trials) -> None:
        """Ctrl-C: trials still running are KILLED (``--resume`` sets them RUNNING again)."""
        for trial in trials:
            if trial.status in ("RUNNING", "PENDING", "PAUSED") and trial.trial_id in self.runs:
                run_id = self.runs[trial.trial_id]
                self.tracker.set_tags(run_id, records.Trial(status="interrupted").to_tags())
                self.tracker.terminate(run_id, "KILLED")
