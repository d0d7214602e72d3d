"""The recipe-search HTTP API: the recipe store (read-only) and search jobs (FastAPI).

``create_app(tracking_uri)`` builds the app; ``api.server.serve`` runs it with uvicorn.

* ``GET /recipes``                      current recipes (one per backbone/dataset/fingerprint)
* ``GET /recipes/{backbone}?dataset=&fingerprint=``  recipe, verdict (seeds, floor, lift
  intervals), confirmed test_probe_top1, metrics, provenance, MLflow run link
* ``GET /recipes/{backbone}/fingerprints?dataset=``  which fingerprints have a current recipe
* ``GET /recipes/{backbone}/trials``    trial leaderboard read from MLflow (val_knn_top1 first)
* ``GET /recipes/{backbone}/history``   promotions over time
* ``GET /healthz``, ``GET /readyz``     liveness, readiness (checks the store)
* ``POST /searches``, ``GET /searches``, ``GET /searches/{id}``, ``POST /searches/{id}/cancel``,
  ``POST /searches/{id}/resume``, ``DELETE /searches/{id}`` (cancel + forget)  typed search jobs
  (``api/jobs.py``, routes in ``api/search_routes.py``); only when the server has a write token,
  and each needs ``Authorization: Bearer <token>`` (401 + ``WWW-Authenticate: Bearer`` otherwise)
* ``GET /searches/{id}/log?tail=N&follow=true``  a job's log as plain text: its last N lines, or
  streamed until the job ends (``api/job_log.py``); no job response names a server path

Reads go through a short per-key TTL cache, every JSON GET carries a strong
ETag (``If-None-Match`` -> 304), a missing, corrupt or outdated store (promotions
from before store schema 2) answers 503 with a one-line JSON message. Metric names
say their split (``val_knn_top1``, ``test_probe_top1``). More than ``max_in_flight``
requests at once are answered 503 with ``Retry-After`` (``api/overload.py``).

What the app writes: nothing to the recipe store itself. With search jobs enabled it
keeps its jobs in ``$RECIPE_SEARCH_HOME/api-jobs.json`` and their logs in
``$RECIPE_SEARCH_HOME/api-searches/`` (served by ``GET /searches/{id}/log``), and the
``recipe-search run`` processes it starts write their runs, state and promotions like any search.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from fastapi import FastAPI, Path as PathParam, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from recipe_search import __version__, config
from recipe_search.paths import absolute_uri
from recipe_search.store import PromotedRecipe, RecipeStore, StoreOutdated, StoreUnavailable, TrialRun

from . import conditional
from .cache import TTLCache
from .report_routes import add_report_routes
from .models import (
    ErrorBody,
    Health,
    HistoryEntry,
    ProxyShape,
    Ready,
    RecipeDetail,
    RecipeSummary,
    RunLink,
    Score,
    Trial,
    Verdict,
)
from .overload import ConcurrencyLimit

if TYPE_CHECKING:
    from .jobs import JobsConfig

log = logging.getLogger("api")

KEY_PARAMS = (
    "optimizer", "lr", "batch_size", "epochs", "weight_decay", "warmup_epochs", "temperature",
    "smoothing", "smoothing_k", "smoothing_ramp", "queue_size", "key_momentum",
    "crop_min_scale", "jitter_strength", "blur_p", "solarize_p", "proj_out_dim", "image_size",
)
_JSON = "application/json"


@dataclass(frozen=True)
class Rendered:
    """A cached, fully serialised response."""

    status: int
    body: bytes
    etag: str | None
    headers: tuple[tuple[str, str], ...] = ()


def _render(status: int, payload: BaseModel | list[BaseModel], headers: dict | None = None) -> Rendered:
    if isinstance(payload, list):
        body = b"[" + b",".join(p.model_dump_json(exclude_none=False).encode() for p in payload) + b"]"
    else:
        body = payload.model_dump_json(exclude_none=isinstance(payload, ErrorBody)).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:40] + '"' if status == 200 else None
    return Rendered(status, body, etag, tuple((headers or {}).items()))


class _NotFound(Exception):
    def __init__(self, detail: str, known: list[str], fingerprints: list[str] | None = None,
                 withheld: PromotedRecipe | None = None) -> None:
        self.detail, self.known, self.fingerprints, self.withheld = detail, known, fingerprints, withheld


def _score(r: PromotedRecipe) -> Score:
    s = r.score
    return Score(mean=s.mean, std=s.std, n=s.n, values=list(s.values))


def _summary(r: PromotedRecipe) -> RecipeSummary:
    return RecipeSummary(backbone=r.backbone, dataset=r.dataset, fingerprint=r.fingerprint, budget=r.budget,
                         verdict=r.verdict, test_probe_top1=_score(r), updated_at=r.updated_at, run_id=r.run_id)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no inf/nan)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _verdict(provenance: dict) -> Verdict | None:
    """provenance["verdict"] as a model; a part that does not fit the contract is left out."""
    v = provenance.get("verdict")
    if not isinstance(v, dict):
        return None
    v = _finite(v)
    try:
        return Verdict.model_validate(v)
    except ValidationError:
        pass
    try:  # keep what fits: the verdict and its line at least
        return Verdict.model_validate({k: v[k] for k in ("verdict", "line", "metric", "seeds", "winner") if k in v})
    except ValidationError:
        return None


def _next_step(provenance: dict) -> str:
    """What to run next, from a withheld verdict's provenance."""
    why = provenance.get("withheld_because") or ""
    return why.split("next: ", 1)[1] if "next: " in why else (
        "run a longer search (recipe-search run --budget cpu, or --budget proxy on a GPU) or add report seeds "
        "(--report-looks)")


