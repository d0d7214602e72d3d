"""``GET /recipes/{backbone}/report``: the HTML report of the search that promoted a backbone's
current recipe (``recipe_search.report``).

The page is the ``report/report.html`` artifact the search logged on its parent MLflow run at its
end (a search from before reports gets one rendered on the fly, nothing written). Read-only,
with the same rules as the JSON reads of ``api.app``: the per-key TTL cache (single flight), a
strong ETag over the body (``If-None-Match`` -> 304), ``Cache-Control: max-age``; 404 with a
JSON message when there is no such recipe or its search left no record, 503 when the store is
unavailable.

``add_report_routes(app, store, cache, max_age)`` registers the route on the app.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI, Path as PathParam, Query, Request
from fastapi.responses import Response

from recipe_search.report import ReportError, report_page
from recipe_search.store import RecipeStore, StoreOutdated, StoreUnavailable

from .cache import TTLCache
from .conditional import respond
from .models import ErrorBody

_HTML = "text/html; charset=utf-8"
_JSON = "application/json"


@dataclass(frozen=True)
class Page:
    """A cached response: the page (200) or an error body (404/503)."""

    status: int
    body: bytes
    media_type: str
    etag: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def _error(status: int, body: ErrorBody, headers: dict | None = None) -> Page:
    return Page(status, body.model_dump_json(exclude_none=True).encode(), _JSON, None, tuple((headers or {}).items()))


def _page(html: str) -> Page:
    body = html.encode("utf-8")
    return Page(200, body, _HTML, '"' + hashlib.sha256(body).hexdigest()[:40] + '"')


def _search_run(rec) -> str | None:
    """The parent run id of the search that promoted ``rec`` (provenance ``search_run_id``)."""
    run_id = rec.provenance.get("search_run_id")
    return run_id if isinstance(run_id, str) and run_id else None


def build_page(store: RecipeStore, backbone: str, dataset: str | None, fingerprint: str | None) -> Page:
    """The report page of ``backbone``'s current recipe, or the error to answer."""
    try:
        rec = store.get(backbone, dataset=dataset, fingerprint=fingerprint)
        if rec is None:
            names = store.backbones()
            what = (f"unknown backbone {backbone!r}" if backbone not in names else
                    f"backbone {backbone!r} has no current recipe"
                    + (f" on dataset {dataset!r}" if dataset else "")
                    + (f" with fingerprint {fingerprint!r}" if fingerprint else ""))
            return _error(404, ErrorBody(detail=f"{what}: no report", known_backbones=names))
        run_id = _search_run(rec)
        if run_id is None:
            return _error(404, ErrorBody(detail=f"the current recipe of {backbone!r} names no search run: "
                                                "no report"))
        try:
            return _page(report_page(store.tracking_uri, run_id))
        except ReportError as e:  # the search run is gone, or not a search's
            return _error(404, ErrorBody(detail=f"{e}: no report for {backbone!r}"))
    except StoreUnavailable as e:
        retry = {} if isinstance(e, StoreOutdated) else {"Retry-After": "5"}
        return _error(503, ErrorBody(detail=str(e), store=store.display_uri), retry)


def add_report_routes(app: FastAPI, store: RecipeStore, cache: TTLCache, max_age: int) -> None:
    """Register ``GET /recipes/{backbone}/report`` on ``app`` (reads ``store`` through ``cache``)."""
    router = APIRouter()

    @router.get(
        "/recipes/{backbone}/report", tags=["recipes"], response_class=Response,
        responses={
            200: {"content": {"text/html": {"schema": {"type": "string"}}},
                  "description": "The search report: one self-contained HTML page (plots inline as PNG)."},
            404: {"model": ErrorBody, "description": "No current recipe for the backbone (dataset, fingerprint), "
                                                     "or its search left no record in the store."},
            503: {"model": ErrorBody, "description": "The store is missing, corrupt, unreachable or outdated."},
        })
    async def get_report(
        request: Request,
        backbone: str = PathParam(..., description="timm model name, e.g. resnet18"),
        dataset: str | None = Query(None, description="Only recipes promoted on this dataset."),
        fingerprint: str | None = Query(None, pattern=r"^[0-9a-fA-F]{16}$",
                                        description="The recipe of this fingerprint (16 hex digits)."),
    ) -> Response:
        """The HTML report of the search that promoted the backbone's current recipe: verdict,
        confirmation leaderboard (mean ± std), lift intervals, untrained floor, learning curves,
        best so far, parameter importances, the promoted recipe with its provenance and data
        fingerprint, and the commands to reproduce it."""
        fp = fingerprint.lower() if fingerprint is not None else None
        key = ("report", backbone, dataset, fp)
        return await respond(request, cache, key, lambda: build_page(store, backbone, dataset, fp),
                             max_age=max_age, media_type=_HTML)

    app.include_router(router)
