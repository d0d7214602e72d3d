"""Where the recipe store lives: tracking URIs, the SQLite file check, and the store's errors.

:func:`check_sqlite_file`
fails fast (one line) on a missing or corrupt SQLite file, where MLflow would retry for minutes;
:class:`StoreUnavailable` / :class:`StoreOutdated` are what every store read or write raises.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from ..config import artifact_root_for

_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreUnavailable(Exception):
    """The store cannot be reached or read; the message names the URI and the reason."""


class StoreOutdated(StoreUnavailable):
    """The store holds promotions of another schema (from before schema 2, :data:`records.SCHEMA`);
    the message (one line) says how to start a fresh store."""



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



def sqlite_signature(db: Path | None) -> tuple | None:
    """What changes when a local SQLite store is written (the file and its WAL); None: not local."""
    if db is None:
        return None
    try:
        st = db.stat()
    except OSError:
        return None
    wal = db.with_name(db.name + "-wal")
    wal_sig = (wal.stat().st_mtime_ns, wal.stat().st_size) if wal.exists() else None
    return (st.st_ino, st.st_size, st.st_mtime_ns, wal_sig)


def outdated_error(run, display_uri: str, db: Path | None, experiment: str) -> StoreOutdated:
    """The error for a store whose promotion ``run`` is of another schema, with how to start afresh."""
    from .. import records

    schema = records.Promotion.state_of(run.data.tags)[1]
    tags = run.data.tags
    what = (f"promotion run {run.info.run_id} ({tags.get(records.TAG_BACKBONE, '?')}/"
            f"{tags.get(records.TAG_DATASET, '?')})")
    if db is not None:
        fresh = f"move {db} aside, or point RECIPE_SEARCH_HOME or --tracking-uri at a new place"
    else:
        fresh = (f"point --tracking-uri or MLFLOW_TRACKING_URI at a new store, or delete the "
                 f"experiment {experiment!r} there")
    if schema is None:
        found = f"from before metric names said their split (metric probe_top1, no {records.TAG_SCHEMA} tag)"
    else:
        found = f"of another schema ({records.TAG_SCHEMA} {schema!r}; this recipe-search reads {records.SCHEMA!r})"
    return StoreOutdated(f"recipe store {display_uri} holds promotions {found}, e.g. {what}; start a fresh "
                         f"store ({fresh}) and re-run the searches")


def unavailable_error(exc: BaseException, db: Path | None, display_uri: str) -> StoreUnavailable:
    """What an MLflow/SQLAlchemy error means for the store: corrupt, not an MLflow database, or unreachable."""
    msg = describe(exc)
    low = msg.lower()
    where = str(db) if db is not None else display_uri
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return StoreUnavailable(f"store at {where} is corrupt: {msg}")
    if "no such table" in low or "out-of-date database schema" in low:
        return StoreUnavailable(f"store at {where} is not a usable MLflow database: {msg}")
    return StoreUnavailable(f"recipe store {display_uri} unavailable: {msg}")


def store_experiment(client, name: str, tracking_uri: str, *, create: bool) -> str | None:
    """The store experiment's id: restored when deleted and created when missing (``create``), else
    None. Created with the store's artifact root and kind tag; a concurrent creator wins quietly."""
    from mlflow.exceptions import MlflowException

    from .. import records

    exp = client.get_experiment_by_name(name)
    if exp is not None and exp.lifecycle_stage != "active":
        if not create:
            return None
        client.restore_experiment(exp.experiment_id)
    if exp is not None:
        return exp.experiment_id
    if not create:
        return None
    try:
        return client.create_experiment(name, artifact_location=artifact_root_for(tracking_uri),
                                        tags={records.TAG_KIND: records.STORE_EXPERIMENT})
    except MlflowException:  # created concurrently by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id
