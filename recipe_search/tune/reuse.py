"""Confirmation runs that an earlier search already trained: found, not trained again.

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
"""

from __future__ import annotations

import math

from .. import records
from ..tracking import Tracker, point_key
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
    flt = records.filter(stage=records.Confirmation.STAGE, status="completed", fingerprint=digest,
                         backbone=backbone, version=version, run_status="FINISHED")
    out: dict[str, dict] = {}
    token = None
    while True:
        page = tracker.client.search_runs([tracker.experiment_id], filter_string=flt, max_results=1000,
                                          page_token=token, order_by=["attributes.start_time ASC"])
        for run in page:
            rec = records.Trial.read(run.data.tags)
            key = wanted.get(rec.recipe or "")
            if key is None or key in out or rec.search_id == search_id or rec.reused_from is not None:
                continue  # a reused run points at its twin: take the twin itself
            metrics = {k: v for k, v in run.data.metrics.items() if math.isfinite(v)}
            if all(m in metrics for m in needs[key]):
                out[key] = {"run_id": run.info.run_id, "search_id": rec.search_id, "metrics": metrics}
        token = page.token
        if not token:
            return out


def sources(found: dict[str, dict]) -> str:
    """The searches whose runs ``found`` reuses, comma-separated."""
    return ", ".join(sorted({v["search_id"] or "?" for v in found.values()}))


def describe(found: dict[str, dict], jobs: list[dict]) -> str:
    """One line for the console: which jobs are reused from which searches."""
    names = sorted({f"{j['name']} s{j['seed']}" for j in jobs if point_key({"job": j}) in found})
    return (f"confirmation: {len(found)} of {len(jobs)} runs reused from search {sources(found)} "
            f"(same data, budget, recipe, seed and version: {', '.join(names)}); "
            "--no-reuse-confirmations trains them again")
