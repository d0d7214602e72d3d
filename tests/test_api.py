"""The HTTP API over a real MLflow SQLite store (TestClient, a uvicorn subprocess, schemathesis)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.cache import TTLCache
from recipe_search.stats import paired_interval, summary
from recipe_search.store import RecipeStore

ROOT = Path(__file__).resolve().parents[1]
FP = "0123456789abcdef"
FP2 = "fedcba9876543210"
FP3 = "00000000000000aa"


def recipe(backbone: str = "resnet18", **kw) -> dict:
    return {"backbone": backbone, **kw}


def prov(values, verdict: str = "better_than_baselines", fp: str = FP, **extra) -> dict:
    """Provenance shaped like the lead's promotion code writes it (see the contract)."""
    floor = [v - 0.2 for v in values]
    moco = [v - 0.05 for v in values]
    lift = paired_interval(values, moco).to_dict()
    return {
        "fingerprint": {"digest": fp, "data_digest": "ab" * 32, "image_size": 32, "classes": 10,
                        "train_per_class": 100, "val_per_class": 20, "test_per_class": 50, "epochs": 4,
                        "budget": "small"},
        "verdict": {"verdict": verdict, "line": f"{verdict} (test_probe_top1 {summary(values).fmt(3)})",
                    "metric": "test_probe_top1", "seeds": list(range(len(values))), "winner": "tpe",
                    "score": summary(values).to_dict(), "floor": summary(floor).to_dict(),
                    "baselines": {"mocov2": summary(moco).to_dict()},
                    "lift": {"mocov2": lift, "best_baseline": lift, "floor": paired_interval(values, floor).to_dict()}},
        **extra,
    }


def promote(store: RecipeStore, values, *, backbone="resnet18", dataset="cifar10", fp=FP, budget="small",
            rec=None, metrics=None, verdict="better_than_baselines", source_run_id=None, **extra):
    mean = summary(values).mean
    return store.promote(backbone, dataset, fp, rec or recipe(backbone), {"test_probe_top1": mean, **(metrics or {})},
                         prov(values, verdict, fp, **extra), scores=values, budget=budget,
                         source_run_id=source_run_id)


def add_search(uri: str, backbone: str, trials: list[dict | None],
               stages: dict[int, str] | None = None) -> tuple[str, list[str]]:
    """Log a search the way recipe_search does: a parent run (rs.kind=search) with trial
    child runs (rs.kind=trial, rs.backbone, rs.search_id). None -> a failed trial."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    name = f"search-{backbone}"
    exp = c.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else c.create_experiment(name, artifact_location=(Path(uri[10:]).parent / "a").as_uri())
    parent = c.create_run(exp_id, run_name="search", tags={"rs.kind": "search", "rs.backbone": backbone})
    ids = []
    for i, m in enumerate(trials):
        tags = {"rs.kind": "trial", "rs.backbone": backbone, "rs.search_id": parent.info.run_id,
                "mlflow.parentRunId": parent.info.run_id}
        if (stages or {}).get(i):
            tags["rs.stage"] = stages[i]
        run = c.create_run(exp_id, run_name=f"trial-{i}", tags=tags)
        rid = run.info.run_id
        c.log_param(rid, "lr", str(0.01 * (i + 1)))
        c.log_param(rid, "optimizer", "sgd")
        c.log_param(rid, "data.dataset", "cifar10")
        if m is None:
            c.set_terminated(rid, "FAILED")
        else:
            for k, v in m.items():
                c.log_metric(rid, k, v)
            c.set_terminated(rid, "FINISHED")
        ids.append(rid)
    c.set_terminated(parent.info.run_id, "FINISHED")
    return parent.info.run_id, ids


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    """An MLflow SQLite database with its tables created once (migrations take seconds)."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    RecipeStore(f"sqlite:///{db}").ping()
    return db


