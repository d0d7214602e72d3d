"""The HTTP API over a real MLflow SQLite store (TestClient, a uvicorn subprocess, schemathesis)."""

from __future__ import annotations

import dataclasses
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
from recipe_search.settings import SearchSettings
from recipe_search.stats import paired_interval, summary
from recipe_search.store import RecipeStore

ROOT = Path(__file__).resolve().parents[1]
FP = "0123456789abcdef"
FP2 = "fedcba9876543210"
FP3 = "00000000000000aa"



def run_settings(argv: list[str]):
    """(settings, --resume) of a `recipe-search run` command line, parsed by the real command."""
    import typer

    from recipe_search.cli import app as cli_app
    from recipe_search.settings import from_cli

    ctx = typer.main.get_command(cli_app).commands["run"].make_context("run", list(argv))
    (backbone,) = ctx.params["backbone"]
    return from_cli(backbone, ctx.params), ctx.params["resume"]

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
                         prov(values, verdict, fp, **extra), scores=values, val_scores=dict(enumerate(values)),
                         budget=budget, source_run_id=source_run_id)


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


def test_a_backbone_whose_search_served_nothing_is_404_with_its_verdict(fresh_uri):
    s = RecipeStore(fresh_uri)
    held = s.promote("efficientnet_b0", "cifar10", FP, recipe("efficientnet_b0"), {"test_probe_top1": 0.2},
                     prov([0.2, 0.21, 0.19], "no_significant_lift", FP, search_id="s9",
                          withheld_because="no_significant_lift: no recipe's lift over the untrained floor is "
                                           "shown; next: recipe-search run --backbone efficientnet_b0 --budget cpu"),
                     scores=[0.2, 0.21, 0.19], val_scores={1: 0.2, 2: 0.21, 3: 0.19}, served=False)
    assert not held.promoted and held.current is None
    c = TestClient(create_app(fresh_uri))
    r = c.get("/recipes/efficientnet_b0")
    assert r.status_code == 404, r.text
    body = r.json()
    assert body["verdict"] == "no_significant_lift" and "s9" in body["detail"] and "served" in body["detail"]
    assert body["next"] == "recipe-search run --backbone efficientnet_b0 --budget cpu"
    assert body["verdict_line"].startswith("no_significant_lift")
    assert c.get("/recipes").json() == []  # a withheld verdict is never listed as a recipe


def test_a_two_phase_verdict_is_served_whole(fresh_uri):
    """A verdict from verdict.decide (report seeds, looks, declared comparisons, what is served) reaches the
    client with nothing dropped."""
    from recipe_search.verdict import RecipeRuns, choose, decide

    sel = choose([RecipeRuns("t1", "finalist", {}, {s: {"val_knn_top1": 0.5} for s in (1, 2)}),
                  RecipeRuns("sinfonce-light", "baseline", {}, {s: {"val_knn_top1": 0.4} for s in (1, 2)})], [1, 2])
    test = lambda *v: {s: {"test_probe_top1": x} for s, x in zip((3, 4, 5), v)}  # noqa: E731
    v = decide(sel, [RecipeRuns("t1", "finalist", {}, test(0.60, 0.62, 0.61)),
                     RecipeRuns("sinfonce-light", "baseline", {}, test(0.40, 0.41, 0.39))],
               test(0.20, 0.21, 0.19), [3, 4, 5], (3,), n_images=10000)
    s = RecipeStore(fresh_uri)
    s.promote("resnet18", "cifar10", FP, recipe("resnet18"), {"test_probe_top1": v.score.mean},
              {"verdict": v.to_dict(), "fingerprint": {"digest": FP}}, scores=list(v.score.values),
              val_scores={3: 0.6, 4: 0.62, 5: 0.61})
    body = TestClient(create_app(fresh_uri)).get("/recipes/resnet18").json()["verdict"]
    assert body["served"] == "t1" and body["stop"] == "decided" and body["looks"] == [3] and body["mde"] > 0
    assert set(body["comparisons"]) == {"winner-vs-baseline", "winner-vs-floor", "baseline-vs-floor"}
    assert body["comparisons"]["winner-vs-baseline"]["state"] == "rejected" and body["select_seeds"] == [1, 2]
    assert body["lift"]["floor"]["low"] > 0 and body["seeds"] == [3, 4, 5]


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
            "/recipes/{backbone}/history", "/healthz", "/readyz"} <= set(spec["paths"])
    assert not any(p.startswith("/searches") for p in spec["paths"])  # no token: no job routes
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


TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# A stand-in for `recipe-search run`: records its argv and process group, writes the search's
# state file like a real search, stops on SIGINT with status 130 (as Ctrl-C does), else
# runs while the file <home>/hold exists (at most 60 s) and finishes.
FAKE_RUN = r"""
import json, os, pathlib, signal, sys, time
args = sys.argv[1:]
sid = args[args.index("--search-id") + 1]
home = pathlib.Path(os.environ["RECIPE_SEARCH_HOME"])
state = home / "ray" / sid / "recipe_search.json"
state.parent.mkdir(parents=True, exist_ok=True)
with open(home / "calls.jsonl", "a") as fh:
    fh.write(json.dumps({"args": args, "pid": os.getpid(), "pgid": os.getpgid(0)}) + "\n")
def stop(*_):
    with open(home / "sigint.txt", "a") as fh:
        fh.write(sid + "\n")
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
state.write_text(json.dumps({"search_id": sid, "status": "running", "stage": "search"}))
print("started", flush=True)
if (home / "fail").exists():  # a search that fails the way a bad data path does
    print(f"error: $RECIPE_SEARCH_DATA path {home.parent / 'nowhere.tar.gz'} does not exist", flush=True)
    sys.exit(2)
deadline = time.time() + 60
while (home / "hold").exists() and time.time() < deadline:
    time.sleep(0.05)
state.write_text(json.dumps({"search_id": sid, "status": "finished", "stage": "finished"}))
"""


@pytest.fixture()
def jobs_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("RECIPE_SEARCH_HOME", str(home))
    monkeypatch.delenv("RECIPE_SEARCH_STORAGE", raising=False)
    monkeypatch.delenv("RECIPE_SEARCH_TOKEN", raising=False)
    (tmp_path / "fake_run.py").write_text(FAKE_RUN)
    return home


def jobs_app(uri: str, home: Path, *, max_trials: int = 6, token: str | None = TOKEN, **kw):
    from api.jobs import JobsConfig

    cfg = JobsConfig.from_strings([f"cifar10={home.parent}"], max_trials=max_trials, num_cpus=2, **kw)
    return create_app(uri, write_token=token, jobs=cfg,
                      search_command=[sys.executable, str(home.parent / "fake_run.py")])


def calls(home: Path) -> list[dict]:
    import json

    f = home / "calls.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def wait_state(c: TestClient, job_id: str, states: tuple[str, ...], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = c.get(f"/searches/{job_id}", headers=AUTH).json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, (job, job_log(c, job_id)[-3000:])
        time.sleep(0.1)


