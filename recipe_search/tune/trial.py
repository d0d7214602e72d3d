"""The Ray Tune trainable: one trial = one proxy pretraining with ``trainer.train``.

A trial's config is one of

* ``{"baseline": name}`` -- a reference recipe (``baselines.py``),
* a point sampled from the space (recipe fields),
* ``{"job": {"name", "role", "seed", "recipe"}}`` -- a confirmation run: a finalist or
  baseline recipe trained again from scratch with a fresh seed (init, augmentation,
  batch order; the proxy subset stays the search's).

Every epoch the trainer's callback reports to Tune (``objective`` = val kNN top-1, for
ASHA and Optuna's intermediate values) with the epoch checkpoint; after training a
final report (``final=1``) carries the same validation objective at the last epoch,
so a finished and a stopped trial are ranked on one quantity. Search trials never
read the test split; only confirmation runs evaluate it (``test_probe_top1``,
``test_knn_top1``). A diverged run (NaN loss) ends with a final report flagged
``diverged=1`` and objective 0 (the sampler learns it). Any other application error
(bad recipe, data, CUDA out of memory: whatever composing the recipe or ``trainer.train``
raises) ends with a failure report (``failures.failure_report``, ``failed=1``): recorded as
the trial's failure, never retried, and the search goes on. What escapes the trainable is a
system failure (its node lost, its worker killed, Tune's storage unreachable:
``failures.SystemFailure``); Tune retries it (``--max-retries``) and the retried trial
continues from its last reported checkpoint, on any node.

(The tests inject faults into trials from outside: ``tests/faults/``.)
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.data import DataSpec
from trainer.per_image import KEY as CORRECT_KEY
from trainer.recipe import Recipe

from ..baselines import JOB_KEY, Baseline, baseline_name
from ..compose import compose
from .failures import SystemFailure, failure_report, system_calls
from ..samplers import DEFAULT_LABEL
from ..space import SearchSpace
from ..tracking import point_key


def job_recipe(job: dict) -> Recipe:
    """A confirmation job's recipe (JSON or dict) with the job's seed."""
    recipe = job["recipe"]
    recipe = Recipe.from_json(recipe) if isinstance(recipe, str) else Recipe.from_dict(recipe)
    return recipe.replace(seed=int(job["seed"]))


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its sampled point (shipped once via the object store)."""

    backbone: str
    space: SearchSpace
    budget_fixed: dict
    image_size: int
    max_epochs: int
    seed: int
    data: DataSpec
    device: str = "cpu"
    threads: int = 1  # torch intra-op threads of a CPU trial (its Ray CPUs)
    baselines: tuple[Baseline, ...] = ()
    checkpoint_every: int = 1  # epochs between the checkpoints a trial reports (0: none mid-trial)
    sampler: str = DEFAULT_LABEL  # its label (samplers.py): names the sampled trials in MLflow and the progress view
    warm: dict = field(default_factory=dict)  # point_key of a warm-start point -> its source (search/warm_start.py)
    extra: dict = field(default_factory=dict)

    def baseline_for(self, config: dict) -> Baseline | None:
        """The baseline a trial runs (search: ``{"baseline": name}``; confirmation: its job)."""
        name = baseline_name(config)
        for b in self.baselines:
            if b.name == name:
                return b
        return None

    def finished_result(self, trial_id: str, config: dict) -> dict | None:
        """Final metrics of a trial that finished before a crash (``--resume``), by its id or,
        when Tune lost the trial and re-suggested its point, by the point."""
        finished = self.extra.get("finished") or {}
        if trial_id in finished:
            return finished[trial_id]
        return (self.extra.get("finished_points") or {}).get(point_key(config))

    def replay_for(self, config: dict) -> dict | None:
        """The twin run an earlier search finished for this trial (a search-stage baseline with the
        same recipe and seed: ``reuse.reusable_baselines``), whose reports the trial repeats."""
        return (self.extra.get("replay") or {}).get(point_key(config))

    def recipe_for(self, config: dict) -> tuple[Recipe, list[str], Baseline | None]:
        """The recipe of a trial: a confirmation job's (with its seed), a baseline's own
        values, else the sampled point."""
        base = self.baseline_for(config)
        job = (config or {}).get(JOB_KEY)
        if job is not None:
            return job_recipe(job), [], base
        recipe, notes = self.compose(dict(base.values) if base is not None else dict(config))
        return recipe, notes, base

    def compose(self, values: dict) -> tuple[Recipe, list[str]]:
        """``values`` (a sampled point or a baseline's values) as this search's recipe: the space's
        fixed values for its method, the budget's, backbone, image size, epochs and seed."""
        return compose(values, backbone=self.backbone, image_size=self.image_size, epochs=self.max_epochs,
                       seed=self.seed, fixed=self.space.fixed_for(values), budget_fixed=self.budget_fixed)


