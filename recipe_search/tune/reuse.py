"""Runs that an earlier search already trained: found, not trained again (confirmation runs, and
the search stage's baseline trials: :func:`reusable_baselines`).

A confirmation job is a pure function of its recipe (seed included), the proxy data, the
budget's shape and the evaluation protocol -- all of which the search fingerprint
(``fingerprint.py``: data digest, sizes, epochs, ``EVALUATION``) and the recipe JSON pin
down -- and of the trainer's code, pinned by the recipe-search version. Two searches on the
same backbone, data and budget with the same seed confirm both baselines on the same fresh
seeds, so the second would spend about half its confirmation stage re-training them. With
reuse on (the default; ``--no-reuse-confirmations`` turns it off) a job whose twin finished
in an earlier search of the same MLflow experiment is re-reported from that run's metrics:
the new child run gets the twin's final metrics and per-epoch curves and the tag
:attr:`records.Trial.reused_from` (the twin's run id), so the MLflow UI and the report say which figures
were measured once and counted in two searches.

A search-stage baseline (the same recipe and seed in every search of a backbone, data and budget
with the same ``--seed``) is found the same way and replayed: the trial reports the twin's epochs
in order and then its final result, training nothing, so ASHA's rungs and the sampler hear what
they would have heard; the same flag turns it off.
"""

from __future__ import annotations

import math

from .. import records
from ..tracking import FINAL_MARK, Tracker, point_key
from ..verdict.confirm import SELECT, job_phase
from .trial import job_recipe


def reusable(tracker: Tracker, *, search_id: str, backbone: str, digest: str, version: str,
             jobs: list[dict]) -> dict[str, dict]:
    """``{point_key({"job": job}): {"run_id", "search_id", "metrics"}}`` for each of ``jobs``
    that another search of the experiment finished with the same backbone, fingerprint
    ``digest``, recipe-search ``version``, recipe and seed (the oldest such run)."""
    # keyed by the recipe JSON with the job's seed, as the recipe tag stores it
    wanted = {job_recipe(j).to_json(indent=None): point_key({"job": j}) for j in jobs}
    # a select job needs the val metric only; a report job also the test one
    needs = {point_key({"job": j}): ("val_knn_top1",) if job_phase(j) == SELECT else
             ("val_knn_top1", "test_probe_top1") for j in jobs}
    out: dict[str, dict] = {}
    for run, rec in _earlier_runs(tracker, records.Confirmation.STAGE, search_id=search_id, backbone=backbone,
                                  digest=digest, version=version):
        key = wanted.get(rec.recipe or "")
        if key is None or key in out:
            continue
        metrics = {k: v for k, v in run.data.metrics.items() if math.isfinite(v)}
        if all(m in metrics for m in needs[key]):
            out[key] = {"run_id": run.info.run_id, "search_id": rec.search_id, "metrics": metrics}
    return out


def _earlier_runs(tracker: Tracker, stage: str, *, search_id: str, backbone: str, digest: str, version: str):
    """``(run, its records.Trial)`` of each completed ``stage`` run of the experiment with this backbone,
    fingerprint ``digest`` and ``version``, oldest first, from other searches than ``search_id``; a
    reused run is left out (it points at its twin: the twin itself is taken)."""
    flt = records.filter(stage=stage, status="completed", fingerprint=digest, backbone=backbone, version=version,
                         run_status="FINISHED")
    token = None
    while True:
        page = tracker.client.search_runs([tracker.experiment_id], filter_string=flt, max_results=1000,
                                          page_token=token, order_by=["attributes.start_time ASC"])
        for run in page:
            rec = records.Trial.read(run.data.tags)
            if rec.search_id != search_id and rec.reused_from is None:
                yield run, rec
        token = page.token
        if not token:
            return


def reusable_baselines(tracker: Tracker, *, search_id: str, backbone: str, digest: str, version: str,
                       recipes: dict[str, str]) -> dict[str, dict]:
    """The search stage's twin of :func:`reusable`: ``{point: {"run_id", "search_id", "metrics",
    "epochs"}}`` for each baseline trial of ``recipes`` (``{point_key(config): recipe JSON}``, the
    search's seed in it) that another search of the experiment ran to its end with the same backbone,
    fingerprint ``digest`` and ``version`` (the oldest such run). ``epochs`` is the twin's per-epoch
    reports (``[{"epoch": n, "val_knn_top1": ..., ...}]``, :data:`tracking.EPOCH_KEYS`), which the trial
    reports again in order, so that ASHA's rungs and the sampler hear the values the twin reported."""
    wanted = {recipe: point for point, recipe in recipes.items()}
    out: dict[str, dict] = {}
    for run, rec in _earlier_runs(tracker, records.Trial.STAGE, search_id=search_id, backbone=backbone,
                                  digest=digest, version=version):
        point = wanted.get(rec.recipe or "")
        if point is None or point in out or rec.baseline is None:
            continue
        metrics = {k: v for k, v in run.data.metrics.items() if math.isfinite(v)}
        epochs = _epochs(tracker.curves(run.info.run_id))
        n = metrics.get(FINAL_MARK)
        if n is None or "val_knn_top1" not in metrics or [e["epoch"] for e in epochs] != list(range(1, int(n) + 1)):
            continue  # an interrupted or partly logged twin: train it again
        out[point] = {"run_id": run.info.run_id, "search_id": rec.search_id, "metrics": metrics, "epochs": epochs}
    return out


def _epochs(curves: dict[str, list[tuple[int, float]]]) -> list[dict]:
    """Per-epoch series (``{key: [(epoch, value)]}``) as the reports they came from, in epoch order."""
    by_step: dict[int, dict] = {}
    for key, points in curves.items():
        for step, value in points:
            by_step.setdefault(int(step), {"epoch": float(step)})[key] = value
    return [by_step[s] for s in sorted(by_step)]


def sources(found: dict[str, dict]) -> str:
    """The searches whose runs ``found`` reuses, comma-separated."""
    return ", ".join(sorted({v["search_id"] or "?" for v in found.values()}))


def describe(found: dict[str, dict], jobs: list[dict]) -> str:
    """One line for the console: which jobs are reused from which searches."""
    names = sorted({f"{j['name']} s{j['seed']}" for j in jobs if point_key({"job": j}) in found})
    return (f"confirmation: {len(found)} of {len(jobs)} runs reused from search {sources(found)} "
            f"(same data, budget, recipe, seed and version: {', '.join(names)}); "
            "--no-reuse-confirmations trains them again")