def job_log(c: TestClient, job_id: str, **params) -> str:
    r = c.get(f"/searches/{job_id}/log", params=params, headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    return r.text


BODY = {"backbones": ["resnet18"], "budget": "tiny", "dataset": "cifar10"}


def test_searches_absent_without_token(populated, jobs_home):
    c = TestClient(create_app(populated["uri"]))
    assert not any(p.startswith("/searches") for p in c.get("/openapi.json").json()["paths"])
    for method, path in (("POST", "/searches"), ("GET", "/searches"), ("GET", "/searches/0123456789ab"),
                         ("DELETE", "/searches/0123456789ab"), ("POST", "/searches/0123456789ab/resume")):
        r = c.request(method, path, json=BODY)
        assert r.status_code == 404, (method, path)
        assert "RECIPE_SEARCH_TOKEN" in r.json()["detail"] and "--data-root" in r.json()["detail"]
    assert not (jobs_home / "api-jobs.json").exists()


def test_searches_need_the_bearer_token(populated, jobs_home):
    c = TestClient(jobs_app(populated["uri"], jobs_home))
    spec = c.get("/openapi.json").json()
    assert {"/searches", "/searches/{job_id}", "/searches/{job_id}/resume",
            "/searches/{job_id}/log"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "The server's $RECIPE_SEARCH_TOKEN."}
    for method, path in (("POST", "/searches"), ("GET", "/searches"), ("GET", "/searches/0123456789ab"),
                         ("DELETE", "/searches/0123456789ab"), ("POST", "/searches/0123456789ab/resume"),
                         ("POST", "/searches/0123456789ab/cancel"), ("GET", "/searches/0123456789ab/log")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN}x"}):
            r = c.request(method, path, json=BODY, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer" and "Bearer" in r.json()["detail"]
    assert c.get("/searches", headers=AUTH).json() == []
    assert c.get("/recipes").status_code == 200  # reads stay open
    assert calls(jobs_home) == []


def test_typed_request_rejects_paths_and_unknown_fields(populated, jobs_home):
    c = TestClient(jobs_app(populated["uri"], jobs_home, max_trials=6))

    def bad(body: dict, field: str, *words: str) -> None:
        r = c.post("/searches", json=body, headers=AUTH)
        assert r.status_code == 422, (body, r.text)
        errs = r.json()["detail"]
        hit = [e for e in errs if e["loc"][:2] == ["body", field]]
        assert hit, (field, errs)
        for w in words:
            assert w in hit[0]["msg"], (w, hit[0]["msg"])

    bad({**BODY, "dataset": "/work/shared/data/cifar10-jpeg.tar.gz"}, "dataset", "'cifar10'", "'synthetic'")
    bad({**BODY, "dataset": "../cifar10"}, "dataset", "'cifar10'")
    bad({**BODY, "data": "/etc"}, "data", "Extra inputs are not permitted")
    bad({**BODY, "args": ["--storage-path", "/tmp/x"]}, "args", "Extra inputs are not permitted")
    bad({**BODY, "tracking_uri": "sqlite:////tmp/x.db"}, "tracking_uri", "Extra inputs")
    bad({**BODY, "space": "/etc/passwd"}, "space", "'default'", "'resnet18'")
    bad({**BODY, "space": "../search_spaces/default"}, "space", "'default'")
    bad({**BODY, "budget": "huge"}, "budget", "'tiny'", "'smoke'", "'proxy'")
    bad({**BODY, "backbones": ["resnet99"]}, "backbones", "'resnet99' is not a timm model", "resnet18")
    bad({**BODY, "backbones": ["resnet18", "resnet18"]}, "backbones", "given twice")
    bad({**BODY, "backbones": []}, "backbones")
    bad({**BODY, "trials": 7}, "trials", "6")
    bad({**BODY, "trials": 1}, "trials", "2")
    bad({**BODY, "seed": -1}, "seed")
    bad({**BODY, "seed": False}, "seed", "valid integer")  # strict: no bool/str/float coercion
    bad({**BODY, "seed": "3"}, "seed", "valid integer")
    bad({**BODY, "trials": 4.5}, "trials", "valid integer")
    bad({k: v for k, v in BODY.items() if k != "budget"}, "budget", "Field required")
    r = c.post("/searches", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text
    schema = c.get("/openapi.json").json()["components"]["schemas"]["SearchJobRequest"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["dataset"]["enum"] == ["cifar10", "synthetic"]
    assert "resnet18" in schema["properties"]["backbones"]["items"]["enum"]
    assert schema["properties"]["trials"]["anyOf"][0]["maximum"] == 6
    assert calls(jobs_home) == []  # nothing was started


def test_job_lifecycle_cancel_429_resume_restart(populated, jobs_home, monkeypatch):
    """With a stand-in for `recipe-search run`: the command line built from the typed request,
    one job at a time (429 + Retry-After), cancel = SIGINT to the process group, resume with
    --resume --search-id, and a server restart that marks a running job interrupted."""
    jobs_home.mkdir(parents=True)
    (jobs_home / "hold").touch()
    app = jobs_app(populated["uri"], jobs_home)
    c = TestClient(app)
    r = c.post("/searches", json={**BODY, "backbones": ["resnet18", "mobilenetv3_small_050"], "space": "default",
                                  "trials": 4, "seed": 7}, headers=AUTH)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/searches/{job['id']}" and job["state"] == "running"
    sids = [s["search_id"] for s in job["searches"]]
    assert sids == [f"resnet18-{job['id']}", f"mobilenetv3_small_050-{job['id']}"]
    deadline = time.monotonic() + 30
    while not calls(jobs_home):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first = calls(jobs_home)[0]
    spaces = ROOT / "search_spaces"
    # the command line is derived from the run's settings (recipe_search/settings.py): parsed by the real command
    started = SearchSettings(backbone="resnet18", search_id=sids[0], tracking_uri=populated["uri"], num_cpus=2)
    assert run_settings(first["args"]) == (dataclasses.replace(
        started, budget="tiny", dataset="cifar10", num_samples=4, seed=7, data=str(jobs_home.parent),
        space=str((spaces / "default.yaml").resolve())), False)
    assert first["pgid"] == first["pid"]  # its own process group: SIGINT reaches all of it

    # a second job: 429 with Retry-After while the first runs
    r = c.post("/searches", json=BODY, headers=AUTH)
    assert r.status_code == 429 and r.headers["retry-after"] == "30" and job["id"] in r.json()["detail"]
    listed = c.get("/searches", headers=AUTH).json()
    assert [j["id"] for j in listed] == [job["id"]] and listed[0]["state"] == "running"
    got = c.get(f"/searches/{job['id']}", headers=AUTH).json()
    assert got["searches"][0]["state"] == "running" and got["searches"][0]["stage"] == "search"
    assert got["request"]["backbones"] == ["resnet18", "mobilenetv3_small_050"]

    # cancel: SIGINT, the job ends cancelled and resumable; cancelling again changes nothing
    r = c.post(f"/searches/{job['id']}/cancel", headers=AUTH)
    assert r.status_code == 202 and r.json()["state"] in ("stopping", "cancelled")
    job = wait_state(c, job["id"], ("cancelled",))
    assert job["resumable"] and job["searches"][0]["state"] == "interrupted" and job["searches"][0]["returncode"] == 130
    assert job["searches"][1]["state"] == "pending"  # never started
    assert (jobs_home / "sigint.txt").read_text().split() == [sids[0]]
    assert c.post(f"/searches/{job['id']}/cancel", headers=AUTH).json()["state"] == "cancelled"

    # resume: the started search continues with --resume, the other starts fresh; then finished
    (jobs_home / "hold").unlink()
    r = c.post(f"/searches/{job['id']}/resume", headers=AUTH)
    assert r.status_code == 202 and r.json()["state"] == "running"
    job = wait_state(c, job["id"], ("finished", "failed"))
    assert job["state"] == "finished" and not job["resumable"], job
    args = [x["args"] for x in calls(jobs_home)]
    assert len(args) == 3
    assert run_settings(args[1]) == (started, True)  # resumed: its saved settings apply
    second_search, resumed = run_settings(args[2])
    assert second_search.backbone == "mobilenetv3_small_050" and second_search.search_id == sids[1]
    assert not resumed and second_search.num_samples == 4
    assert [s["state"] for s in job["searches"]] == ["finished", "finished"] and job["runs"] == 3
    r = c.post(f"/searches/{job['id']}/resume", headers=AUTH)
    assert r.status_code == 409 and "finished" in r.json()["detail"]
    assert c.post(f"/searches/{job['id']}/cancel", headers=AUTH).status_code == 409
    assert c.get("/searches/0123456789ab", headers=AUTH).status_code == 404
    assert c.get("/searches/not-an-id", headers=AUTH).status_code == 422

    # a restart while a job runs: the new server marks it interrupted (its search gets SIGINT),
    # runs nothing by itself, and resumes it on request
    (jobs_home / "hold").touch()
    r = c.post("/searches", json=BODY, headers=AUTH)
    assert r.status_code == 202
    second = r.json()["id"]
    while len(calls(jobs_home)) < 4:
        time.sleep(0.05)
    app2 = jobs_app(populated["uri"], jobs_home)  # a new server process on the same home
    c2 = TestClient(app2)
    job = c2.get(f"/searches/{second}", headers=AUTH).json()
    assert job["state"] == "interrupted" and job["resumable"] and "server stopped" in job["message"]
    assert job["searches"][0]["state"] == "interrupted"
    deadline = time.monotonic() + 30
    while (jobs_home / "sigint.txt").read_text().split()[-1] != f"resnet18-{second}":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    app.state.jobs.wait(second, 30)  # the old server's thread sees its search stop
    assert len(calls(jobs_home)) == 4  # nothing re-run by the restart
    assert {j["id"]: j["state"] for j in c2.get("/searches", headers=AUTH).json()} == {
        second: "interrupted", listed[0]["id"]: "finished"}
    (jobs_home / "hold").unlink()
    r = c2.post(f"/searches/{second}/resume", headers=AUTH)
    assert r.status_code == 202, r.text
    assert wait_state(c2, second, ("finished", "failed"))["state"] == "finished"
    assert calls(jobs_home)[-1]["args"][-1] == "--resume"


def test_delete_cancels_a_job_and_takes_it_off_the_list(populated, jobs_home):
    """DELETE = cancel (SIGINT) + forget: GET answers 404 afterwards (schemathesis' use-after-free
    check); the message names the search ids the CLI can still resume."""
    jobs_home.mkdir(parents=True)
    (jobs_home / "hold").touch()
    app = jobs_app(populated["uri"], jobs_home)
    c = TestClient(app)
    try:
        job = c.post("/searches", json=BODY, headers=AUTH).json()
        while not calls(jobs_home):
            time.sleep(0.05)
        r = c.delete(f"/searches/{job['id']}", headers=AUTH)
        assert r.status_code == 202 and r.json()["state"] in ("stopping", "cancelled"), r.text
        message = r.json()["message"]
        assert "--resume --search-id" in message and f"resnet18-{job['id']}" in message, message
        assert c.get(f"/searches/{job['id']}", headers=AUTH).status_code == 404
        assert c.get("/searches", headers=AUTH).json() == []
        for method, path in (("delete", ""), ("post", "/cancel"), ("post", "/resume")):
            assert getattr(c, method)(f"/searches/{job['id']}{path}", headers=AUTH).status_code == 404
        app.state.jobs.wait(job["id"], 30)  # the search got SIGINT and stopped
        assert (jobs_home / "sigint.txt").read_text().split() == [f"resnet18-{job['id']}"]
        assert c.post("/searches", json=BODY, headers=AUTH).status_code == 202  # its slot is free again
    finally:
        app.state.jobs.shutdown()


def test_the_log_is_served_and_no_response_names_a_server_path(populated, jobs_home):
    """Issue 24: a job's log is GET /searches/{id}/log (?tail=N lines, ?follow=true streams it until
    the job ends); no response names a path of the server (its home, the data roots, the package,
    the Python environment): they are masked, in the log and in a failed job's message and error."""

    jobs_home.mkdir(parents=True)
    (jobs_home / "hold").touch()
    app = jobs_app(populated["uri"], jobs_home)
    c = TestClient(app)
    secret = str(jobs_home.parent)  # the data root and the home are under it
    seen: list[str] = []
    try:
        r = c.post("/searches", json=BODY, headers=AUTH)
        assert r.status_code == 202 and r.json()["log"] == f"/searches/{r.json()['id']}/log", r.text
        seen.append(r.text)
        job_id = r.json()["id"]
        deadline = time.monotonic() + 30
        while "started" not in job_log(c, job_id):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        log = job_log(c, job_id)
        assert "$ <python>" in log and "--data <data root cifar10>" in log, log
        assert job_log(c, job_id, tail=1) == "started\n"
        assert job_log(c, job_id, tail=1000) == log
        assert c.get(f"/searches/{job_id}/log", params={"tail": 0}, headers=AUTH).status_code == 422
        assert c.get("/searches/0123456789ab/log", headers=AUTH).status_code == 404

        # follow: the lines written while it runs, until the job ends
        def write_then_finish():
            time.sleep(0.5)
            with open(app.state.jobs.log_file(job_id), "a") as fh:
                fh.write(f"epoch 1 read {jobs_home / 'data' / 'x'}\n")
            time.sleep(0.5)
            (jobs_home / "hold").unlink()

        threading.Thread(target=write_then_finish, daemon=True).start()
        followed = job_log(c, job_id, tail=1, follow="true")
        assert followed == "started\nepoch 1 read $RECIPE_SEARCH_HOME/data/x\n", followed
        assert wait_state(c, job_id, ("finished",))["state"] == "finished"
        seen += [c.get(f"/searches/{job_id}", headers=AUTH).text, c.get("/searches", headers=AUTH).text, log]

        # a failing search: its error line and the job's message name no server path either
        (jobs_home / "fail").touch()
        job_id = c.post("/searches", json=BODY, headers=AUTH).json()["id"]
        job = wait_state(c, job_id, ("failed",))
        assert "<data root cifar10>/nowhere.tar.gz does not exist" in job["error"], job
        assert f"GET /searches/{job_id}/log" in job["message"], job
        seen += [c.get(f"/searches/{job_id}", headers=AUTH).text, job_log(c, job_id),
                 c.post(f"/searches/{job_id}/resume", headers=AUTH).text]
        app.state.jobs.wait(job_id, 30)
        seen.append(c.delete(f"/searches/{job_id}", headers=AUTH).text)
    finally:
        app.state.jobs.shutdown()
    for text in seen:
        assert secret not in text and str(ROOT) not in text and sys.prefix not in text, text


def test_shutdown_interrupts_running_jobs(populated, jobs_home, monkeypatch):
    jobs_home.mkdir(parents=True)
    (jobs_home / "hold").touch()
    with TestClient(jobs_app(populated["uri"], jobs_home)) as c:  # `with`: runs the lifespan
        job = c.post("/searches", json=BODY, headers=AUTH).json()
        while not calls(jobs_home):
            time.sleep(0.05)
    job = TestClient(jobs_app(populated["uri"], jobs_home)).get(f"/searches/{job['id']}", headers=AUTH).json()
    assert job["state"] == "interrupted" and job["resumable"]
    deadline = time.monotonic() + 30
    while not (jobs_home / "sigint.txt").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)


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


@pytest.mark.slow  # ~2 min of real training: CI runs it with `pytest -m slow`, outside the 15-minute default suite
def test_api_job_runs_a_real_search_cancel_resume_no_duplicates(tmp_path, fresh_uri, monkeypatch):
    """A job over the API runs a real tiny search on an operator-configured data root: listed,
    cancelled (SIGINT) after its first trial, resumed, and finished with a verdict, every
    MLflow run once."""
    from mlflow.tracking import MlflowClient

    from api.jobs import JobsConfig

    monkeypatch.setenv("RECIPE_SEARCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RECIPE_SEARCH_STORAGE", raising=False)
    cifar = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    roots = [f"cifar10={cifar}"] if cifar.exists() else []
    cfg = JobsConfig.from_strings(roots, max_trials=4, num_cpus=2)
    app = create_app(fresh_uri, write_token=TOKEN, jobs=cfg)
    c = TestClient(app)
    body = {"backbones": ["mobilenetv3_small_050"], "budget": "tiny",
            "dataset": "cifar10" if roots else "synthetic", "trials": 4, "seed": 0}
    r = c.post("/searches", json=body, headers=AUTH)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    sid = r.json()["searches"][0]["search_id"]
    try:
        assert c.post("/searches", json=body, headers=AUTH).status_code == 429
        assert [j["id"] for j in c.get("/searches", headers=AUTH).json()] == [job_id]
        deadline = time.monotonic() + 400
        while True:  # cancel once the first trial has finished
            job = c.get(f"/searches/{job_id}", headers=AUTH).json()
            assert job["state"] == "running", (job, job_log(c, job_id)[-3000:])
            if job["searches"][0]["trials"]["done"] >= 1:
                break
            assert time.monotonic() < deadline, job
            time.sleep(1)
        assert job["searches"][0]["best"]["val_knn_top1"] is not None
        assert c.post(f"/searches/{job_id}/cancel", headers=AUTH).status_code == 202
        job = wait_state(c, job_id, ("cancelled", "failed", "finished"), timeout=180)
        log = job_log(c, job_id)
        assert job["state"] == "cancelled", (job, log[-3000:])
        assert job["searches"][0]["returncode"] == 130 and "--resume" in log, log[-3000:]
        r = c.post(f"/searches/{job_id}/resume", headers=AUTH)
        assert r.status_code == 202, r.text
        job = wait_state(c, job_id, ("finished", "failed", "cancelled", "interrupted"), timeout=600)
        log = job_log(c, job_id)
        assert job["state"] == "finished", (job, log[-3000:])
    finally:
        app.state.jobs.shutdown()
    s = job["searches"][0]
    assert s["state"] == "finished" and s["stage"] == "finished" and job["runs"] == 2
    assert s["trials"]["done"] + s["trials"]["pruned"] + s["trials"]["failed"] == 4, s
    assert s["confirmation"]["done"] >= 4, s
    assert s["verdict"] in ("better_than_baselines", "no_significant_lift", "below_floor"), (s, log[-3000:])
    assert s["verdict_line"] and s["mlflow"]["run_id"] and "mlflow ui" in s["mlflow"]["hint"]
    assert "resumed" in log and "Traceback" not in log, log[-3000:]
    # every MLflow run once: one parent, one run per search trial, one per (recipe, seed)
    mc = MlflowClient(fresh_uri)
    exp = mc.get_experiment_by_name("recipe-search")
    runs = mc.search_runs([exp.experiment_id], filter_string=f"tags.`rs.search_id` = '{sid}'", max_results=1000)
    parents = [r for r in runs if r.data.tags.get("rs.kind") == "search"]
    trials = [r for r in runs if r.data.tags.get("rs.kind") == "trial"]
    assert len(parents) == 1 and parents[0].info.run_id == s["mlflow"]["run_id"]
    assert parents[0].info.status == "FINISHED"
    search = [r for r in trials if r.data.tags.get("rs.stage") == "search"]
    confirm = [(r.data.tags.get("rs.job"), r.data.tags.get("rs.seed"))
               for r in trials if r.data.tags.get("rs.stage") == "confirmation"]
    assert len(search) == 4 and len({r.data.tags["rs.trial_id"] for r in search}) == 4
    assert len(confirm) == len(set(confirm)) and confirm
    assert {r.info.status for r in trials} <= {"FINISHED", "FAILED"}


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
def test_schemathesis_no_server_errors(populated, jobs_home, mode):
    """Property-based requests generated from the OpenAPI schema, with the write token (so the
    job routes are in it; a stand-in runs the jobs): every check schemathesis has passes on
    every operation -- no 5xx, documented status codes, headers and schemas, valid data
    accepted, invalid data rejected, auth enforced."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import CHECKS, load_all_checks

    jobs_home.mkdir(parents=True)
    (jobs_home / "hold").touch()  # the stand-in search runs until the test ends
    app = jobs_app(populated["uri"], jobs_home, follow_limit_s=0.2)  # ?follow=true ends while the job runs
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    gen_mode = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 13
    load_all_checks()
    checks = CHECKS.get_all()  # every check schemathesis has
    assert len(checks) >= 10, [c.__name__ for c in checks]
    tested = 0
    try:
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
                response = case.call_and_validate(headers=AUTH, checks=checks)
                assert response.status_code < 500, (op.label, case.path_parameters, response.text)

            try:
                check()
                tested += 1
            except Unsatisfiable:  # negative mode: the operation has no input that can be invalid
                assert mode == "negative", op.label
    finally:
        app.state.jobs.shutdown()
    assert tested >= (13 if mode == "positive" else 6)


@pytest.mark.slow  # a real search beside uvicorn (~90 s): the default suite measured 15m09s on 2 idle cores with it
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
            finished = [t for t in confirmation if t["status"] == "FINISHED"]
            assert {t["phase"] for t in finished} == {"select", "report"}, finished
            # the select phase chooses on val only; the report phase alone reads test
            assert all((t["test_probe_top1"] is not None) == (t["phase"] == "report") for t in finished), finished
        # while the search wrote: never a 5xx; 404 only for the leaderboard before its first trial run
        assert statuses.get(200, 0) > 10 and all(code in (200, 404) for code in statuses), statuses
    finally:
        if search.poll() is None:
            search.kill()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
