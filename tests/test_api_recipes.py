"""The read endpoints over a real MLflow SQLite store (TestClient): recipes, verdicts, fingerprints,
trials, history, health, OpenAPI; ETags and the cache.

Shared helpers: ``tests/api_support.py``; fixtures (``populated``, ``client``, ``fresh_uri``,
``jobs_home``): ``tests/conftest.py``."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.cache import TTLCache
from recipe_search.store import RecipeStore

from api_support import FP, FP2, FP3, promote, prov, recipe  # tests/ is on sys.path


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
    assert body["comparisons"]["winner-vs-baseline"]["seeds_to_show"] is None  # shown: nothing more to buy
    v = decide(sel, [RecipeRuns("t1", "finalist", {}, test(0.50, 0.44, 0.47)),  # a lift not shown
                     RecipeRuns("sinfonce-light", "baseline", {}, test(0.44, 0.45, 0.43))],
               test(0.20, 0.21, 0.19), [3, 4, 5], (3,), n_images=10000)
    s.promote("resnet34", "cifar10", FP, recipe("resnet34"), {"test_probe_top1": v.score.mean},
              {"verdict": v.to_dict(), "fingerprint": {"digest": FP}}, scores=list(v.score.values))
    body = TestClient(create_app(fresh_uri)).get("/recipes/resnet34").json()["verdict"]
    wb = body["comparisons"]["winner-vs-baseline"]
    assert wb["state"] != "rejected" and wb["seeds_to_show"] == v.comparisons["winner-vs-baseline"].to_dict()[
        "seeds_to_show"] > 3
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
