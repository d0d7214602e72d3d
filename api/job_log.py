"""A search job's log as the API serves it (``GET /searches/{id}/log``): its last lines, or a
stream that follows it until the job ends, with every server path masked.

The log (``$RECIPE_SEARCH_HOME/api-searches/<id>.log``) holds what its ``recipe-search run``
processes printed, their command lines included. A client sees none of the server's file
system: :class:`Redactor` replaces the paths the server knows (its home, the data roots, the
tracking store, the package, the Python environment, the temp and home directories) with
names (``$RECIPE_SEARCH_HOME``, ``<data root cifar10>``, ...) and any other absolute path
with ``<path>``; the job's ``message`` and ``error`` go through it too.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import AsyncIterator, Callable, Iterable

# an absolute path not inside a URL or a word (the API's own routes are not paths)
_PATH = re.compile(r"(?<![\w.~$<>#/-])/(?!searches\b|recipes\b)[\w.@+=-]+(?:/[\w.@+=-]*)*")
_LOCAL_URI = re.compile(r"(\b[a-z][\w+.-]*://)/[^\s'\",;?]+")  # sqlite:////abs.db, file:///abs
_BLOCK = 65536


class Redactor:
    """Replaces known server paths with names, then any other absolute path with ``<path>``."""

    def __init__(self, known: Iterable[tuple[str | os.PathLike | None, str]]):
        pairs: dict[str, str] = {}
        for path, name in known:
            if path:
                for p in (str(path), os.path.realpath(path)):
                    if len(p.rstrip("/")) > 1:
                        pairs.setdefault(p.rstrip("/"), name)
        # the longest first (a data root inside the home is named as the data root); whole names only
        self.pairs = [(re.compile(re.escape(p) + r"(?![\w.@+=-])"), name)
                      for p, name in sorted(pairs.items(), key=lambda kv: len(kv[0]), reverse=True)]

    def __call__(self, text: str | None) -> str | None:
        if not text:
            return text
        for rx, name in self.pairs:
            text = rx.sub(lambda _: name, text)
        text = _LOCAL_URI.sub(r"\1<path>", text)
        return _PATH.sub("<path>", text)


def server_redactor(home: Path, data_roots: dict, tracking_uri: str) -> Redactor:
    """The :class:`Redactor` of a job server (``data_roots``: ``{name: DataRoot}``)."""
    from recipe_search import config
    from recipe_search.config import sqlite_path

    known: list[tuple[str | os.PathLike | None, str]] = [
        (home, "$RECIPE_SEARCH_HOME"), (config.ray_storage_dir(), "$RECIPE_SEARCH_STORAGE"),
        (os.environ.get("RECIPE_SEARCH_CACHE"), "$RECIPE_SEARCH_CACHE"),
        (sqlite_path(tracking_uri), "<tracking store>"), (Path(__file__).resolve().parents[1], "<recipe-search>"),
        (sys.prefix, "<python>"), (sys.base_prefix, "<python>"), (tempfile.gettempdir(), "<tmp>"),
        (os.path.expanduser("~"), "~")]
    known += [(root.path, f"<data root {name}>") for name, root in data_roots.items() if root.path]
    return Redactor(known)


def tail(path: Path, lines: int | None, *, whole_lines: bool = False) -> tuple[str, int]:
    """The last ``lines`` lines of ``path`` (all of it for None) and the offset they end at
    (``whole_lines``: before a last line still being written); ``("", 0)`` while there is no log."""
    try:
        with open(path, "rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            pos, data = end, b""
            while pos > 0 and (lines is None or data.count(b"\n") <= lines):
                step = min(_BLOCK, pos)
                pos -= step
                fh.seek(pos)
                data = fh.read(step) + data
    except FileNotFoundError:
        return "", 0
    if whole_lines and data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        end -= len(data) - cut
        data = data[:cut]
    kept = data.splitlines(keepends=True)
    if lines is not None:
        kept = kept[-lines:] if lines else []
    return b"".join(kept).decode(errors="replace"), end


async def follow(path: Path, start: int, active: Callable[[], bool], redact: Redactor, *, poll: float = 0.5,
                 limit_s: float | None = None) -> AsyncIterator[str]:
    """What is appended to ``path`` after offset ``start``, line by line, until the job is no
    longer ``active()`` (then the rest), or for at most ``limit_s`` seconds (then a closing note)."""
    pos, partial = start, b""
    deadline = None if limit_s is None else time.monotonic() + limit_s
    while True:
        running = active()  # before the read: what the job wrote before it ended is read
        try:
            with open(path, "rb") as fh:
                fh.seek(pos)
                chunk = fh.read()
        except FileNotFoundError:
            chunk = b""
        pos += len(chunk)
        partial += chunk
        if b"\n" in partial:
            done, partial = partial.rsplit(b"\n", 1)
            yield redact(done.decode(errors="replace") + "\n")
        if not running:
            if partial:
                yield redact(partial.decode(errors="replace"))
            return
        if deadline is not None and time.monotonic() >= deadline:
            yield f"\n[log: stopped following after {limit_s:g}s; the job still runs: ask again to go on]\n"
            return
        await asyncio.sleep(poll)
