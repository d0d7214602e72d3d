"""Where recipe-search keeps its state by default: one home directory.

``$RECIPE_SEARCH_HOME`` (default ``./.recipe_search``) holds the embedded MLflow
store (``mlflow.db``, SQLite), its artifacts (``artifacts/``) and Ray Tune's
experiment directories (``ray/``). ``--tracking-uri`` points elsewhere, and
``$RECIPE_SEARCH_STORAGE`` (``--storage-path``) moves Ray Tune's directories.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import SearchError

REPO_ROOT = Path(__file__).resolve().parent.parent  # a git checkout: search_spaces/, the code version
STORE_EXPERIMENT = "recipe-store"
STORAGE_ENV = "RECIPE_SEARCH_STORAGE"


def home() -> Path:
    return Path(os.environ.get("RECIPE_SEARCH_HOME", ".recipe_search")).resolve()


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def default_artifact_root() -> str:
    return (home() / "artifacts").as_uri()


def ray_storage_dir() -> Path:
    """Ray Tune's storage (experiment state and trial checkpoints): ``$RECIPE_SEARCH_STORAGE``
    (``--storage-path``) or ``$RECIPE_SEARCH_HOME/ray``. On a multi-node Ray cluster it must be
    a shared filesystem mounted at the same path on every node."""
    where = os.environ.get(STORAGE_ENV)
    return storage_path(where) if where else home() / "ray"


def storage_path(where: str) -> Path:
    """``--storage-path`` as an absolute directory; a URI is refused."""
    if "://" in where:
        raise SearchError(f"--storage-path {where!r}: give a directory on a shared filesystem mounted at "
                          "the same path on every node (cloud URIs are not supported)")
    return Path(where).expanduser().resolve()


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
        if db == (home() / "mlflow.db"):
            return default_artifact_root()
        return (db.parent / "artifacts").as_uri()
    if tracking_uri.startswith("sqlite:") or _is_local_file_store(tracking_uri):
        return default_artifact_root()
    return None