@pytest.fixture()
def fresh_uri(tmp_path, empty_db) -> str:
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="module")
def populated(tmp_path_factory, empty_db) -> dict:
    """A store with two backbones (resnet18 on two datasets, cifar10 under two fingerprints,
    one of them with a superseded promotion) and a search with four resnet18 trials (one a
    confirmation trial) plus one other-backbone trial."""
    d = tmp_path_factory.mktemp("populated")
    shutil.copy(empty_db, d / "mlflow.db")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    s = RecipeStore(uri)
    promote(s, [0.50, 0.49, 0.51], rec=recipe(lr=0.1), metrics={"test_knn_top1": 0.45}, search_id="s0",
            source_run_id="t0")
    promote(s, [0.60, 0.59, 0.61], rec=recipe(lr=0.2), metrics={"test_knn_top1": 0.55, "val_knn_top1": 0.5},
            search_id="s1", source_run_id="t1")
    promote(s, [0.30, 0.31, 0.32], fp=FP3, budget="proxy", rec=recipe(lr=0.25), verdict="no_significant_lift")
    promote(s, [0.40, 0.41, 0.42], dataset="stl10", fp=FP2, rec=recipe(lr=0.3), verdict="below_floor")
    promote(s, [0.35, 0.34, 0.36], backbone="mobilenetv3_small_100")
    search_id, trial_ids = add_search(uri, "resnet18", [
        {"val_knn_top1": 0.25}, {"val_knn_top1": 0.5, "test_probe_top1": 0.6, "test_knn_top1": 0.55}, None,
        {"val_knn_top1": 0.4, "loss": float("nan")}], stages={1: "confirmation"})
    add_search(uri, "efficientnet_b0", [{"val_knn_top1": 0.9}])
    return {"uri": uri, "store": s, "search_id": search_id, "trial_ids": trial_ids}


@pytest.fixture(scope="module")
def client(populated) -> TestClient:
    return TestClient(create_app(populated["uri"]))


# ---------------------------------------------------------------- read endpoints


def test_list_recipes(client):
    r = client.get("/recipes")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    rows = r.json()
    assert [(x["backbone"], x["dataset"], x["fingerprint"]) for x in rows] == [
        ("mobilenetv3_small_100", "cifar10", FP), ("resnet18", "cifar10", FP3), ("resnet18", "cifar10", FP),
        ("resnet18", "stl10", FP2)]
    assert set(rows[0]) == {"backbone", "dataset", "fingerprint", "budget", "verdict", "test_probe_top1",
                            "updated_at", "run_id"}
    cifar = rows[2]
    assert cifar["test_probe_top1"] == {"mean": pytest.approx(0.6), "std": pytest.approx(0.01), "n": 3,
                                        "values": [0.60, 0.59, 0.61]}
    assert cifar["budget"] == "small" and cifar["verdict"] == "better_than_baselines"
    assert (rows[1]["budget"], rows[1]["verdict"]) == ("proxy", "no_significant_lift")


def test_get_recipe(client, populated):
    r = client.get("/recipes/resnet18")  # most recently promoted: stl10
    assert r.status_code == 200
    body = r.json()
    assert body["dataset"] == "stl10" and body["fingerprint"] == FP2 and body["recipe"]["lr"] == 0.3
    assert body["verdict"]["verdict"] == "below_floor"
    r = client.get("/recipes/resnet18", params={"dataset": "cifar10"})  # newest on cifar10: FP3
    assert r.json()["fingerprint"] == FP3 and r.json()["budget"] == "proxy"
    r = client.get("/recipes/resnet18", params={"dataset": "cifar10", "fingerprint": FP})
    body = r.json()
    assert body["recipe"]["lr"] == 0.2 and body["recipe"]["backbone"] == "resnet18"
    assert body["fingerprint"] == FP and body["budget"] == "small"
    assert body["test_probe_top1"]["mean"] == pytest.approx(0.6) and body["test_probe_top1"]["values"] == [
        0.60, 0.59, 0.61]
    assert body["metrics"] == {"test_probe_top1": pytest.approx(0.6), "test_knn_top1": 0.55, "val_knn_top1": 0.5}
    assert body["provenance"]["search_id"] == "s1" and body["source_run_id"] == "t1"
    assert body["state"] == "current"
    link = body["mlflow"]
    assert link["run_id"] == body["run_id"] and link["url"] is None
    assert link["experiment_id"] == populated["store"].experiment_id
    assert f"mlflow ui --backend-store-uri '{populated['uri']}'" in link["hint"]
    assert f"/#/experiments/{link['experiment_id']}/runs/{body['run_id']}" in link["hint"]
    # the fingerprint alone picks it too, and upper-case hex is the same fingerprint
    assert client.get("/recipes/resnet18", params={"fingerprint": FP.upper()}).json()["run_id"] == body["run_id"]


