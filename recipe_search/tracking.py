"""MLflow logging of searches: one parent run per search, one nested child run per trial.

:class:`Tracker` writes and finds the runs; the Tune side mirrors its trials into them through
:class:`recipe_search.tune.trial_logger.TrialLogger`.

Everything is written from the driver with an :class:`MlflowClient` built on the
search's explicit tracking URI (never the process-global ``mlflow`` state, and
not Ray's ``MLflowLoggerCallback``, which ignored ``tracking_uri`` -- ray issue
36257 -- and cannot nest runs). Only the driver writes, so a SQLite store has a
single writer.

Runs are found again by their tags (:mod:`recipe_search.records`), which makes every call
idempotent under ``--resume``: the parent is a :class:`records.Search` of the search id; a child
is a :class:`records.Trial` (or :class:`records.Confirmation`) of the search id and trial id (and
its parent run id). Per-epoch metrics are logged with ``step=epoch`` and
only for epochs beyond the last one logged, so a resumed trial that re-reports
an epoch does not duplicate it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable

from . import records
from .config import artifact_root_for, sqlite_path

EPOCH_KEYS = ("loss", "val_knn_top1", "lr", "images_per_sec", "epoch_time_s", "knn_time_s", "elapsed_s",
              "smoothing", "key_momentum", "distill_loss", "teacher_cosine")  # the last two: with a teacher
# search trials log the val_* metrics only; confirmation runs add the test_* ones (the final
# val_knn_top1 is the last epoch's, already logged at that step)
FINAL_KEYS = ("val_probe_top1", "train_probe_top1", "probe_l2", "probe_time_s",
              "test_probe_top1", "test_knn_top1", "train_time_s", "epochs_completed", "mean_images_per_sec",
              "duration_s")
FINAL_MARK = "epochs_completed"  # present once a trial's final report is logged
# a report run's per-image test correctness (trainer.per_image), one bit per test image: the paired image noise
CORRECT_ARTIFACT = "test_probe_correct.txt"
MAX_TAG = 5000


def point_key(config: dict) -> str:
    """A trial's sampled point as canonical JSON (:attr:`records.Trial.point`)."""
    return json.dumps(dict(config), sort_keys=True, default=str)


def artifact_text(client, run_id: str, path: str) -> str | None:
    """The text artifact ``path`` of run ``run_id``, or None when it is absent (an older or interrupted
    run) or unreadable; MLflow's download progress bar stays off."""
    import tempfile

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        with tempfile.TemporaryDirectory() as d:
            return Path(client.download_artifacts(run_id, path, d)).read_text(encoding="utf-8")
    except Exception:  # noqa: BLE001 - absent, unreadable
        return None


