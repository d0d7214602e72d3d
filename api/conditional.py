"""Cached, conditional reads: one response path for every read endpoint.

:func:`respond` serves a rendered response from the TTL cache (computing it once per key in a
worker thread on a miss), adds ``ETag`` and ``Cache-Control``, and answers ``304 Not Modified``
when ``If-None-Match`` matches (weak comparison, as RFC 9110 asks for it).

>>> etag_matches('W/"a", "b"', '"a"'), etag_matches(None, '"a"'), etag_matches("*", '"x"')
(True, False, True)
"""

from __future__ import annotations

from typing import Callable, Protocol

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from .cache import TTLCache


class Cacheable(Protocol):
    status: int
    body: bytes
    etag: str | None
    headers: tuple[tuple[str, str], ...]


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header matches ``etag`` (``W/`` prefixes ignored)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    tags = [t.strip() for t in header.split(",")]
    return any((t[2:] if t.startswith("W/") else t) == etag for t in tags)


async def respond(request: Request, cache: TTLCache, key: tuple, compute: Callable[[], Cacheable], *,
                  max_age: int, media_type: str) -> Response:
    """The cached rendering of ``key`` (``compute`` on a miss) as a response, 304 when the client has it;
    ``media_type`` unless the rendering has its own ``media_type``."""
    rendered = cache.peek(key)
    if rendered is None:
        rendered = await run_in_threadpool(cache.get_or_compute, key, compute)
    headers = dict(rendered.headers)
    if rendered.etag is not None:
        headers["ETag"] = rendered.etag
        headers["Cache-Control"] = f"max-age={max_age}"
        if etag_matches(request.headers.get("if-none-match"), rendered.etag):
            return Response(status_code=304, headers=headers)
    media_type = getattr(rendered, "media_type", None) or media_type  # a rendering may say its own
    return Response(rendered.body, status_code=rendered.status, media_type=media_type, headers=headers)
