"""A search's report: one self-contained HTML page (plots embedded as base64 PNG) plus the PNGs.

Everything is read back from MLflow, the one record every search leaves (the parent run's tags,
params, metrics and artifacts ``verdict.json``, ``settings.json``, ``space.yaml``; the child trial
runs with their per-epoch ``val_knn_top1``), and from the recipe store. So the same page is built
at the end of a search (:func:`log_report`, logged as the artifacts ``report/`` of the parent run),
by ``recipe-search report SEARCH_ID|BACKBONE`` (:func:`build_report`) and, when a search predates
reports, by the API (:func:`report_page`).

* :func:`find_search` -- a search id, or a backbone (its newest finished search), -> parent run;
* :func:`collect` -- the :class:`SearchRecord` of a parent run;
* :func:`render` -- the figures (``report_plots``) and the page (``report_html``) -> :class:`Report`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SearchError
from ..verdict.promote import TrialSummary, summarize
from ..samplers import DEFAULT as DEFAULT_SAMPLER
from .. import records
from ..tracking import Tracker, artifact_text

ARTIFACT_DIR = "report"  # the parent run's artifact folder of the report
PAGE = "report.html"
OBJECTIVE = "val_knn_top1"
_SAFE = re.compile(r"^[\w.\-:/]+$")


def how(sampler: str, early_stopping: Any) -> str:
    """``tpe`` / ``random, no early stopping``: the parent run's params ``sampler`` and
    ``early_stopping`` (absent in searches from before them: TPE with ASHA)."""
    stops = str(early_stopping).strip().lower() not in ("false", "0", "no")
    return f"{sampler or DEFAULT_SAMPLER}{'' if stops else ', no early stopping'}"


class ReportError(SearchError):
    """No such search, or its record cannot make a report (one line for the CLI)."""


@dataclass
class SearchRecord:
    """What a report shows of one search, as read from MLflow and the recipe store."""

    tracking_uri: str
    experiment: str
    parent_run_id: str
    search_id: str
    backbone: str
    tags: dict
    params: dict
    metrics: dict
    settings: dict
    verdict: dict | None
    space: Any  # space.SearchSpace | None
    trials: list[TrialSummary]
    curves: dict[str, list[tuple[int, float]]]  # run id -> [(epoch, val_knn_top1)]
    start_time: int | None = None
    promoted: Any = None  # store.PromotedRecipe promoted from this search (still current)
    current: Any = None  # the store's current recipe for the same key when it came from another search
    store_note: str | None = None  # why the store could not be read
    comparison: dict | None = None  # {"search_id", "sampler", "early_stopping", "trials", "curves"}
    notes: list[str] = field(default_factory=list)

    @property
    def search(self) -> records.Search:
        """The parent run's tags, read."""
        return records.Search.from_tags(self.tags)

    @property
    def sampler(self) -> str:
        return str(self.params.get("sampler") or self.settings.get("sampler") or DEFAULT_SAMPLER)

    @property
    def how(self) -> str:
        """How it searched, e.g. ``tpe`` or ``random, no early stopping``."""
        return how(self.sampler, self.params.get("early_stopping"))

    @property
    def search_trials(self) -> list[TrialSummary]:
        return [t for t in self.trials if t.stage != "confirmation"]


@dataclass
class Report:
    search_id: str
    html: str
    images: dict[str, bytes]  # file name -> PNG
    record: SearchRecord
    seconds: float = 0.0

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Write ``report.html`` and the PNGs into ``out_dir``; returns the page's path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, png in self.images.items():
            (out / name).write_bytes(png)
        page = out / PAGE
        page.write_text(self.html, encoding="utf-8")
        return page


# --------------------------------------------------------------------------- finding a search


def _client(tracking_uri: str):
    from ..store import RecipeStore

    return RecipeStore(tracking_uri, create=False).client  # a missing store: StoreUnavailable (one line)


def find_search(tracking_uri: str, target: str, experiment: str = "recipe-search"):
    """The parent run of search ``target``, or of the newest search of backbone ``target``
    (the newest finished one when there is one)."""
    from ..study_storage import redact_url

    if not _SAFE.match(target or ""):
        raise ReportError(f"{target!r} is neither a search id nor a backbone name")
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    where = f"experiment {experiment!r} of {redact_url(tracking_uri)}"
    if exp is None:
        raise ReportError(f"no {where}: run a search first (recipe-search run --backbone NAME)")
    runs = client.search_runs([exp.experiment_id], records.filter(kind=records.SEARCH, search_id=target),
                              max_results=1)
    if runs:
        return runs[0]
    runs = client.search_runs([exp.experiment_id], records.filter(kind=records.SEARCH, backbone=target),
                              max_results=200, order_by=["attributes.start_time DESC"])
    if runs:
        done = [r for r in runs if records.Search.from_run(r).status == "finished"]
        return (done or runs)[0]
    recent = client.search_runs([exp.experiment_id], records.filter(kind=records.SEARCH), max_results=5,
                                order_by=["attributes.start_time DESC"])
    have = ", ".join(records.Search.from_run(r).search_id or "?" for r in recent) or "none"
    raise ReportError(f"no search {target!r} and no search of a backbone {target!r} in {where} "
                      f"(recent searches: {have})")