def _proxy(provenance: dict) -> ProxyShape | None:
    p = provenance.get("fingerprint")
    if not isinstance(p, dict):
        return None
    try:
        return ProxyShape.model_validate(_finite(p))
    except ValidationError:
        return None


def _key_params(params: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, value in params.items():
        short = name.replace("/", ".").rsplit(".", 1)[-1]
        if short in KEY_PARAMS:
            out[short if short not in out else name] = value
    if not out:  # unknown naming: give everything, bounded
        out = dict(sorted(params.items())[:32])
    return out


def create_app(
    tracking_uri: str | None = None,
    *,
    cache_ttl: float = 2.0,
    cors_origins: list[str] | None = None,
    write_token_env: str = "RECIPE_SEARCH_TOKEN",
    write_token: str | None = None,
    jobs: "JobsConfig | None" = None,
    max_in_flight: int = 64,
    search_command: list[str] | None = None,
) -> FastAPI:
    """Build the API over the store at ``tracking_uri`` (default: config.default_tracking_uri()).

    ``cache_ttl`` seconds of caching per read (0 disables it); ``cors_origins`` turns
    CORS on for those origins. The ``/searches`` job routes exist only with a token
    (``write_token``, else ``$<write_token_env>`` when the app is built) and need
    ``Authorization: Bearer <token>``; ``jobs`` is the operator's configuration of them
    (data roots by name, ``max_jobs``, ``max_trials``; see ``api/jobs.py``).
    ``max_in_flight`` requests at once, then 503 with ``Retry-After`` (0: no limit).
    ``search_command`` replaces the ``recipe-search run`` prefix of the jobs (tests).
    """
    # absolute: the search jobs run in $RECIPE_SEARCH_HOME, not in this process's directory
    uri = absolute_uri(tracking_uri or config.default_tracking_uri())
    store = RecipeStore(uri, create=False)
    cache: TTLCache[Rendered] = TTLCache(cache_ttl)
    max_age = max(0, int(cache_ttl))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if app.state.jobs is not None:  # running searches get Ctrl-C; their jobs become resumable
            app.state.jobs.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="recipe-search",
        version=__version__,
        description=(
            "Best contrastive pretraining recipes per timm backbone, found by recipe-search "
            "and kept in MLflow. Reads are open; search jobs (/searches) exist only when the "
            "server has a write token and need it as a bearer token."
        ),
    )
    app.state.store = store
    app.state.cache = cache
    app.state.jobs = None
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-None-Match"],
            expose_headers=["ETag"],
        )

    # -- rendering ------------------------------------------------------------------
    def unavailable(e: StoreUnavailable) -> Rendered:
        # an outdated store does not heal by waiting: no Retry-After
        retry = {} if isinstance(e, StoreOutdated) else {"Retry-After": "5"}
        return _render(503, ErrorBody(detail=str(e), store=store.display_uri), retry)

    def compute(fn: Callable[[], Rendered]) -> Callable[[], Rendered]:
        def run() -> Rendered:
            try:
                return fn()
            except StoreUnavailable as e:
                return unavailable(e)
            except _NotFound as e:
                held = e.withheld
                return _render(404, ErrorBody(
                    detail=e.detail, known_backbones=e.known, known_fingerprints=e.fingerprints,
                    verdict=held.verdict if held else None, verdict_line=held.verdict_line if held else None,
                    next=_next_step(held.provenance) if held else None))

        return run

    async def respond(request: Request, key: tuple, fn: Callable[[], Rendered]) -> Response:
        return await conditional.respond(request, cache, key, compute(fn), max_age=max_age, media_type=_JSON)

    def known() -> list[str]:
        return store.backbones()

    def link(run_id: str, experiment_id: str | None) -> RunLink:
        url = store.run_url(run_id, experiment_id)
        hint = None
        if url is None:
            hint = (
                f"mlflow ui --backend-store-uri '{store.display_uri}' then open "
                f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}"
            )
        return RunLink(run_id=run_id, experiment_id=experiment_id, url=url, hint=hint)

    errors: dict[int | str, dict[str, Any]] = {
        503: {"model": ErrorBody, "description": "The store is missing, corrupt, unreachable or outdated "
                                                 "(promotions from before rs.schema 2)."},
    }
    not_found: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorBody, "description": "Unknown backbone (lists the known ones), or no recipe for "
                                                 "the dataset/fingerprint (lists the backbone's fingerprints)."},
        **errors,
    }
    BackboneParam = PathParam(..., description="timm model name, e.g. resnet18")
    DatasetParam = Query(None, description="Only recipes promoted on this dataset.")
    FingerprintParam = Query(None, pattern=r"^[0-9a-fA-F]{16}$",
                             description="Pick the recipe of this fingerprint (16 hex digits, see "
                                         "/recipes/{backbone}/fingerprints).")

    def missing(backbone: str, dataset: str | None, fingerprint: str | None = None) -> _NotFound:
        names = known()
        if backbone not in names:
            held = store.withheld(backbone)
            if held is not None:  # searched, but the evidence supports no recipe
                return _NotFound(f"no recipe is served for {backbone!r}: its last search "
                                 f"({held.provenance.get('search_id', '?')}) ended {held.verdict} and no recipe's "
                                 "lift over the untrained floor is shown", names, withheld=held)
            return _NotFound(f"unknown backbone {backbone!r}", names)
        fps = [r.fingerprint for r in store.fingerprints(backbone)]
        if fingerprint is not None:
            on = f" on dataset {dataset!r}" if dataset is not None else ""
            return _NotFound(f"backbone {backbone!r} has no current recipe with fingerprint {fingerprint!r}{on}",
                             names, fps)
        return _NotFound(f"backbone {backbone!r} has no recipe for dataset {dataset!r}", names, fps)

    # -- read endpoints ----------------------------------------------------------------
    @app.get("/recipes", response_model=list[RecipeSummary], responses=errors, tags=["recipes"])
    async def list_recipes(request: Request) -> Response:
        """Every current recipe: one per (backbone, dataset, fingerprint), with its verdict and
        confirmed test_probe_top1 (mean ± std over the seeds)."""
        return await respond(request, ("list",), lambda: _render(200, [_summary(r) for r in store.list()]))

    @app.get("/recipes/{backbone}", response_model=RecipeDetail, responses=not_found, tags=["recipes"])
    async def get_recipe(
        request: Request,
        backbone: str = BackboneParam,
        dataset: str | None = DatasetParam,
        fingerprint: str | None = FingerprintParam,
    ) -> Response:
        """The current recipe of a backbone (the newest one unless ``dataset``/``fingerprint`` pick
        one): recipe JSON, verdict with seeds, floor and lift intervals, the confirmed
        test_probe_top1 per seed, the fingerprint, metrics, provenance and its MLflow run."""
        fp = fingerprint.lower() if fingerprint is not None else None

        def build() -> Rendered:
            rec = store.get(backbone, dataset=dataset, fingerprint=fp)
            if rec is None:
                raise missing(backbone, dataset, fp)
            exp = store.experiment_id
            return _render(200, RecipeDetail(
                backbone=rec.backbone, dataset=rec.dataset, fingerprint=rec.fingerprint, budget=rec.budget,
                verdict=_verdict(rec.provenance), test_probe_top1=_score(rec), proxy=_proxy(rec.provenance),
                metrics=rec.metrics, recipe=rec.recipe, provenance=rec.provenance, state=rec.state,
                updated_at=rec.updated_at, run_id=rec.run_id, source_run_id=rec.source_run_id,
                mlflow=link(rec.run_id, exp),
            ))

        return await respond(request, ("recipe", backbone, dataset, fp), build)

    @app.get("/recipes/{backbone}/fingerprints", response_model=list[RecipeSummary], responses=not_found,
             tags=["recipes"])
    async def get_fingerprints(
        request: Request, backbone: str = BackboneParam, dataset: str | None = DatasetParam,
    ) -> Response:
        """Which fingerprints (proxy data + budget shape) have a current recipe for the backbone,
        newest first: dataset, budget, verdict, confirmed test_probe_top1 and promotion time."""

        def build() -> Rendered:
            recs = store.fingerprints(backbone, dataset)
            if not recs:
                raise missing(backbone, dataset)
            return _render(200, [_summary(r) for r in recs])

        return await respond(request, ("fingerprints", backbone, dataset), build)

    @app.get("/recipes/{backbone}/trials", response_model=list[Trial], responses=not_found,
             tags=["recipes"])
    async def get_trials(
        request: Request,
        backbone: str = BackboneParam,
        limit: int = Query(20, ge=1, le=1000, description="How many trials (best first)."),
    ) -> Response:
        """The trial leaderboard: the backbone's trials in MLflow, best val_knn_top1 first.
        Confirmation trials (stage ``confirmation``) carry their phase; those of the report phase
        also carry test_probe_top1 and test_knn_top1 (the select phase never reads test)."""

        def build() -> Rendered:
            trials: list[TrialRun] = store.trials(backbone, limit=limit)
            if not trials:
                names = known()
                if backbone not in names:
                    raise _NotFound(f"no trials and no recipe for backbone {backbone!r}", names)
            return _render(200, [
                Trial(run_id=t.run_id, run_name=t.run_name, status=t.status, stage=t.stage, phase=t.phase,
                      val_knn_top1=t.val_knn_top1, test_probe_top1=t.test_probe_top1,
                      test_knn_top1=t.test_knn_top1, params=_key_params(t.params), search_id=t.search_id,
                      experiment_id=t.experiment_id, start_time=t.start_time,
                      mlflow=link(t.run_id, t.experiment_id))
                for t in trials
            ])

        return await respond(request, ("trials", backbone, limit), build)

    @app.get("/recipes/{backbone}/history", response_model=list[HistoryEntry], responses=not_found,
             tags=["recipes"])
    async def get_history(request: Request, backbone: str = BackboneParam) -> Response:
        """Every promotion of the backbone (current and superseded), newest first."""

        def build() -> Rendered:
            hist = store.history(backbone)
            if not hist:
                raise _NotFound(f"unknown backbone {backbone!r}", known())
            return _render(200, [
                HistoryEntry(backbone=h.backbone, dataset=h.dataset, fingerprint=h.fingerprint, budget=h.budget,
                             verdict=h.verdict, test_probe_top1=_score(h), metrics=h.metrics, state=h.state,
                             updated_at=h.updated_at, run_id=h.run_id, source_run_id=h.source_run_id,
                             recipe=h.recipe)
                for h in hist
            ])

        return await respond(request, ("history", backbone), build)

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz(request: Request) -> Response:
        """Liveness: 200 whenever the process is up."""
        return await respond(request, ("healthz",), lambda: _render(200, Health(version=__version__)))

    @app.get("/readyz", response_model=Ready, responses=errors, tags=["ops"])
    async def readyz(request: Request) -> Response:
        """Readiness: 200 when the store can be read, else 503 with the reason."""

        def build() -> Rendered:
            store.ping()
            return _render(200, Ready(store=store.display_uri, recipes=len(store.list())))

        return await respond(request, ("readyz",), build)

    # -- search jobs (write endpoints) ---------------------------------------------------
    token = write_token if write_token is not None else os.environ.get(write_token_env, "")
    app.state.jobs = None
    if token:
        from .jobs import JobManager, JobsConfig, request_model
        from .search_routes import router as search_router

        cfg = jobs or JobsConfig()
        if search_command is not None:
            cfg.command = list(search_command)
        manager = JobManager(cfg, uri)
        app.state.jobs = manager
        app.include_router(search_router(manager, token, request_model(cfg), link, write_token_env))
    else:
        from .search_routes import disabled_router

        app.include_router(disabled_router(write_token_env))

    @app.exception_handler(_HTTPError)
    async def _http_error(request: Request, exc: _HTTPError) -> Response:
        body = ErrorBody(detail=exc.detail).model_dump_json(exclude_none=True)
        return Response(body, status_code=exc.status, media_type=_JSON, headers=exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(request: Request, exc: StoreUnavailable) -> Response:
        r = unavailable(exc)
        return Response(r.body, status_code=503, media_type=_JSON, headers=dict(r.headers))

    import re

    from starlette.exceptions import HTTPException as StarletteHTTPException

    allowed: list[tuple[re.Pattern, set[str]]] = []

    def allow_for(path: str) -> set[str]:
        """Every documented method on ``path`` (included routers are not flat routes any more)."""
        if not allowed:
            for template, ops in app.openapi().get("paths", {}).items():
                rx = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
                allowed.append((rx, {m.upper() for m in ops}))
        return set().union(*[m for rx, m in allowed if rx.match(path)])

    @app.exception_handler(StarletteHTTPException)
    async def _http_exception(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Allow: every method of the path, not only the first route's
            methods = allow_for(request.url.path)
            if methods:
                headers["Allow"] = ", ".join(sorted(methods))
        body = ErrorBody(detail=str(exc.detail)).model_dump_json(exclude_none=True)
        return Response(body, status_code=exc.status_code, media_type=_JSON, headers=headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        # the traceback goes to the server's log, never to the client
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        body = ErrorBody(detail=f"internal error ({type(exc).__name__}); the server log has the details")
        return Response(body.model_dump_json(exclude_none=True), status_code=500, media_type=_JSON)

    add_report_routes(app, store, cache, max_age)  # GET /recipes/{backbone}/report (api/report_routes.py)

    # outermost: past max_in_flight requests, answer 503 + Retry-After at once
    if max_in_flight > 0:
        app.add_middleware(ConcurrencyLimit, limit=max_in_flight)
    return app


class _HTTPError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.detail, self.headers = status, detail, headers
