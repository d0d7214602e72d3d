"""How the API fails: store failures answer 503 with one line; load shedding answers 503 with
Retry-After.

Shared helpers: ``tests/api_support.py``; fixtures (``populated``, ``client``, ``fresh_uri``,
``jobs_home``): ``tests/conftest.py``."""

from __future__ import annotations

import os

import httpx
from fastapi.testclient import TestClient

from api.app import create_app
from recipe_search.store import RecipeStore

from api_support import FP, promote  # tests/ is on sys.path


READ_PATHS = ("/recipes", "/recipes/resnet18", "/recipes/resnet18/trials", "/recipes/resnet18/history",
              "/recipes/resnet18/fingerprints", "/readyz")


def test_missing_store_503(tmp_path):
    db = tmp_path / "nowhere" / "mlflow.db"
    c = TestClient(create_app(f"sqlite:///{db}"), raise_server_exceptions=True)
    for path in READ_PATHS:
        r = c.get(path)
        assert r.status_code == 503, path
        assert r.headers["content-type"] == "application/json" and r.headers["retry-after"] == "5"
        assert r.json()["detail"] == f"no store at {db}: run `recipe-search run` first"
    assert c.get("/healthz").status_code == 200
    assert not db.parent.exists()  # the read-only API never creates a store


def test_corrupt_store_503(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(os.urandom(16384))
    c = TestClient(create_app(f"sqlite:///{db}", cache_ttl=0), raise_server_exceptions=True)
    for path in READ_PATHS:
        r = c.get(path)
        assert r.status_code == 503, path
        assert "corrupt" in r.json()["detail"] and str(db) in r.json()["detail"]
    assert c.get("/healthz").status_code == 200


def test_store_corrupted_while_serving(tmp_path, fresh_uri):
    uri = fresh_uri
    promote(RecipeStore(uri), [0.5])
    c = TestClient(create_app(uri, cache_ttl=0), raise_server_exceptions=True)
    assert c.get("/recipes/resnet18").status_code == 200
    db = tmp_path / "mlflow.db"
    db.write_bytes(os.urandom(db.stat().st_size))
    r = c.get("/recipes/resnet18")
    assert r.status_code == 503 and "corrupt" in r.json()["detail"]


def test_unreachable_tracking_server_503(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    c = TestClient(create_app("http://127.0.0.1:9"), raise_server_exceptions=True)
    r = c.get("/recipes")
    assert r.status_code == 503 and "http://127.0.0.1:9" in r.json()["detail"]


def test_outdated_store_503_one_line(tmp_path, fresh_uri):
    """A store with promotions from before rs.schema 2 (metric probe_top1) is refused, not mixed in."""
    from mlflow.tracking import MlflowClient

    promote(RecipeStore(fresh_uri), [0.5, 0.5])
    c = MlflowClient(fresh_uri)
    exp_id = c.get_experiment_by_name("recipe-store").experiment_id
    run = c.create_run(exp_id, run_name="resnet18/cifar10/small", tags={
        "rs.kind": "promotion", "rs.backbone": "resnet18", "rs.dataset": "cifar10", "rs.budget": "small",
        "rs.state": "current", "rs.recipe": '{"backbone": "resnet18"}', "rs.provenance": "{}"})
    c.log_metric(run.info.run_id, "probe_top1", 0.5)
    c.set_terminated(run.info.run_id, "FINISHED")
    app = TestClient(create_app(fresh_uri, cache_ttl=0), raise_server_exceptions=True)
    for path in (*READ_PATHS, f"/recipes/resnet18?fingerprint={FP}"):
        if path.endswith("/trials"):
            continue  # trial runs are not promotions: the leaderboard is still served
        r = app.get(path)
        assert r.status_code == 503, path
        assert r.headers["content-type"] == "application/json" and "retry-after" not in r.headers
        body = r.json()
        assert body["store"] == fresh_uri and "\n" not in body["detail"]
        assert body["detail"].startswith(f"recipe store {fresh_uri} holds promotions from before metric names said "
                                         "their split (metric probe_top1, no rs.schema tag)")
        assert "start a fresh store" in body["detail"] and str(tmp_path / "mlflow.db") in body["detail"]
    assert app.get("/healthz").status_code == 200


def test_load_shedding_503_with_retry_after():
    """Past max_in_flight requests the app answers 503 + Retry-After at once; /healthz is exempt."""
    import asyncio

    from fastapi import FastAPI

    from api.overload import ConcurrencyLimit

    inner = FastAPI()
    gate = asyncio.Event()

    @inner.get("/slow")
    async def slow() -> dict:
        await gate.wait()
        return {"ok": True}

    @inner.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    app = ConcurrencyLimit(inner, limit=2)

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            held = [asyncio.create_task(http.get("/slow")) for _ in range(2)]
            await asyncio.sleep(0.05)
            extra = await asyncio.gather(http.get("/slow"), http.get("/slow"), http.get("/healthz"))
            gate.set()
            return [*(await asyncio.gather(*held)), *extra]

    a, b, shed1, shed2, health = asyncio.run(main())
    assert (a.status_code, b.status_code, health.status_code) == (200, 200, 200)
    for r in (shed1, shed2):
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.headers["content-type"] == "application/json" and "overloaded" in r.json()["detail"]
    assert app.shed == 2 and app.in_flight == 0