def _numeric(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _work_dir(trial_id: str) -> Path:
    """Where the trainer writes: under the trial's working dir when Tune changed into it."""
    if os.environ.get("RAY_CHDIR_TO_TRIAL_DIR", "1") != "0":
        return Path.cwd() / f"train-{trial_id}"
    return Path(tempfile.gettempdir()) / "recipe-search-trials" / trial_id


def run_trial(config: dict, ctx: TrialContext) -> None:
    """Function trainable (use with ``tune.with_parameters(run_trial, ctx=...)``): an
    application error is reported as the trial's failure; a system failure escapes (retried)."""
    from ray import tune

    try:
        _run(config, ctx, tune.get_context().get_trial_id())
    except SystemFailure:
        raise
    except Exception as e:  # noqa: BLE001 - the recipe's own failure: a result, never retried
        with system_calls():
            tune.report(failure_report(e))


def _run(config: dict, ctx: TrialContext, trial_id: str) -> None:
    from ray import tune

    recipe = ctx.recipe_for(config)[0]
    done = ctx.finished_result(trial_id, config)
    if done is not None:  # finished before a crash: report its result again, train nothing
        with system_calls():
            tune.report(_final_report(done, ctx, 0.0))
        return
    twin = ctx.replay_for(config)
    if twin is not None:  # an earlier search ran this very trial (reuse.reusable_baselines)
        _replay(twin, ctx)
        return
    if ctx.device == "cpu":
        import torch

        torch.set_num_threads(ctx.threads)
    out_dir = _work_dir(trial_id)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    try:
        from ..verdict.confirm import REPORT, job_phase

        job = config.get(JOB_KEY)  # only the report phase reads the test split
        _train_and_report(ctx, recipe, out_dir, confirm=job is not None and job_phase(job) == REPORT,
                          monitor="every" if job is None else "last")
    finally:  # every reported checkpoint is already persisted by Tune
        shutil.rmtree(out_dir, ignore_errors=True)


def _replay(twin: dict, ctx: TrialContext) -> None:
    """Report an earlier search's run of the same trial again, training nothing: each epoch as the
    twin reported it (``objective`` = its val kNN, as :func:`_train_and_report` reports it), then
    its final result. ASHA places the trial in its rungs, and the sampler hears it, as if it had
    trained; the MLflow logger copies the twin's curves and tags the run with where they came from."""
    from ray import tune

    for epoch in twin["epochs"]:
        metrics = {**epoch, "objective": epoch.get("val_knn_top1", 0.0), "trial_elapsed_s": 0.0}
        with system_calls():
            tune.report(metrics)
    with system_calls():
        tune.report(_final_report(twin["metrics"], ctx, 0.0))


def _train_and_report(ctx: TrialContext, recipe: Recipe, out_dir: Path, confirm: bool = False,
                      monitor: str = "every") -> None:
    """Train ``recipe``, reporting each epoch to Tune. ``confirm``: a report-phase run (it reads the test
    split). ``monitor="last"``: a confirmation run, whose only use of val is its final figure, runs the kNN
    monitor after its last epoch only (the same weights and final metrics; a search trial's ASHA and progress
    view need it every epoch)."""
    from ray import tune

    from trainer.engine import train

    with system_calls():
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:  # restored trial: continue from the last *reported* epoch
            checkpoint.to_directory(str(out_dir))
            done = _finished_metrics(out_dir)
            if done is not None:  # it had finished: report the same final result, train nothing
                tune.report(_final_report(done, ctx, 0.0))
                return

    t0 = time.perf_counter()

    def on_epoch(report: dict[str, Any]) -> None:
        metrics = _numeric(report)
        if "val_knn_top1" in metrics or monitor == "every":  # an epoch without the monitor reports no objective
            metrics["objective"] = metrics.get("val_knn_top1", 0.0)
        metrics["trial_elapsed_s"] = time.perf_counter() - t0
        epoch = int(report.get("epoch", 0))
        if not ctx.checkpoint_every or epoch % ctx.checkpoint_every:  # 0: only the final report's
            with system_calls():
                tune.report(metrics)
            return
        with _staged(out_dir, EPOCH_FILES) as stage, system_calls():
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(stage)))

    result = train(recipe, ctx.data, out_dir=str(out_dir), device=ctx.device, on_epoch=on_epoch,
                   resume=True, data_seed=ctx.seed, evaluate_test=confirm, monitor=monitor)
    if result.status == "diverged":  # a result, not an error: the sampler ranks it last
        with system_calls():
            tune.report({**_numeric(result.metrics), "objective": 0.0, "diverged": 1.0, "final": 1.0,
                         "epoch": float(result.metrics.get("epochs_completed", 0)),
                         "error": f"diverged: {result.error or 'non-finite loss'}"})
        return
    if result.status != "completed":
        raise RuntimeError(f"training ended with status {result.status}: {result.error}")
    # the final report carries the finished run (metrics.json, no weights) as its checkpoint,
    # so a restore after this point reports it again instead of re-running anything
    with _staged(out_dir, FINAL_FILES) as stage, system_calls():
        tune.report(_final_report(result.metrics, ctx, time.perf_counter() - t0),
                    checkpoint=tune.Checkpoint.from_directory(str(stage)))