def finite(v: Any) -> bool:
    """A real, finite number (bools excluded): what MLflow can log as a metric."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Tracker:
    """Idempotent MLflow writes for one search (picklable: the client is rebuilt lazily)."""

    def __init__(self, tracking_uri: str, experiment: str):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._client = None
        self._experiment_id: str | None = None

    def __getstate__(self) -> dict:
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment,
                "_client": None, "_experiment_id": None}

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            db = sqlite_path(self.tracking_uri)
            if db is not None:
                db.parent.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            from mlflow.exceptions import MlflowException

            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is not None and exp.lifecycle_stage != "active":
                self.client.restore_experiment(exp.experiment_id)
            if exp is None:
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment, artifact_location=artifact_root_for(self.tracking_uri),
                        tags={records.TAG_KIND: records.SEARCHES_EXPERIMENT})
                except MlflowException:  # created concurrently
                    exp = self.client.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
                    self._experiment_id = exp.experiment_id
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    # -- finding runs ----------------------------------------------------------------
    def _find(self, filter_string: str):
        runs = self.client.search_runs([self.experiment_id], filter_string=filter_string,
                                       max_results=10, order_by=["attributes.start_time ASC"])
        return runs[0] if runs else None

    def find_parent(self, search_id: str):
        return self._find(records.filter(kind=records.SEARCH, search_id=search_id))

    def parent_run(self, search: records.Search, *, name: str, params: dict) -> str:
        """The search's parent run id, created on first use with ``search``'s tags (and set
        RUNNING again on resume)."""
        run = self.find_parent(search.search_id)
        if run is None:
            run = self.client.create_run(self.experiment_id, run_name=name, tags=_str(search.to_tags()))
            self.log_params(run.info.run_id, params)
        elif run.info.status != "RUNNING":
            self.client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id

    def trial_runs(self, search_id: str) -> list:
        """All child runs of a search (each trial once)."""
        flt = records.filter(kind=records.TRIAL, search_id=search_id)
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=flt, max_results=1000,
                                           page_token=token, order_by=["attributes.start_time ASC"])
            out.extend(page)
            token = page.token
            if not token:
                return out

    def child_run(self, parent_run_id: str, search_id: str, trial_id: str, *, name: str,
                  trial: records.Trial, known_trial_ids: Iterable[str] = ()) -> tuple[str, int]:
        """``(run_id, last_logged_epoch)`` of a trial's child run, created on first use.

        After a crash Tune may have lost a trial started after its last state snapshot;
        its restored searcher then suggests the same point again under a new trial id.
        Such an orphan run (same sampled point, trial id unknown to Tune) is adopted
        instead of creating a duplicate."""
        run = self._find(records.filter(kind=records.TRIAL, search_id=search_id, trial_id=trial_id))
        if run is None and trial.point is not None:
            known = set(known_trial_ids) | {trial_id}
            for cand in self.trial_runs(search_id):
                had = records.Trial.from_run(cand)
                if had.point == trial.point and had.trial_id not in known:
                    run = cand
                    self.set_tags(run.info.run_id, records.Trial(trial_id=trial_id, adopted_from=had.trial_id).to_tags())
                    break
        if run is None:
            trial = dataclasses.replace(trial, search_id=search_id, trial_id=trial_id, parent_run_id=parent_run_id)
            run = self.client.create_run(self.experiment_id, run_name=name, tags=_str(trial.to_tags()))
            return run.info.run_id, 0
        if run.info.status != "RUNNING":
            self.client.update_run(run.info.run_id, status="RUNNING")
        hist = self.client.get_metric_history(run.info.run_id, "val_knn_top1")
        return run.info.run_id, max((m.step for m in hist), default=0)

    # -- writing -----------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        have = self.client.get_run(run_id).data.params
        todo = [Param(k, _param_str(v)) for k, v in params.items() if k not in have]
        for i in range(0, len(todo), 100):
            self.client.log_batch(run_id, params=todo[i:i + 100])

    def log_metrics(self, run_id: str, metrics: dict, step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, int(step)) for k, v in metrics.items() if finite(v)]
        for i in range(0, len(ms), 500):
            self.client.log_batch(run_id, metrics=ms[i:i + 500])

    def set_tags(self, run_id: str, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in _str(tags).items()])

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def read_text(self, run_id: str, artifact_file: str) -> str | None:
        """A text artifact of the run; None when the run has none of that name (:func:`artifact_text`)."""
        return artifact_text(self.client, run_id, artifact_file)

    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None:
        self.client.log_text(run_id, json.dumps(obj, indent=2, default=_json_default), artifact_file)

    def log_file(self, run_id: str, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_dataset(self, run_id: str, dataset) -> None:
        """Log ``dataset`` (an ``mlflow.entities.Dataset``) as the run's training input (the
        Dataset column of the MLflow UI), once."""
        from mlflow.entities import DatasetInput, InputTag

        have = self.client.get_run(run_id).inputs
        if any(d.dataset.digest == dataset.digest for d in (have.dataset_inputs if have else [])):
            return
        self.client.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "train")])])

    def terminate(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def curves(self, run_id: str, keys: Iterable[str] = EPOCH_KEYS) -> dict[str, list[tuple[int, float]]]:
        """Per-epoch series of a run, each ``[(epoch, value), ...]`` (last value per epoch)."""
        out = {}
        for key in keys:
            per_step: dict[int, float] = {}
            for m in self.client.get_metric_history(run_id, key):
                per_step[m.step] = m.value
            if per_step:
                out[key] = sorted(per_step.items())
        return out

    def log_curves(self, run_id: str, curves: dict[str, list[tuple[int, float]]] | None = None) -> dict:
        """Log the per-epoch series as ``curves.json`` and ``curves.csv`` (the MLflow UI also
        plots them from the step-indexed metrics); ``curves`` saves reading them back."""
        curves = self.curves(run_id) if curves is None else curves
        self.log_dict(run_id, {k: [{"epoch": s, "value": v} for s, v in pts] for k, pts in curves.items()},
                      "curves.json")
        keys = list(curves)
        epochs = sorted({s for pts in curves.values() for s, _ in pts})
        table = {k: dict(pts) for k, pts in curves.items()}
        lines = [",".join(["epoch", *keys])]
        lines += [",".join([str(e), *(repr(table[k][e]) if e in table[k] else "" for k in keys)]) for e in epochs]
        self.log_text(run_id, "\n".join(lines) + "\n", "curves.csv")
        return curves


def _param_str(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (bool, list, dict)) or v is None else str(v)
    return s[:6000]


def _str(tags: dict) -> dict[str, str]:
    out = {}
    for k, v in tags.items():
        if v is None:
            continue
        s = v if isinstance(v, str) else json.dumps(v, default=_json_default)
        out[k] = s if len(s) <= MAX_TAG else s[: MAX_TAG - 20] + " ...[truncated]"
    return out


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, Path):
        return str(o)
    return str(o)
