"""Integration tests need real services (PostgreSQL, an MLflow server, a Ray head node) and
minutes: they are skipped unless RECIPE_SEARCH_INTEGRATION=1, which ``.ci/integration`` sets
after installing PostgreSQL and the ``integration`` extra."""

from __future__ import annotations

import contextlib
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


class Upstream(dict):
    """What an earlier test of the module leaves for the tests after it (``state["search_id"]``),
    and why it left nothing. A test that needs a value an earlier one failed to produce fails
    with that upstream error (never a skip: a broken search must turn CI red in every test that
    depends on it, each saying why)."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: dict[str, str] = {}

    @contextlib.contextmanager
    def producing(self, *keys: str):
        """Run the block that sets ``keys``; an exception in it is recorded as their upstream error."""
        try:
            yield self
        except BaseException as e:  # noqa: BLE001 - recorded, then raised again
            for key in keys:
                self.errors[key] = f"{type(e).__name__}: {str(e)[-3000:]}"
            raise

    def need(self, key: str):
        """The value an earlier test produced under ``key``; fails with the reason it is missing."""
        if key in self:
            return self[key]
        why = self.errors.get(key, "did not run (select it together with this test)")
        pytest.fail(f"needs {key!r} from an earlier test, which {'failed: ' + why if key in self.errors else why}",
                    pytrace=False)


@pytest.fixture(scope="module")
def state() -> Upstream:
    return Upstream()