# --------------------------------------------------------------------------- collecting


def _space(text: str | None):
    """The sampled parameters of the logged ``space.yaml`` as a SearchSpace (None when unreadable)."""
    if not text:
        return None
    import yaml

    from ..space import parse_space

    try:
        data = yaml.safe_load(text) or {}
        return parse_space({k: v for k, v in data.items() if isinstance(v, dict) and "type" in v}, "space.yaml")
    except (yaml.YAMLError, SearchError, AttributeError):
        return None


def _curves(tracker: Tracker, trials: list[TrialSummary]) -> dict[str, list[tuple[int, float]]]:
    out = {}
    for t in trials:
        if t.stage != "confirmation":
            out[t.run_id] = tracker.curves(t.run_id, (OBJECTIVE,)).get(OBJECTIVE, [])
    return out


def _store_records(rec: SearchRecord) -> None:
    """The store's recipe promoted from this search (or the key's current one from another)."""
    from ..store import RecipeStore, StoreUnavailable

    try:
        recs = RecipeStore(rec.tracking_uri, create=False).fingerprints(rec.backbone)
    except StoreUnavailable as e:
        rec.store_note = str(e)
        return
    fp = rec.search.fingerprint
    for r in recs:
        if r.provenance.get("search_id") == rec.search_id or r.provenance.get("search_run_id") == rec.parent_run_id:
            rec.promoted = r
            return
    same = [r for r in recs if r.fingerprint == fp and r.dataset == rec.search.dataset]
    rec.current = same[0] if same else None


def _comparison(client, tracker: Tracker, rec: SearchRecord, experiment_id: str) -> dict | None:
    """The newest finished search of the same backbone, data fingerprint and space with the other
    sampler (random against TPE, TPE against random)."""
    fp = rec.search.fingerprint
    if not fp or not records.filterable(fp) or not records.filterable(rec.backbone):
        return None
    flt = records.filter(kind=records.SEARCH, backbone=rec.backbone, fingerprint=fp)
    runs = client.search_runs([experiment_id], flt, max_results=200, order_by=["attributes.start_time DESC"])
    for r in runs:
        p, other = r.data.params, records.Search.from_run(r)
        if (r.info.run_id == rec.parent_run_id or other.status != "finished"
                or p.get("space") != rec.params.get("space") or (p.get("sampler") or DEFAULT_SAMPLER) == rec.sampler):
            continue
        sid = other.search_id
        trials = [t for t in summarize(tracker, sid) if t.stage != "confirmation"]
        return {"search_id": sid, "sampler": p.get("sampler") or DEFAULT_SAMPLER,
                "early_stopping": p.get("early_stopping"),
                "trials": trials, "curves": _curves(tracker, trials)}
    return None


