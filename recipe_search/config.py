"""Where recipe-search keeps its state by default: one home directory.

``$RECIPE_SEARCH_HOME`` (default ``./.recipe_search``) holds the embedded MLflow
store (``mlflow.db``, SQLite), its artifacts (``artifacts/``) and Ray Tune's
experiment directories (``ray/``). ``--tracking-uri`` points elsewhere, and
``$RECIPE_SEARCH_STORAGE`` (``--storage-path``) moves Ray Tune's directories.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import SearchError

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
