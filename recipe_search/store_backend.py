"""Where the recipe store lives: tracking URIs, the SQLite file check, and the store's errors.

:func:`sqlite_path` and :func:`artifact_root_for` read a tracking URI; :func:`check_sqlite_file`
fails fast (one line) on a missing or corrupt SQLite file, where MLflow would retry for minutes;
:class:`StoreUnavailable` / :class:`StoreOutdated` are what every store read or write raises.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlparse

from . import config

_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreUnavailable(Exception):
    """The store cannot be reached or read; the message names the URI and the reason."""


class StoreOutdated(StoreUnavailable):
    """The store holds promotions of another schema (from before schema 2, :data:`records.SCHEMA`);
    the message (one line) says how to start a fresh store."""



def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for other stores / in-memory."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    rest = tracking_uri[len("sqlite:") :]
    if not rest.startswith("///"):
        return None
    path = unquote(rest[3:].split("?", 1)[0])
    if path in ("", ":memory:"):
        return None
    return Path(path).resolve()


def _is_local_file_store(tracking_uri: str) -> bool:
    scheme = urlparse(tracking_uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1)  # "" / file: / windows drive


def artifact_root_for(tracking_uri: str) -> str | None:
    """Artifact location for new experiments in a local (SQLite/file) store, else None.

    For SQLite it is ``artifacts/`` next to the database file, which for the default
    URI is exactly :func:`config.default_artifact_root`; servers choose their own.
    """
    db = sqlite_path(tracking_uri)
    if db is not None:
        if db == (config.home() / "mlflow.db"):
            return config.default_artifact_root()
        return (db.parent / "artifacts").as_uri()
    if tracking_uri.startswith("sqlite:") or _is_local_file_store(tracking_uri):
        return config.default_artifact_root()
    return None


def redact(uri: str) -> str:
    """Hide a password in ``scheme://user:pass@host`` URIs."""
    return re.sub(r"(://[^:/@]+:)[^@/]+@", r"\1***@", uri)


_checked: dict[Path, tuple] = {}  # path -> stat signature of the last file that passed


def check_sqlite_file(path: Path, uri: str, *, must_exist: bool) -> None:
    """Fail fast on a missing or corrupt SQLite file (MLflow would retry for minutes).

    The full check (open it with sqlite3) runs again only when the file changed."""
    try:
        st = path.stat()
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        sig = None
    if sig is not None and _checked.get(path) == sig:
        return
    _checked.pop(path, None)
    if not path.exists():
        if must_exist:
            raise StoreUnavailable(f"no store at {path}: run `recipe-search run` first")
        return
    if path.is_dir():
        raise StoreUnavailable(f"store at {path} is a directory, not an SQLite database ({uri})")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise StoreUnavailable(f"cannot read store at {path}: {e.strerror}") from None
    if not head:
        if must_exist:
            raise StoreUnavailable(f"no store at {path} (empty file): run `recipe-search run` first")
        return
    if head != _SQLITE_MAGIC:
        raise StoreUnavailable(f"store at {path} is corrupt: not an SQLite database ({uri})")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=20)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise StoreUnavailable(f"store at {path} is corrupt: {e} ({uri})") from None
    if sig is not None:
        _checked[path] = sig



def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    return msg[:500]

