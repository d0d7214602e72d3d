"""The recipe-search HTTP API: read-only access to the recipe store (FastAPI).

``create_app(tracking_uri)`` builds the app; ``api.server.serve`` runs it with uvicorn.

* ``GET /recipes``                      current recipes (one per backbone/dataset/fingerprint)
* ``GET /recipes/{backbone}?dataset=&fingerprint=``  recipe, verdict (seeds, floor, lift
  intervals), confirmed test_probe_top1, metrics, provenance, MLflow run link
* ``GET /recipes/{backbone}/fingerprints?dataset=``  which fingerprints have a current recipe
* ``GET /recipes/{backbone}/trials``    trial leaderboard read from MLflow (val_knn_top1 first)
* ``GET /recipes/{backbone}/history``   promotions over time
* ``GET /healthz``, ``GET /readyz``     liveness, readiness (checks the store)
* ``POST /searches``, ``GET /searches/{id}``  start/inspect ``recipe-search run``
  (write endpoint: needs ``Authorization: Bearer $RECIPE_SEARCH_TOKEN``)

Reads go through a short per-key TTL cache, every JSON GET carries a strong
ETag (``If-None-Match`` -> 304), a missing, corrupt or outdated store (promotions
from before ``rs.schema`` 2) answers 503 with a one-line JSON message. Metric names
say their split (``val_knn_top1``, ``test_probe_top1``). Nothing is ever written to
the store by this app.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import math
import os
import shutil
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI, Path as PathParam, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from recipe_search import __version__, config
from recipe_search.store import PromotedRecipe, RecipeStore, StoreOutdated, StoreUnavailable, TrialRun

from .cache import TTLCache
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
    SearchJob,
    SearchRequest,
    Trial,
    Verdict,
)

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


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    # If-None-Match uses the weak comparison: ignore W/ prefixes.
    tags = [t.strip() for t in header.split(",")]
    return any((t[2:] if t.startswith("W/") else t) == etag for t in tags)


class _NotFound(Exception):
    def __init__(self, detail: str, known: list[str], fingerprints: list[str] | None = None) -> None:
        self.detail, self.known, self.fingerprints = detail, known, fingerprints


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
    search_command: list[str] | None = None,
) -> FastAPI:
    """Build the API over the store at ``tracking_uri`` (default: config.default_tracking_uri()).

    ``cache_ttl`` seconds of caching per read (0 disables it); ``cors_origins`` turns
    CORS on for those origins; write endpoints need ``Authorization: Bearer <token>``
    equal to ``$<write_token_env>`` and answer 403 while it is unset.
    ``search_command`` overrides the ``recipe-search run`` command line (tests).
    """
    uri = tracking_uri or config.default_tracking_uri()
    store = RecipeStore(uri, create=False)
    cache: TTLCache[Rendered] = TTLCache(cache_ttl)
    max_age = max(0, int(cache_ttl))

    app = FastAPI(
        title="recipe-search",
        version=__version__,
        description=(
            "Best contrastive pretraining recipes per timm backbone, found by recipe-search "
            "and kept in MLflow. Read-only unless a write token is configured."
        ),
    )
    app.state.store = store
    app.state.cache = cache
    app.state.searches = {}
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
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
                return _render(404, ErrorBody(detail=e.detail, known_backbones=e.known,
                                              known_fingerprints=e.fingerprints))

        return run

    async def respond(request: Request, key: tuple, fn: Callable[[], Rendered]) -> Response:
        rendered = cache.peek(key)
        if rendered is None:
            rendered = await run_in_threadpool(cache.get_or_compute, key, compute(fn))
        headers = dict(rendered.headers)
        if rendered.etag is not None:
            headers["ETag"] = rendered.etag
            headers["Cache-Control"] = f"max-age={max_age}"
            if _etag_matches(request.headers.get("if-none-match"), rendered.etag):
                return Response(status_code=304, headers=headers)
        return Response(rendered.body, status_code=rendered.status, media_type=_JSON, headers=headers)

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
        Confirmation trials (stage ``confirmation``) also carry test_probe_top1 and test_knn_top1."""

        def build() -> Rendered:
            trials: list[TrialRun] = store.trials(backbone, limit=limit)
            if not trials:
                names = known()
                if backbone not in names:
                    raise _NotFound(f"no trials and no recipe for backbone {backbone!r}", names)
            return _render(200, [
                Trial(run_id=t.run_id, run_name=t.run_name, status=t.status, stage=t.stage,
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

    # -- write endpoints -----------------------------------------------------------------
    bearer = HTTPBearer(auto_error=False, description=f"the server's ${write_token_env}")

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        token = os.environ.get(write_token_env, "")
        if not token:
            raise _HTTPError(403, f"write endpoints are disabled: set {write_token_env} on the server to enable them")
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise _HTTPError(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    auth_errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorBody, "description": "Missing or wrong bearer token."},
        403: {"model": ErrorBody, "description": "Write endpoints are disabled (no token configured)."},
    }

    @app.post("/searches", response_model=SearchJob, status_code=202,
              responses={400: {"model": ErrorBody, "description": "The body is not JSON."}, **auth_errors},
              dependencies=[Depends(require_token)], tags=["searches"])
    def start_search(req: SearchRequest) -> SearchJob:
        """Start ``recipe-search run <args>`` in the background against this API's store."""
        cmd = [*(search_command or _run_command()), *req.args]
        job_id = uuid.uuid4().hex[:12]
        log_dir = config.home() / "api-searches"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{job_id}.log"
        env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
        env.pop(write_token_env, None)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        job = _Job(job_id, proc, cmd, log_path, _now())
        with _jobs_lock:
            app.state.searches[job_id] = job
        return job.model()

    @app.get("/searches/{job_id}", response_model=SearchJob, responses={**auth_errors, 404: {"model": ErrorBody}},
             dependencies=[Depends(require_token)], tags=["searches"])
    def get_search(job_id: str) -> SearchJob:
        """Status of a search started through this API process."""
        job = app.state.searches.get(job_id)
        if job is None:
            raise _HTTPError(404, f"no search {job_id!r} was started by this server")
        return job.model()

    @app.exception_handler(_HTTPError)
    async def _http_error(request: Request, exc: _HTTPError) -> Response:
        body = ErrorBody(detail=exc.detail).model_dump_json(exclude_none=True)
        return Response(body, status_code=exc.status, media_type=_JSON, headers=exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(request: Request, exc: StoreUnavailable) -> Response:
        r = unavailable(exc)
        return Response(r.body, status_code=503, media_type=_JSON, headers=dict(r.headers))

    return app


class _HTTPError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.detail, self.headers = status, detail, headers


_jobs_lock = threading.Lock()


@dataclass
class _Job:
    id: str
    proc: subprocess.Popen
    command: list[str]
    log: Path
    started_at: str

    def model(self) -> SearchJob:
        rc = self.proc.poll()
        return SearchJob(id=self.id, pid=self.proc.pid, command=self.command, log=str(self.log),
                         status="running" if rc is None else "exited", returncode=rc,
                         started_at=self.started_at)


def _run_command() -> list[str]:
    exe = shutil.which("recipe-search") or str(Path(sys.executable).with_name("recipe-search"))
    if Path(exe).exists():
        return [exe, "run"]
    return [sys.executable, "-c", "import sys; from recipe_search.cli import main; sys.exit(main())", "run"]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
