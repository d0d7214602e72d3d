"""The app's error answers: every error is a JSON ``ErrorBody``, never a traceback.

``install(app, display_uri)`` registers the handlers: ``HTTPError`` and Starlette's HTTP
exceptions (a 405 names every method of the path in ``Allow``), ``StoreUnavailable`` (503, with
``Retry-After`` unless the store is outdated) and any other exception (500; the traceback goes
to the server's log).
"""

from __future__ import annotations

import logging
import re
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from recipe_search.store import StoreUnavailable

from .models import ErrorBody
from .views import JSON, unavailable

log = logging.getLogger("api")


class HTTPError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.detail, self.headers = status, detail, headers


def _methods_by_path(app: FastAPI) -> Callable[[str], set[str]]:
    """``allow_for(path)``: every documented method on ``path`` (included routers are not flat
    routes any more), read from the OpenAPI schema on first use."""
    allowed: list[tuple[re.Pattern, set[str]]] = []

    def allow_for(path: str) -> set[str]:
        if not allowed:
            for template, ops in app.openapi().get("paths", {}).items():
                rx = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
                allowed.append((rx, {m.upper() for m in ops}))
        return set().union(*[m for rx, m in allowed if rx.match(path)])

    return allow_for


def install(app: FastAPI, display_uri: str) -> None:
    """Register the error handlers on ``app`` (``display_uri``: the store as a 503 names it)."""
    allow_for = _methods_by_path(app)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> Response:
        body = ErrorBody(detail=exc.detail).model_dump_json(exclude_none=True)
        return Response(body, status_code=exc.status, media_type=JSON, headers=exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(request: Request, exc: StoreUnavailable) -> Response:
        r = unavailable(exc, display_uri)
        return Response(r.body, status_code=503, media_type=JSON, headers=dict(r.headers))

    @app.exception_handler(StarletteHTTPException)
    async def _http_exception(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Allow: every method of the path, not only the first route's
            methods = allow_for(request.url.path)
            if methods:
                headers["Allow"] = ", ".join(sorted(methods))
        body = ErrorBody(detail=str(exc.detail)).model_dump_json(exclude_none=True)
        return Response(body, status_code=exc.status_code, media_type=JSON, headers=headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        # the traceback goes to the server's log, never to the client
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        body = ErrorBody(detail=f"internal error ({type(exc).__name__}); the server log has the details")
        return Response(body.model_dump_json(exclude_none=True), status_code=500, media_type=JSON)
