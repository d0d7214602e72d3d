"""The read API over the recipe store: each read's body, cached, with its 404/503 answers.

``Reads(store, cache, max_age)`` is what the read routes (``api/recipe_routes.py``) call:
``respond`` serves a read through the per-key TTL cache with a strong ETag
(``api/conditional.py``); a ``NotFound`` or ``StoreUnavailable`` raised while building a body
becomes the 404 or 503 body, cached like any other. ``link`` is a run's MLflow link (the
search routes use it too).
"""

from __future__ import annotations

from typing import Callable

from fastapi import Request
from fastapi.responses import Response

from recipe_search import __version__
from recipe_search.store import RecipeStore, StoreUnavailable, TrialRun

from . import conditional
from .cache import TTLCache
from .models import Health, HistoryEntry, Ready, RecipeDetail, RunLink, Trial
from .views import (JSON, NotFound, Rendered, key_params, not_found, proxy, render, score, summary, unavailable,
                    verdict)


class Reads:
    """The read bodies of one app over ``store``, cached ``max_age`` seconds at most."""

    def __init__(self, store: RecipeStore, cache: TTLCache[Rendered], max_age: int) -> None:
        self.store, self.cache, self.max_age = store, cache, max_age

    # -- plumbing ---------------------------------------------------------------------------
    def compute(self, fn: Callable[[], Rendered]) -> Callable[[], Rendered]:
        def run() -> Rendered:
            try:
                return fn()
            except StoreUnavailable as e:
                return unavailable(e, self.store.display_uri)
            except NotFound as e:
                return not_found(e)

        return run

    async def respond(self, request: Request, key: tuple, fn: Callable[[], Rendered]) -> Response:
        return await conditional.respond(request, self.cache, key, self.compute(fn), max_age=self.max_age,
                                         media_type=JSON)

    def known(self) -> list[str]:
        return self.store.backbones()

    def link(self, run_id: str, experiment_id: str | None) -> RunLink:
        url = self.store.run_url(run_id, experiment_id)
        hint = None
        if url is None:
            hint = (
                f"mlflow ui --backend-store-uri '{self.store.display_uri}' then open "
                f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}"
            )
        return RunLink(run_id=run_id, experiment_id=experiment_id, url=url, hint=hint)

    def missing(self, backbone: str, dataset: str | None, fingerprint: str | None = None) -> NotFound:
        store, names = self.store, self.known()
        if backbone not in names:
            held = store.withheld(backbone)
            if held is not None:  # searched, but the evidence supports no recipe
                return NotFound(f"no recipe is served for {backbone!r}: its last search "
                                f"({held.provenance.get('search_id', '?')}) ended {held.verdict} and no recipe's "
                                "lift over the untrained floor is shown", names, withheld=held)
            return NotFound(f"unknown backbone {backbone!r}", names)
        fps = [r.fingerprint for r in store.fingerprints(backbone)]
        if fingerprint is not None:
            on = f" on dataset {dataset!r}" if dataset is not None else ""
            return NotFound(f"backbone {backbone!r} has no current recipe with fingerprint {fingerprint!r}{on}",
                            names, fps)
        return NotFound(f"backbone {backbone!r} has no recipe for dataset {dataset!r}", names, fps)

    # -- the bodies ---------------------------------------------------------------------------
    def recipes(self) -> Rendered:
        return render(200, [summary(r) for r in self.store.list()])

    def recipe(self, backbone: str, dataset: str | None, fp: str | None) -> Rendered:
        rec = self.store.get(backbone, dataset=dataset, fingerprint=fp)
        if rec is None:
            raise self.missing(backbone, dataset, fp)
        exp = self.store.experiment_id
        return render(200, RecipeDetail(
            backbone=rec.backbone, dataset=rec.dataset, fingerprint=rec.fingerprint, budget=rec.budget,
            verdict=verdict(rec.provenance), test_probe_top1=score(rec), proxy=proxy(rec.provenance),
            metrics=rec.metrics, recipe=rec.recipe, provenance=rec.provenance, state=rec.state,
            updated_at=rec.updated_at, run_id=rec.run_id, source_run_id=rec.source_run_id,
            mlflow=self.link(rec.run_id, exp),
        ))

    def fingerprints(self, backbone: str, dataset: str | None) -> Rendered:
        recs = self.store.fingerprints(backbone, dataset)
        if not recs:
            raise self.missing(backbone, dataset)
        return render(200, [summary(r) for r in recs])

    def trials(self, backbone: str, limit: int) -> Rendered:
        trials: list[TrialRun] = self.store.trials(backbone, limit=limit)
        if not trials:
            names = self.known()
            if backbone not in names:
                raise NotFound(f"no trials and no recipe for backbone {backbone!r}", names)
        return render(200, [
            Trial(run_id=t.run_id, run_name=t.run_name, status=t.status, stage=t.stage, phase=t.phase,
                  val_knn_top1=t.val_knn_top1, test_probe_top1=t.test_probe_top1,
                  test_knn_top1=t.test_knn_top1, params=key_params(t.params), search_id=t.search_id,
                  experiment_id=t.experiment_id, start_time=t.start_time,
                  mlflow=self.link(t.run_id, t.experiment_id))
            for t in trials
        ])

    def history(self, backbone: str) -> Rendered:
        hist = self.store.history(backbone)
        if not hist:
            raise NotFound(f"unknown backbone {backbone!r}", self.known())
        return render(200, [
            HistoryEntry(backbone=h.backbone, dataset=h.dataset, fingerprint=h.fingerprint, budget=h.budget,
                         verdict=h.verdict, test_probe_top1=score(h), metrics=h.metrics, state=h.state,
                         updated_at=h.updated_at, run_id=h.run_id, source_run_id=h.source_run_id,
                         recipe=h.recipe)
            for h in hist
        ])

    def health(self) -> Rendered:
        return render(200, Health(version=__version__))

    def ready(self) -> Rendered:
        self.store.ping()
        return render(200, Ready(store=self.store.display_uri, recipes=len(self.store.list())))
