"""Integration tests need real services (PostgreSQL, an MLflow server, a Ray head node) and
minutes: they are skipped unless RECIPE_SEARCH_INTEGRATION=1, which ``.ci/integration`` sets
after installing PostgreSQL and the ``integration`` extra."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RECIPE_SEARCH_INTEGRATION") == "1":
        return
    skip = pytest.mark.skip(reason="integration test: run .ci/integration (sets RECIPE_SEARCH_INTEGRATION=1)")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents or "integration" in item.keywords:
            item.add_marker(skip)
