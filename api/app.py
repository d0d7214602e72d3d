"""The recipe-search HTTP API: the recipe store (read-only) and search jobs (FastAPI).

``create_app(tracking_uri)`` assembles the app; ``api.server.serve`` runs it with uvicorn. The
read routes are in ``api/recipe_routes.py`` (their bodies in ``api/reads.py`` and
``api/views.py``), the error answers in ``api/error_handlers.py``.

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
import os
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from recipe_search import __version__, config
from recipe_search.paths import absolute_uri
from recipe_search.store import RecipeStore

from . import error_handlers, recipe_routes
from .cache import TTLCache
from .overload import ConcurrencyLimit
from .reads import Reads
from .report_routes import add_report_routes
from .views import Rendered

if TYPE_CHECKING:
    from .jobs import JobsConfig

DESCRIPTION = (
    "Best contrastive pretraining recipes per timm backbone, found by recipe-search "
    "and kept in MLflow. Reads are open; search jobs (/searches) exist only when the "
    "server has a write token and need it as a bearer token."
)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    if app.state.jobs is not None:  # running searches get Ctrl-C; their jobs become resumable
        app.state.jobs.shutdown()


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
    reads = Reads(store, cache, max_age)

    app = FastAPI(lifespan=_lifespan, title="recipe-search", version=__version__, description=DESCRIPTION)
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
    app.include_router(recipe_routes.router(reads))
    token = write_token if write_token is not None else os.environ.get(write_token_env, "")
    _add_search_routes(app, reads, uri, token, write_token_env, jobs, search_command)
    error_handlers.install(app, store.display_uri)
    add_report_routes(app, store, cache, max_age)  # GET /recipes/{backbone}/report (api/report_routes.py)

    # outermost: past max_in_flight requests, answer 503 + Retry-After at once
    if max_in_flight > 0:
        app.add_middleware(ConcurrencyLimit, limit=max_in_flight)
    return app


def _add_search_routes(app: FastAPI, reads: Reads, uri: str, token: str, token_env: str,
                       jobs: "JobsConfig | None", search_command: list[str] | None) -> None:
    """The ``/searches`` job routes with a token; without one, 404s saying how to enable them."""
    if not token:
        from .search_routes import disabled_router

        app.include_router(disabled_router(token_env))
        return
    from .jobs import JobManager, JobsConfig, request_model
    from .search_routes import router as search_router

    cfg = jobs or JobsConfig()
    if search_command is not None:
        cfg.command = list(search_command)
    manager = JobManager(cfg, uri)
    app.state.jobs = manager
    app.include_router(search_router(manager, token, request_model(cfg), reads.link, token_env))