def test_recipe_verdict_interval_and_floor(client):
    body = client.get(f"/recipes/resnet18?fingerprint={FP}").json()
    v = body["verdict"]
    assert v["verdict"] == "better_than_baselines" and v["line"].startswith("better_than_baselines (test_probe_top1")
    assert v["metric"] == "test_probe_top1" and v["seeds"] == [0, 1, 2] and v["winner"] == "tpe"
    assert v["score"]["values"] == [0.60, 0.59, 0.61] and v["score"]["n"] == 3
    assert v["floor"]["mean"] == pytest.approx(0.4) and v["floor"]["values"] == pytest.approx([0.40, 0.39, 0.41])
    assert v["baselines"]["mocov2"]["mean"] == pytest.approx(0.55)
    assert set(v["lift"]) == {"mocov2", "best_baseline", "floor"}
    lift = v["lift"]["best_baseline"]
    assert lift["mean"] == pytest.approx(0.05) and lift["low"] <= lift["mean"] <= lift["high"]
    assert lift["n"] == 3 and lift["method"] == "paired t interval over seeds (95%)"
    assert v["lift"]["floor"]["low"] > 0
    assert body["proxy"]["digest"] == FP and body["proxy"]["test_per_class"] == 50
    assert body["proxy"]["data_digest"] == "ab" * 32


def test_fingerprints_endpoint(client):
    r = client.get("/recipes/resnet18/fingerprints")
    assert r.status_code == 200
    rows = r.json()
    assert [(x["fingerprint"], x["dataset"], x["budget"], x["verdict"]) for x in rows] == [
        (FP2, "stl10", "small", "below_floor"), (FP3, "cifar10", "proxy", "no_significant_lift"),
        (FP, "cifar10", "small", "better_than_baselines")]  # newest first
    assert [round(x["test_probe_top1"]["mean"], 3) for x in rows] == [0.41, 0.31, 0.6]
    assert [x["updated_at"] for x in rows] == sorted((x["updated_at"] for x in rows), reverse=True)
    assert all(x["backbone"] == "resnet18" for x in rows)
    cifar = client.get("/recipes/resnet18/fingerprints", params={"dataset": "cifar10"}).json()
    assert [x["fingerprint"] for x in cifar] == [FP3, FP]
    r = client.get("/recipes/resnet18/fingerprints", params={"dataset": "imagenet"})
    assert r.status_code == 404 and "imagenet" in r.json()["detail"]
    assert sorted(r.json()["known_fingerprints"]) == sorted([FP, FP2, FP3])
    r = client.get("/recipes/resnet99/fingerprints")
    assert r.status_code == 404 and r.json()["detail"] == "unknown backbone 'resnet99'"


