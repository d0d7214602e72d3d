"""A search's state on disk, under ``config.ray_storage_dir()``.

* ``<search id>/`` -- the search stage's Tune experiment, ``recipe_search.json``
  (:data:`META_FILE`: settings, ids, status, stage, the confirmation jobs once chosen,
  the floor), ``progress.log`` and ``.lock`` (:func:`search_lock`);
* ``<search id>-confirm/`` -- the confirmation stage's Tune experiment
  (:data:`CONFIRM_SUFFIX`).

``list_searches`` / ``find_resumable`` read the meta files back for ``--resume``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import secrets
from pathlib import Path
from typing import Iterator

from . import config
from .errors import ResumeError, SearchError
from trainer.locks import LockHeld, file_lock

META_FILE = "recipe_search.json"
CONFIRM_SUFFIX = "-confirm"  # the confirmation stage's Tune experiment: <search id>-confirm


def storage_dir() -> Path:
    return config.ray_storage_dir()


def new_search_id(backbone: str) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{backbone.replace('/', '_')}-{stamp}-{secrets.token_hex(2)}"


def write_meta(path: Path, meta: dict) -> None:
    """Write ``meta`` atomically (a crash leaves the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    os.replace(tmp, path)


def read_meta(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def list_searches() -> list[dict]:
    """Every search with saved state, newest first."""
    root = storage_dir()
    out = []
    if root.is_dir():
        for meta_path in root.glob(f"*/{META_FILE}"):
            meta = read_meta(meta_path)
            if meta:
                meta["dir"] = str(meta_path.parent)
                out.append(meta)
    return sorted(out, key=lambda m: m.get("created", ""), reverse=True)


def find_resumable(backbone: str, experiment: str, search_id: str | None = None) -> dict | None:
    for meta in list_searches():
        if search_id is not None:
            if meta.get("search_id") == search_id:
                return meta
            continue
        if (meta.get("backbone") == backbone and meta.get("experiment") == experiment
                and meta.get("status") != "finished"):
            return meta
    if search_id is not None:
        raise ResumeError(f"no saved search {search_id!r} under {storage_dir()}")
    return None


@contextlib.contextmanager
def search_lock(exp_dir: Path, search_id: str) -> Iterator[None]:
    """One process per search: a lock file in its directory (released by the OS on a crash)."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(exp_dir / ".lock", wait=False, record_pid=True))
        except LockHeld as e:
            raise SearchError(f"search {search_id} is running in another process (pid {e.holder})") from None
        yield