def collect(tracking_uri: str, parent_run_id: str) -> SearchRecord:
    """Read one search (its parent run, trials, curves, store records, comparison search)."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        run = client.get_run(parent_run_id)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ReportError(f"MLflow run {parent_run_id} is not in this store") from None
    tags, search = run.data.tags, records.Search.from_run(run)
    if not records.Search.is_kind(tags) or search.search_id is None:
        raise ReportError(f"MLflow run {parent_run_id} is not the parent run of a search")
    experiment = client.get_experiment(run.info.experiment_id).name
    tracker = Tracker(tracking_uri, experiment)
    search_id = search.search_id
    settings = json.loads(artifact_text(client, parent_run_id, "settings.json") or "{}")
    verdict_text = artifact_text(client, parent_run_id, "verdict.json")
    trials = summarize(tracker, search_id)
    rec = SearchRecord(
        tracking_uri=tracking_uri, experiment=experiment, parent_run_id=parent_run_id, search_id=search_id,
        backbone=search.backbone or run.data.params.get("backbone", "?"), tags=dict(tags),
        params=dict(run.data.params), metrics=dict(run.data.metrics), settings=settings,
        verdict=json.loads(verdict_text) if verdict_text else None,
        space=_space(artifact_text(client, parent_run_id, "space.yaml")), trials=trials,
        curves=_curves(tracker, trials), start_time=run.info.start_time)
    if rec.space is None:
        rec.notes.append("the search's space.yaml could not be read: no importances or slice plots")
    _store_records(rec)
    rec.comparison = _comparison(client, tracker, rec, run.info.experiment_id)
    return rec


# --------------------------------------------------------------------------- rendering


def _floor(rec: SearchRecord) -> float | None:
    v = rec.metrics.get("floor_val_knn_top1")
    return float(v) if v is not None else None


def _curve_list(trials: list[TrialSummary], curves: dict):
    from .plots import Curve

    return [Curve(label=t.baseline or t.trial_id, points=tuple(curves.get(t.run_id) or ()),
                  baseline=t.baseline is not None, stopped=t.status == "pruned",
                  failed=t.status in ("failed", "oom", "diverged")) for t in trials]


def figures(rec: SearchRecord) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The PNGs of the report and what the page says about them (importances, reasons)."""
    from . import plots
    from . import study as rs

    images, info = {}, {"importances": {}, "importance_note": None, "slice_params": []}
    images["curves.png"] = plots.learning_curves(
        _curve_list(rec.search_trials, rec.curves), max_epochs=int(rec.params.get("max_epochs") or 0) or None,
        floor=_floor(rec), title=f"{rec.backbone}: val kNN top-1 per epoch, search {rec.search_id}")
    studies = [rs.history_study(f"this search ({rec.how})", rec.search_trials, rec.space, rec.curves)]
    if rec.comparison:
        c = rec.comparison
        studies.append(rs.history_study(f"{c['search_id']} ({how(c['sampler'], c.get('early_stopping'))})",
                                        c["trials"], rec.space, c["curves"]))
    studies = [s for s in studies if rs.completed(s)]
    if studies:
        images["best_so_far.png"] = plots.best_so_far(studies, floor=_floor(rec),
                                                      title="best val kNN top-1 so far against trial number")
    else:
        info["history_note"] = "no search trial completed: no best-so-far curve"
    if rec.space is None or not rec.space.params:
        info["importance_note"] = "no sampled parameters known (space.yaml missing)"
        return images, info
    study = rs.space_study(f"recipe-search:{rec.search_id}", rec.search_trials, rec.space, rec.curves)
    imp, note = rs.importances(study)
    info["importances"], info["importance_note"] = imp, note
    if imp:
        top = rs.important_params(imp, k=4)
        info["slice_params"] = top
        images["importances.png"] = plots.importance_plot(
            study, rs.precomputed(imp), title="parameter importances for val kNN top-1 (fANOVA)")
        images["slices.png"] = plots.slice_plot(study, top, title="val kNN top-1 against the important parameters")
    return images, info


def render(rec: SearchRecord) -> Report:
    from .html import page

    t0 = time.monotonic()
    images, info = figures(rec)
    html = page(rec, images, info)
    return Report(search_id=rec.search_id, html=html, images=images, record=rec, seconds=time.monotonic() - t0)


# --------------------------------------------------------------------------- entry points


def build_report(tracking_uri: str, target: str, experiment: str = "recipe-search") -> Report:
    """The report of search ``target`` (a search id or a backbone) in ``experiment``."""
    t0 = time.monotonic()
    run = find_search(tracking_uri, target, experiment)
    rep = render(collect(tracking_uri, run.info.run_id))
    rep.seconds = time.monotonic() - t0
    return rep


def log_report(tracker: Tracker, search_id: str, parent_run_id: str) -> Report | None:
    """Build the report of a search that just ended and log it as the artifacts ``report/`` of its
    parent run (plus the metric ``report_s``). Never raises: a report that cannot be built leaves a
    note on stderr, and the search goes on."""
    t0 = time.monotonic()
    try:
        rep = render(collect(tracker.tracking_uri, parent_run_id))
        with tempfile.TemporaryDirectory() as d:
            rep.write(d)
            tracker.client.log_artifacts(parent_run_id, d, ARTIFACT_DIR)
        rep.seconds = time.monotonic() - t0
        tracker.log_metrics(parent_run_id, {"report_s": rep.seconds})
        print(f"note: report logged on the parent run as {ARTIFACT_DIR}/{PAGE} ({rep.seconds:.1f}s); "
              f"`recipe-search report {search_id}` writes it locally", file=sys.stderr, flush=True)
        return rep
    except Exception as e:  # noqa: BLE001 - a report never fails the search it describes
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"note: the report of search {search_id} was not built: {type(e).__name__}: {first}",
              file=sys.stderr, flush=True)
        return None


def report_page(tracking_uri: str, parent_run_id: str) -> str:
    """The page of a search: the ``report/report.html`` artifact its end logged, or (a search from
    before reports) one rendered now. Reads only."""
    text = artifact_text(_client(tracking_uri), parent_run_id, f"{ARTIFACT_DIR}/{PAGE}")
    return text if text is not None else render(collect(tracking_uri, parent_run_id)).html

