"""Where recipe-search keeps its state by default: one home directory.

``$RECIPE_SEARCH_HOME`` (default ``./.recipe_search``) holds the embedded MLflow
store (``mlflow.db``, SQLite), its artifacts (``artifacts/``) and Ray Tune's
experiment directories (``ray/``). ``--tracking-uri`` points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

STORE_EXPERIMENT = "recipe-store"


def home() -> Path:
    return Path(os.environ.get("RECIPE_SEARCH_HOME", ".recipe_search")).resolve()


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def default_artifact_root() -> str:
    return (home() / "artifacts").as_uri()


def ray_storage_dir() -> Path:
    return home() / "ray"
