"""The ``/searches`` routes: typed search jobs (see ``api/jobs.py``), behind a bearer token.

With a token configured every ``/searches`` route needs ``Authorization: Bearer <token>``
(missing or wrong: 401 with ``WWW-Authenticate: Bearer``; compared in constant time).
Without one the routes are absent from the OpenAPI schema and answer 404 saying how to
enable them.
"""

# no `from __future__ import annotations`: the request model is built per app, and FastAPI
# must see it as a real annotation of the route function

import hmac
from typing import Any, Callable, Optional

from fastapi import APIRouter, Body, Depends, HTTPException, Path as PathParam, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .job_log import follow as follow_log, tail as tail_log
from .jobs import RESUMABLE, JobError, JobManager, search_progress
from .models import ErrorBody, RunLink, SearchJob, SearchProgress

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}}
_AUTH = {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    known: dict[int, dict[str, Any]] = {
        400: {"model": ErrorBody, "description": "The body could not be parsed."},
        401: {"model": ErrorBody, "description": "Missing or wrong bearer token.", "headers": _AUTH},
        404: {"model": ErrorBody, "description": "No such search job."},
        409: {"model": ErrorBody, "description": "The job is not in a state that allows this "
                                                 "(finished, still running or still stopping)."},
        429: {"model": ErrorBody, "description": "As many jobs as this server allows (--max-jobs) are running.",
              "headers": _RETRY_AFTER},
        503: {"model": ErrorBody, "description": "The server is overloaded or shutting down.",
              "headers": _RETRY_AFTER},
    }
    return {c: known[c] for c in codes}


def _job_model(job: dict, redact: Callable[[str | None], str | None],
               progress: Callable[[dict], SearchProgress] | None = None) -> SearchJob:
    """A job as a client sees it: its log as a route, no server path in its message or error."""
    searches = [progress(s) if progress is not None else SearchProgress(
        backbone=s["backbone"], search_id=s["search_id"], state=s["state"], returncode=s.get("returncode"))
        for s in job["searches"]]
    return SearchJob(id=job["id"], state=job["state"], resumable=job["state"] in RESUMABLE,
                     created_at=job["created_at"], updated_at=job["updated_at"], request=job["request"],
                     trials=job["trials"], searches=searches, pid=job.get("pid"), runs=job.get("runs", 0),
                     log=f"/searches/{job['id']}/log", message=redact(job.get("message")),
                     error=redact(job.get("error")))


def _fail(e: JobError) -> HTTPException:
    headers = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else None
    return HTTPException(e.status, e.detail, headers=headers)


JobId = PathParam(..., pattern=r"^[0-9a-f]{12}$", description="The job id POST /searches returned.")


def _token_check(token: str, token_env: str) -> Callable[..., None]:
    """The dependency every job route has: ``Authorization: Bearer <token>``, compared in constant time."""
    bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                        description=f"The server's ${token_env}.")
    expected = token.encode()

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(401, f"missing or wrong bearer token: send 'Authorization: Bearer <the "
                                     f"server's ${token_env}>'", headers={"WWW-Authenticate": "Bearer"})

    return require_token


