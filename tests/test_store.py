"""The recipe store on a real MLflow SQLite backend in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from recipe_search.store import (
    PromotedRecipe,
    RecipeStore,
    StoreUnavailable,
    artifact_root_for,
    sqlite_path,
)


def recipe(backbone: str = "resnet18", **kw) -> dict:
    return {"backbone": backbone, **kw}


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory) -> Path:
    """An MLflow SQLite database with its tables created once (migrations take seconds)."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    RecipeStore(f"sqlite:///{db}").ping()
    return db


@pytest.fixture()
def uri(tmp_path, monkeypatch, empty_db) -> str:
    monkeypatch.setenv("RECIPE_SEARCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "store").mkdir()
    shutil.copy(empty_db, tmp_path / "store" / "mlflow.db")
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


@pytest.fixture()
def store(uri) -> RecipeStore:
    return RecipeStore(uri)


def test_promote_then_get(store, tmp_path):
    res = store.promote(
        "resnet18", "cifar10", "small", recipe(lr=0.1), {"probe_top1": 0.5, "knn_top1": 0.4, "note": "x"},
        {"search_id": "s1", "trial_id": "t1"}, source_run_id="abc123",
    )
    assert res.promoted and "first" in res.reason
    cur = store.get("resnet18")
    assert isinstance(cur, PromotedRecipe)
    assert cur == res.current
    assert (cur.backbone, cur.dataset, cur.budget, cur.state) == ("resnet18", "cifar10", "small", "current")
    assert cur.recipe["lr"] == 0.1 and cur.recipe["backbone"] == "resnet18"
    assert cur.metric == 0.5 and cur.metrics == {"probe_top1": 0.5, "knn_top1": 0.4}
    assert cur.source_run_id == "abc123"
    assert cur.provenance["search_id"] == "s1" and cur.provenance["previous"] is None
    assert cur.updated_at.endswith("Z")
    # the MLflow run: name, tags, metric, recipe.json artifact next to the database
    run = store.client.get_run(cur.run_id)
    assert run.info.run_name == "resnet18/cifar10/small"
    assert run.data.tags["rs.state"] == "current"
    assert json.loads(run.data.tags["rs.recipe"]) == cur.recipe
    assert json.loads(run.data.tags["rs.provenance"])["trial_id"] == "t1"
    assert run.data.metrics["probe_top1"] == 0.5
    assert run.info.status == "FINISHED"
    art = tmp_path / "store" / "artifacts"
    assert json.loads(next(art.rglob("recipe.json")).read_text()) == cur.recipe
    assert store.get("resnet18", dataset="cifar100") is None
    assert store.get("vit_tiny_patch16_224") is None


def test_replacement_rule(store):
    first = store.promote("resnet18", "cifar10", "small", recipe(lr=0.1), {"probe_top1": 0.5}, {}).current
    worse = store.promote("resnet18", "cifar10", "small", recipe(lr=0.2), {"probe_top1": 0.4}, {})
    assert not worse.promoted and "not better" in worse.reason and worse.current == first
    equal = store.promote("resnet18", "cifar10", "small", recipe(lr=0.3), {"probe_top1": 0.5}, {})
    assert not equal.promoted and equal.current.run_id == first.run_id
    better = store.promote("resnet18", "cifar10", "small", recipe(lr=0.4), {"probe_top1": 0.6}, {})
    assert better.promoted and better.current.recipe["lr"] == 0.4
    assert better.current.provenance["previous"] == {"run_id": first.run_id, "probe_top1": 0.5}
    forced = store.promote("resnet18", "cifar10", "small", recipe(lr=0.5), {"probe_top1": 0.1}, {}, force=True)
    assert forced.promoted and "forced" in forced.reason
    assert store.get("resnet18").recipe["lr"] == 0.5
    # another dataset / budget coexists with the cifar10/small one
    other = store.promote("resnet18", "stl10", "small", recipe(lr=0.6), {"probe_top1": 0.3}, {})
    big = store.promote("resnet18", "cifar10", "large", recipe(lr=0.7), {"probe_top1": 0.2}, {})
    assert other.promoted and big.promoted
    assert store.get("resnet18", dataset="cifar10").recipe["lr"] == 0.7  # most recent of cifar10
    assert store.get("resnet18", dataset="stl10").recipe["lr"] == 0.6
    assert store.get("resnet18").recipe["lr"] == 0.7
    assert store.get_key("resnet18", "cifar10", "small").recipe["lr"] == 0.5
    currents = store.list()
    assert sorted((r.dataset, r.budget) for r in currents) == [
        ("cifar10", "large"), ("cifar10", "small"), ("stl10", "small")]
    assert all(r.state == "current" for r in currents)


def test_history_list_backbones(store):
    store.promote("resnet18", "cifar10", "small", recipe(lr=0.1), {"probe_top1": 0.5}, {})
    store.promote("mobilenetv3_small_100", "cifar10", "small", recipe("mobilenetv3_small_100"),
                  {"probe_top1": 0.3}, {})
    store.promote("resnet18", "cifar10", "small", recipe(lr=0.2), {"probe_top1": 0.4}, {})  # refused
    store.promote("resnet18", "cifar10", "small", recipe(lr=0.3), {"probe_top1": 0.7}, {})
    hist = store.history("resnet18")
    assert [h.recipe["lr"] for h in hist] == [0.3, 0.1]  # refused promotions leave no trace
    assert [h.state for h in hist] == ["current", "superseded"]
    assert hist[0].updated_at > hist[1].updated_at
    sup = store.client.get_run(hist[1].run_id).data.tags
    assert sup["rs.superseded_by"] == hist[0].run_id
    assert [r.backbone for r in store.list()] == ["mobilenetv3_small_100", "resnet18"]
    assert store.backbones() == ["mobilenetv3_small_100", "resnet18"]
    assert store.history("nope") == [] and store.history("it's") == []


def test_rejects_bad_input(store):
    with pytest.raises(ValueError, match="probe_top1"):
        store.promote("resnet18", "cifar10", "small", recipe(), {"knn_top1": 0.5}, {})
    with pytest.raises(ValueError, match="probe_top1"):
        store.promote("resnet18", "cifar10", "small", recipe(), {"probe_top1": float("nan")}, {})
    with pytest.raises(ValueError, match="backbone"):
        store.promote("resnet50", "cifar10", "small", recipe(), {"probe_top1": 0.5}, {})
    with pytest.raises(ValueError, match="dataset"):
        store.promote("resnet18", "a/b", "small", recipe(), {"probe_top1": 0.5}, {})
    from trainer.errors import RecipeError

    with pytest.raises(RecipeError):
        store.promote("resnet18", "cifar10", "small", recipe(lr=-1.0), {"probe_top1": 0.5}, {})
    assert store.list() == []


def test_accepts_recipe_object(store):
    from trainer.recipe import Recipe

    r = Recipe(backbone="resnet18", lr=0.02)
    res = store.promote("resnet18", "cifar10", "small", r, {"probe_top1": 0.5}, {})
    assert Recipe.from_dict(res.current.recipe) == r


def test_empty_store_reads(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    store = RecipeStore(uri)
    store.ping()  # creates the database (write mode)
    assert store.list() == [] and store.get("resnet18") is None and store.backbones() == []
    assert (tmp_path / "store" / "mlflow.db").exists()


def test_read_only_missing_store_is_not_created(tmp_path):
    db = tmp_path / "none" / "mlflow.db"
    ro = RecipeStore(f"sqlite:///{db}", create=False)
    for call in (ro.ping, ro.list, lambda: ro.get("resnet18")):
        with pytest.raises(StoreUnavailable, match=r"no store at .*recipe-search run"):
            call()
    assert not db.exists() and not db.parent.exists()
    with pytest.raises(StoreUnavailable, match="read-only"):
        ro.promote("resnet18", "cifar10", "small", recipe(), {"probe_top1": 0.5}, {})


@pytest.mark.parametrize("create", [True, False])
def test_corrupt_file(tmp_path, create):
    db = tmp_path / "mlflow.db"
    db.write_bytes(os.urandom(8192))
    store = RecipeStore(f"sqlite:///{db}", create=create)
    with pytest.raises(StoreUnavailable, match=r"corrupt") as e:
        store.list()
    assert str(db) in str(e.value)
    with pytest.raises(StoreUnavailable, match="corrupt"):
        store.ping()


def test_corrupted_after_use(store, uri):
    store.promote("resnet18", "cifar10", "small", recipe(), {"probe_top1": 0.5}, {})
    db = sqlite_path(uri)
    with open(db, "r+b") as fh:
        fh.write(os.urandom(db.stat().st_size))
    with pytest.raises(StoreUnavailable, match="corrupt"):
        store.get("resnet18")


def test_unreachable_server_is_unavailable(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    store = RecipeStore("http://127.0.0.1:9")  # discard port: connection refused
    with pytest.raises(StoreUnavailable, match=r"http://127.0.0.1:9"):
        store.ping()
    assert store.run_url("r1", "7") == "http://127.0.0.1:9/#/experiments/7/runs/r1"


def test_concurrent_promotions_leave_one_current(store, uri):
    store.ping()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            RecipeStore(uri).promote("resnet18", "cifar10", "small", recipe(seed=i),
                                     {"probe_top1": 0.1 * (i + 1)}, {})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    currents = [h for h in store.history("resnet18") if h.state == "current"]
    assert len(currents) == 1 and currents[0].metric == pytest.approx(0.4)


def test_uri_helpers(tmp_path, monkeypatch):
    monkeypatch.setenv("RECIPE_SEARCH_HOME", str(tmp_path))
    assert sqlite_path(f"sqlite:///{tmp_path}/a.db") == tmp_path / "a.db"
    assert sqlite_path("sqlite:///:memory:") is None and sqlite_path("http://x") is None
    assert artifact_root_for(f"sqlite:///{tmp_path}/mlflow.db") == (tmp_path / "artifacts").as_uri()
    assert artifact_root_for(f"sqlite:///{tmp_path}/s/x.db") == (tmp_path / "s" / "artifacts").as_uri()
    assert artifact_root_for("http://mlflow:5000") is None
    assert "secret" not in repr(RecipeStore("postgresql://u:secret@db/mlflow"))


def test_long_provenance_is_kept_as_artifact(store, tmp_path):
    big = {"settings": {f"k{i}": "x" * 50 for i in range(400)}, "search_id": "s9"}
    res = store.promote("resnet18", "cifar10", "small", recipe(), {"probe_top1": 0.5}, big)
    prov = res.current.provenance
    assert prov["search_id"] == "s9" and prov["truncated"] is True
    assert "provenance.json" in prov["settings"]
    full = json.loads(next((tmp_path / "store" / "artifacts").rglob("provenance.json")).read_text())
    assert full["settings"] == big["settings"]