# What a reported checkpoint holds. Tune copies it to its storage (shared by all nodes on a
# cluster) and keeps each trial's latest: an epoch checkpoint is what resuming needs (the
# trainer state, ~90 MB for MobileNetV3-L with a 2048-d head), a finished trial keeps only
# its metrics (never the weights: ~105 MB per trial otherwise).
EPOCH_FILES = ("checkpoint.pt", "history.json", "recipe.json")
FINAL_FILES = ("metrics.json", "history.json", "recipe.json")


@contextlib.contextmanager
def _staged(out_dir: Path, names: tuple[str, ...]):
    """A directory beside ``out_dir`` with hard links to ``names`` (copies across devices);
    removed once Tune has persisted it."""
    stage = out_dir.with_name(out_dir.name + "-report")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        for name in names:
            src = out_dir / name
            if src.exists():
                try:
                    os.link(src, stage / name)
                except OSError:
                    shutil.copy2(src, stage / name)
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _finished_metrics(out_dir: Path) -> dict | None:
    import json

    path = out_dir / "metrics.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("status") == "completed" and "val_knn_top1" in data else None


def _final_report(metrics: dict, ctx: TrialContext, wall_s: float) -> dict:
    final = _numeric(metrics)
    if "images_per_sec" in final:  # the run's mean; per-epoch values keep the plain name
        mean = final.pop("images_per_sec")
        final.setdefault("mean_images_per_sec", mean)
    final.pop("knn_time_s", None)
    final.update(objective=final.get("val_knn_top1", 0.0), final=1.0,
                 epoch=float(metrics.get("epochs_completed", ctx.max_epochs)), trial_wall_s=wall_s)
    if isinstance(metrics.get(CORRECT_KEY), str):  # a report run: which test images its probe got right
        final[CORRECT_KEY] = metrics[CORRECT_KEY]
    return final