def _progress(manager: JobManager, link: Callable[[str, str | None], RunLink]) -> Callable[[dict], SearchProgress]:
    """A search of a job with its progress read from its state file and MLflow (paths masked)."""
    redact = manager.redact

    def progress(search: dict) -> SearchProgress:
        p = search_progress(search["search_id"], manager.tracking_uri)
        mlflow = link(p["parent_run_id"], p["experiment_id"]) if p["parent_run_id"] else None
        if mlflow is not None and mlflow.hint:  # `mlflow ui --backend-store-uri <the store>`
            mlflow.hint = redact(mlflow.hint)
        return SearchProgress(
            backbone=search["backbone"], search_id=search["search_id"], state=search["state"],
            returncode=search.get("returncode"), stage=p["stage"], trials=p["trials"],
            confirmation=p["confirmation"], best=p["best"], floor_val_knn_top1=p["floor_val_knn_top1"],
            verdict=p["verdict"], verdict_line=p["verdict_line"], note=redact(p["note"]), mlflow=mlflow)

    return progress


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` off the event loop; a ``JobError`` becomes its HTTP answer."""
    try:
        return await run_in_threadpool(fn, *args)
    except JobError as e:
        raise _fail(e) from None


def router(manager: JobManager, token: str, request_model: type, link: Callable[[str, str | None], RunLink],
           token_env: str = "RECIPE_SEARCH_TOKEN") -> APIRouter:
    """The job routes over ``manager``; every one needs ``Authorization: Bearer <token>``."""
    r = APIRouter(prefix="/searches", tags=["searches"], dependencies=[Depends(_token_check(token, token_env))])
    _start_route(r, manager, request_model)
    _read_routes(r, manager, _progress(manager, link))
    _log_route(r, manager)
    _control_routes(r, manager)
    return r


def _start_route(r: APIRouter, manager: JobManager, request_model: type) -> None:
    async def start_search(body: request_model = Body(...)) -> JSONResponse:  # type: ignore[valid-type]
        job = await _call(manager.submit, body)
        return JSONResponse(_job_model(job, manager.redact).model_dump(mode="json"), status_code=202,
                            headers={"Location": f"/searches/{job['id']}"})

    start_search.__doc__ = (
        "Start a search job: one `recipe-search run` per backbone, one after the other, with arguments "
        "built from this typed request (the dataset is the name of a data root the operator configured; "
        "no caller text reaches the command line). At most `--max-jobs` run at once (then 429).")
    r.add_api_route("", start_search, methods=["POST"], status_code=202, response_model=SearchJob,
                    responses=_responses(400, 401, 429, 503), summary="Start a search job")


def _read_routes(r: APIRouter, manager: JobManager, progress: Callable[[dict], SearchProgress]) -> None:
    redact = manager.redact

    @r.get("", response_model=list[SearchJob], responses=_responses(401, 503), summary="List the search jobs")
    async def list_searches() -> list[SearchJob]:
        """Every job this server knows (newest first), with each search's state."""
        return [_job_model(j, redact) for j in manager.list()]

    @r.get("/{job_id}", response_model=SearchJob, responses=_responses(401, 404, 503), summary="A search job")
    def get_search(job_id: str = JobId) -> SearchJob:
        """State and progress of a job: per search, trials done / running / pruned / failed, the best
        so far, the untrained floor, the verdict once finished and the MLflow parent run."""
        try:
            job = manager.get(job_id)
        except JobError as e:
            raise _fail(e) from None
        return _job_model(job, redact, progress)


def _log_route(r: APIRouter, manager: JobManager) -> None:
    redact = manager.redact
    log_doc = {"description": "The log's text (server paths masked).",
               "content": {"text/plain": {"schema": {"type": "string"}}}}
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    json_errors = {code: {**{k: v for k, v in doc.items() if k != "model"}, "content": error_body}
                   for code, doc in _responses(401, 404, 503).items()}  # errors stay JSON beside text/plain

    @r.get("/{job_id}/log", response_class=PlainTextResponse, summary="A search job's log",
           responses={200: log_doc, **json_errors})
    async def get_search_log(
        job_id: str = JobId,
        tail: Optional[int] = Query(None, ge=1, le=100_000, description="Only its last lines (default: all)."),
        follow: bool = Query(False, description="Stream what the job's processes write until the job ends."),
    ) -> Response:
        """What the job's `recipe-search run` processes printed (plain text; every server path
        masked): all of it, or its last `tail` lines; with `follow=true` the response streams the
        lines written after it until the job ends."""
        path = await _call(manager.log_file, job_id)
        text, end = await run_in_threadpool(tail_log, path, tail, whole_lines=follow)
        if not follow:
            return PlainTextResponse(redact(text) or "")

        async def stream():
            yield redact(text) or ""
            async for chunk in follow_log(path, end, lambda: manager.running(job_id), redact,
                                          limit_s=manager.cfg.follow_limit_s):
                yield chunk

        return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")


def _control_routes(r: APIRouter, manager: JobManager) -> None:
    redact = manager.redact

    @r.post("/{job_id}/cancel", response_model=SearchJob, status_code=202,
            responses=_responses(401, 404, 409, 503), summary="Cancel a search job")
    async def cancel_search(job_id: str = JobId) -> SearchJob:
        """Cancel a job the way Ctrl-C does (SIGINT to its search's process group): the search saves
        its state and stops (state `stopping`, then `cancelled`); `POST /searches/{id}/resume`
        continues it. Cancelling a cancelled job changes nothing."""
        return _job_model(await _call(manager.cancel, job_id), redact)

    @r.delete("/{job_id}", response_model=SearchJob, status_code=202, responses=_responses(401, 404, 503),
              summary="Delete a search job")
    async def delete_search(job_id: str = JobId) -> SearchJob:
        """Cancel a job if it runs (as `POST /searches/{id}/cancel` does) and take it off this
        server's list: `GET /searches/{id}` answers 404 from then on. Its MLflow runs and its
        searches' saved state stay: `recipe-search run --resume --search-id ID` continues a search
        (the response's `message` names the IDs)."""
        return _job_model(await _call(manager.delete, job_id), redact)

    @r.post("/{job_id}/resume", response_model=SearchJob, status_code=202,
            responses=_responses(401, 404, 409, 429, 503), summary="Resume a search job")
    async def resume_search(job_id: str = JobId) -> SearchJob:
        """Resume a cancelled, interrupted or failed job: each unfinished search continues from its
        saved state (`recipe-search run --resume --search-id`); nothing finished is re-run."""
        return _job_model(await _call(manager.resume, job_id), redact)


def disabled_router(token_env: str = "RECIPE_SEARCH_TOKEN") -> APIRouter:
    """``/searches`` while no token is configured: 404 saying how to enable it (not in the schema)."""
    r = APIRouter()
    detail = (f"search jobs are disabled on this server: start it with ${token_env} set (and "
              "--data-root NAME=PATH for each dataset callers may name) to enable /searches")

    async def disabled(request: Request) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=404)

    for path in ("/searches", "/searches/{rest:path}"):
        r.add_api_route(path, disabled, methods=["GET", "POST", "DELETE", "PUT", "PATCH"], include_in_schema=False)
    return r
