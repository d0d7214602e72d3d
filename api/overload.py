"""Load shedding: answer 503 with ``Retry-After`` when too many requests are in flight.

A pure ASGI middleware counts the HTTP requests the app is working on. Past
``limit`` a new request is answered at once with ``503`` and a one-line JSON body
instead of queueing behind the others (where it would time out, or be dropped
with its connection). Liveness (``/healthz`` by default) is never shed: an
overloaded server is still alive. uvicorn's own ``limit_concurrency`` (see
``api/server.py``) stays a looser backstop above this one.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ConcurrencyLimit:
    """At most ``limit`` HTTP requests in flight; the next ones get 503 + ``Retry-After``."""

    def __init__(self, app: ASGIApp, limit: int = 64, retry_after: int = 1,
                 exempt: tuple[str, ...] = ("/healthz",)) -> None:
        self.app = app
        self.limit = int(limit)
        self.retry_after = int(retry_after)
        self.exempt = frozenset(exempt)
        self.in_flight = 0
        self.shed = 0  # how many requests were answered 503 (for tests and logs)
        self._lock = threading.Lock()
        self._body = json.dumps({
            "detail": f"server overloaded: {self.limit} requests already in flight; retry after "
                      f"{self.retry_after} s"}).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0 or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        with self._lock:
            admitted = self.in_flight < self.limit
            if admitted:
                self.in_flight += 1
            else:
                self.shed += 1
        if not admitted:
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(self._body)).encode()),
                (b"retry-after", str(self.retry_after).encode())]})
            await send({"type": "http.response.body", "body": self._body})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self.in_flight -= 1