def test_unknown_backbone_or_fingerprint_404(client):
    r = client.get("/recipes/resnet99")
    assert r.status_code == 404
    assert r.json() == {"detail": "unknown backbone 'resnet99'",
                        "known_backbones": ["mobilenetv3_small_100", "resnet18"]}
    r = client.get("/recipes/resnet18", params={"dataset": "imagenet"})
    assert r.status_code == 404 and "imagenet" in r.json()["detail"]
    r = client.get("/recipes/resnet18", params={"fingerprint": "ffffffffffffffff"})
    assert r.status_code == 404
    assert r.json()["detail"] == "backbone 'resnet18' has no current recipe with fingerprint 'ffffffffffffffff'"
    assert sorted(r.json()["known_fingerprints"]) == sorted([FP, FP2, FP3])
    r = client.get("/recipes/resnet18", params={"fingerprint": FP2, "dataset": "cifar10"})  # FP2 is stl10's
    assert r.status_code == 404 and "on dataset 'cifar10'" in r.json()["detail"]
    r = client.get("/recipes/resnet18", params={"fingerprint": "small"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "fingerprint"]
    for path in ("/recipes/resnet99/history", "/recipes/resnet99/trials", "/recipes/it's%20bad/trials"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.json()["known_backbones"] == ["mobilenetv3_small_100", "resnet18"]


def test_trials_leaderboard(client, populated):
    r = client.get("/recipes/resnet18/trials")
    assert r.status_code == 200
    rows = r.json()
    ids = populated["trial_ids"]
    assert [t["run_id"] for t in rows] == [ids[1], ids[3], ids[0], ids[2]]  # failed (no metric) last
    assert [t["val_knn_top1"] for t in rows] == [0.5, 0.4, 0.25, None]
    assert [t["stage"] for t in rows] == ["confirmation", "search", "search", "search"]
    assert rows[0]["test_probe_top1"] == 0.6 and rows[0]["test_knn_top1"] == 0.55 and rows[0]["status"] == "FINISHED"
    assert rows[1]["test_probe_top1"] is None and rows[1]["test_knn_top1"] is None  # search trials: no test metrics
    assert not any(k in rows[0] for k in ("probe_top1", "knn_top1"))  # every metric name says its split
    assert rows[-1]["status"] == "FAILED"
    assert rows[0]["params"] == {"lr": "0.02", "optimizer": "sgd"}  # key params only
    assert rows[0]["search_id"] == populated["search_id"]
    assert rows[0]["mlflow"]["run_id"] == ids[1] and rows[0]["start_time"].endswith("Z")
    assert [t["run_id"] for t in client.get("/recipes/resnet18/trials?limit=2").json()] == ids[1:2] + ids[3:4]
    # trials of a backbone that has no recipe yet (search still running) are served
    other = client.get("/recipes/efficientnet_b0/trials").json()
    assert len(other) == 1 and other[0]["val_knn_top1"] == 0.9
    # a backbone with a recipe but no trials: empty leaderboard
    assert client.get("/recipes/mobilenetv3_small_100/trials").json() == []


@pytest.mark.parametrize("limit", ["0", "1001", "-3", "abc", "2.5"])
def test_trials_bad_limit_422(client, limit):
    r = client.get(f"/recipes/resnet18/trials?limit={limit}")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "limit"]


def test_history(client):
    r = client.get("/recipes/resnet18/history")
    assert r.status_code == 200
    rows = r.json()
    assert [(h["dataset"], h["fingerprint"], h["state"], round(h["test_probe_top1"]["mean"], 3)) for h in rows] == [
        ("stl10", FP2, "current", 0.41), ("cifar10", FP3, "current", 0.31), ("cifar10", FP, "current", 0.6),
        ("cifar10", FP, "superseded", 0.5)]
    assert rows[3]["recipe"]["lr"] == 0.1 and rows[0]["verdict"] == "below_floor"
    assert [h["updated_at"] for h in rows] == sorted((h["updated_at"] for h in rows), reverse=True)


def test_health_and_ready(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready" and r.json()["recipes"] == 4


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    assert {"/recipes", "/recipes/{backbone}", "/recipes/{backbone}/trials", "/recipes/{backbone}/fingerprints",
            "/recipes/{backbone}/history", "/healthz", "/readyz", "/searches"} <= set(spec["paths"])
    params = {p["name"] for p in spec["paths"]["/recipes/{backbone}"]["get"]["parameters"]}
    assert params == {"backbone", "dataset", "fingerprint"}
    assert "RecipeDetail" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


# ---------------------------------------------------------------- ETag / caching


def test_etag_and_304(client):
    for path in ("/recipes", "/recipes/resnet18", "/recipes/resnet18/trials", "/recipes/resnet18/history",
                 f"/recipes/resnet18?fingerprint={FP}", "/recipes/resnet18/fingerprints", "/healthz", "/readyz"):
        r = client.get(path)
        etag = r.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
        assert client.get(path).headers["etag"] == etag  # stable
        r304 = client.get(path, headers={"If-None-Match": etag})
        assert r304.status_code == 304 and r304.content == b"" and r304.headers["etag"] == etag
        assert client.get(path, headers={"If-None-Match": f'"x", W/{etag}'}).status_code == 304
        assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    assert "etag" not in client.get("/recipes/resnet99").headers  # errors carry none


def test_update_visible_after_ttl(tmp_path, fresh_uri):
    uri = fresh_uri
    store = RecipeStore(uri)
    promote(store, [0.5, 0.5, 0.5], rec=recipe(lr=0.1))
    ttl = 0.75
    c = TestClient(create_app(uri, cache_ttl=ttl))
    first = c.get("/recipes/resnet18")
    etag = first.headers["etag"]
    assert first.json()["test_probe_top1"]["mean"] == 0.5 and first.headers["cache-control"] == "max-age=0"
    # a writer in another "process" (its own store object) promotes a better recipe
    promote(RecipeStore(uri), [0.7, 0.7, 0.7], rec=recipe(lr=0.2))
    t0 = time.monotonic()
    assert c.get("/recipes/resnet18").json()["test_probe_top1"]["mean"] == 0.5  # still cached
    time.sleep(max(0.0, ttl - (time.monotonic() - t0)) + 0.1)
    r = c.get("/recipes/resnet18", headers={"If-None-Match": etag})
    assert r.status_code == 200 and r.json()["test_probe_top1"]["mean"] == pytest.approx(0.7) and r.headers["etag"] != etag
    assert c.get("/recipes").json()[0]["test_probe_top1"]["mean"] == pytest.approx(0.7)


def test_cache_single_flight_and_ttl():
    cache: TTLCache[str] = TTLCache(0.3)
    calls = []

    def slow() -> str:
        calls.append(1)
        time.sleep(0.2)
        return "v"

    threads = [threading.Thread(target=cache.get_or_compute, args=("k", slow)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and cache.peek("k") == "v"
    time.sleep(0.35)
    assert cache.peek("k") is None
    off: TTLCache[str] = TTLCache(0)
    off.get_or_compute("k", slow)
    off.get_or_compute("k", slow)
    assert len(calls) == 3
    small: TTLCache[int] = TTLCache(10, max_entries=3)
    for i in range(5):
        small.get_or_compute(i, lambda i=i: i)
    assert small.peek(0) is None and small.peek(4) == 4


# ---------------------------------------------------------------- store failures -> 503

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


# ---------------------------------------------------------------- security


def test_write_endpoints_need_token(populated, monkeypatch, tmp_path):
    monkeypatch.setenv("RECIPE_SEARCH_HOME", str(tmp_path))
    monkeypatch.delenv("RECIPE_SEARCH_TOKEN", raising=False)
    cmd = [sys.executable, "-c", "import os, sys; print('args', sys.argv[1:], os.environ['MLFLOW_TRACKING_URI'])"]
    c = TestClient(create_app(populated["uri"], search_command=cmd))
    r = c.post("/searches", json={"args": ["--budget", "small"]})
    assert r.status_code == 403 and "RECIPE_SEARCH_TOKEN" in r.json()["detail"]
    monkeypatch.setenv("RECIPE_SEARCH_TOKEN", "s3cret")
    assert c.post("/searches", json={"args": []}).status_code == 401
    r = c.post("/searches", json={"args": []}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    auth = {"Authorization": "Bearer s3cret"}
    assert c.post("/searches", json={"args": ["a\x00b"]}, headers=auth).status_code == 422
    r = c.post("/searches", json={"args": ["--budget", "small"]}, headers=auth)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["command"][-2:] == ["--budget", "small"] and job["pid"] > 0
    for _ in range(100):
        job = c.get(f"/searches/{job['id']}", headers=auth).json()
        if job["status"] == "exited":
            break
        time.sleep(0.1)
    assert job["returncode"] == 0
    log = Path(job["log"]).read_text()
    assert "['--budget', 'small']" in log and populated["uri"] in log
    assert c.get(f"/searches/{job['id']}").status_code == 401
    assert c.get("/searches/nope", headers=auth).status_code == 404


def test_cors_off_by_default_on_when_configured(populated):
    hdr = {"Origin": "https://dash.example"}
    off = TestClient(create_app(populated["uri"]))
    assert "access-control-allow-origin" not in off.get("/recipes", headers=hdr).headers
    on = TestClient(create_app(populated["uri"], cors_origins=["https://dash.example"]))
    r = on.get("/recipes", headers=hdr)
    assert r.headers["access-control-allow-origin"] == "https://dash.example"
    assert "etag" in r.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in on.get("/recipes", headers={"Origin": "https://evil"}).headers


# ---------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(uri: str, port: int, log: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.server", "--port", str(port), "--tracking-uri", uri, *extra],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not come up in 60 s")


def test_uvicorn_serves_while_another_process_writes(tmp_path, fresh_uri):
    uri = fresh_uri
    promote(RecipeStore(uri), [0.10, 0.10, 0.10])
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_server(uri, port, log, "--cache-ttl", "0.2")
    base = f"http://127.0.0.1:{port}"
    # the writer runs in this (pytest) process, the server in its own: two processes on one SQLite file
    writer_errors: list[BaseException] = []

    def write() -> None:
        try:
            s = RecipeStore(uri)
            for i in range(1, 6):
                promote(s, [0.1 + i / 100] * 3, rec=recipe(seed=i))
                promote(s, [0.2, 0.2], backbone="mobilenetv3_small_100", fp=f"{i:016x}", budget=f"b{i}")
                time.sleep(0.2)  # let the readers see each state
        except BaseException as e:  # pragma: no cover - reported below
            writer_errors.append(e)

    assert httpx.get(base + "/recipes/resnet18", timeout=30).status_code == 200  # warm
    writer = threading.Thread(target=write)
    writer.start()
    statuses: dict[int, int] = {}
    seen: set[float] = set()
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            while writer.is_alive():
                for path in ("/recipes/resnet18", "/recipes", "/recipes/resnet18/history"):
                    r = http.get(path)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if path == "/recipes/resnet18" and r.status_code == 200:
                        seen.add(r.json()["test_probe_top1"]["mean"])
            assert not writer_errors
            time.sleep(0.3)
            assert http.get("/recipes/resnet18").json()["test_probe_top1"]["mean"] == pytest.approx(0.15)
            assert len(http.get("/recipes").json()) == 6
            assert len(http.get("/recipes/resnet18/history").json()) == 6
        assert set(statuses) == {200} and sum(statuses.values()) > 10, statuses
        assert len(seen) >= 2  # it saw promotions while they happened
    finally:
        writer.join()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    # graceful shutdown: uvicorn drains, logs, then re-raises the signal (exit status -15)
    assert rc in (0, -signal.SIGTERM), log.read_text()
    text = log.read_text()
    assert "Shutting down" in text and "Finished server process" in text, text
    assert "Traceback" not in text and " 500 " not in text


# ---------------------------------------------------------------- schemathesis


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_no_server_errors(populated, monkeypatch, mode):
    """Property-based requests generated from the OpenAPI schema: no 5xx, and every
    response conforms to the documented status codes, headers and schemas."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    monkeypatch.delenv("RECIPE_SEARCH_TOKEN", raising=False)  # POST /searches answers 403
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(populated["uri"]))
    gen_mode = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 9
    tested = 0
    for op in operations:
        try:
            strategy = op.as_strategy(gen_mode)
        except Exception as e:  # nothing to negate (e.g. no parameters)
            if mode == "negative":
                continue
            raise AssertionError(f"{op.label}: {e}") from e

        @given(case=strategy)
        @settings(max_examples=20, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call_and_validate()
            assert response.status_code < 500, (op.label, case.path_parameters, response.text)

        try:
            check()
            tested += 1
        except Unsatisfiable:  # negative mode: the operation has no input that can be invalid
            assert mode == "negative", op.label
    assert tested >= (9 if mode == "positive" else 4)


def test_uvicorn_keeps_answering_while_a_real_search_writes_the_same_store(tmp_path, fresh_uri):
    """A real `recipe-search run` (Ray + MLflow on the same SQLite file) beside a real server."""
    cifar = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    data = ["--data", str(cifar)] if cifar.exists() else ["--dataset", "synthetic"]
    port = free_port()
    proc = start_server(fresh_uri, port, tmp_path / "server.log", "--cache-ttl", "0.2")
    env = dict(os.environ, RECIPE_SEARCH_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("MLFLOW_TRACKING_URI", None)
    search = subprocess.Popen(
        [sys.executable, "-m", "recipe_search", "run", "--backbone", "mobilenetv3_small_050", "--budget", "tiny",
         *data, "--num-samples", "3", "--num-cpus", "2", "--no-progress", "--tracking-uri", fresh_uri],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    statuses: dict[int, int] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            while search.poll() is None:
                for path in ("/recipes", "/readyz", "/recipes/mobilenetv3_small_050/trials"):
                    code = http.get(path).status_code
                    statuses[code] = statuses.get(code, 0) + 1
                time.sleep(0.1)
            out = search.stdout.read()
            assert search.returncode == 0, out
            time.sleep(0.3)  # one cache TTL
            promoted = http.get("/recipes/mobilenetv3_small_050")
            rec = RecipeStore(fresh_uri).get("mobilenetv3_small_050")
            if rec is None:  # a tiny budget may land below the untrained floor: nothing is promoted
                assert "not promoted" in out and promoted.status_code == 404, (out, promoted.text)
            else:
                assert promoted.status_code == 200, promoted.text
                body = promoted.json()
                assert body["recipe"]["backbone"] == "mobilenetv3_small_050"
                assert body["fingerprint"] == rec.fingerprint and body["verdict"]["verdict"] == rec.verdict
                assert body["test_probe_top1"]["n"] == len(body["verdict"]["seeds"]) >= 2
            trials = http.get("/recipes/mobilenetv3_small_050/trials").json()
            search_trials = [t for t in trials if t["stage"] == "search"]
            confirmation = [t for t in trials if t["stage"] == "confirmation"]
            assert len(search_trials) == 3 and confirmation, trials
            assert all(t["test_probe_top1"] is None for t in search_trials)  # the search never reads test
            assert all(t["test_probe_top1"] is not None for t in confirmation if t["status"] == "FINISHED")
        # while the search wrote: never a 5xx; 404 only for the leaderboard before its first trial run
        assert statuses.get(200, 0) > 10 and all(code in (200, 404) for code in statuses), statuses
    finally:
        if search.poll() is None:
            search.kill()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
