"""The recipe store on a real MLflow SQLite backend in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from recipe_search.verdict.stats import paired_interval, summary
from recipe_search.store import (
    SCHEMA,
    PromotedRecipe,
    RecipeStore,
    StoreOutdated,
    StoreUnavailable,
    artifact_root_for,
    sqlite_path,
)


FP = "0123456789abcdef"
FP2 = "fedcba9876543210"


def recipe(backbone: str = "resnet18", **kw) -> dict:
    return {"backbone": backbone, **kw}


def score(values) -> dict:
    s = summary(values)
    return s.to_dict()


def prov(values, verdict: str = "better_than_baselines", fp: str = FP, **extra) -> dict:
    """A provenance dict shaped like the lead's promotion code writes it (see the contract)."""
    seeds = list(range(len(values)))
    floor = [v - 0.2 for v in values]
    moco = [v - 0.05 for v in values]
    return {
        "search_id": "s1",
        "fingerprint": {"digest": fp, "data_digest": "ab" * 32, "image_size": 32, "classes": 10,
                        "train_per_class": 100, "val_per_class": 20, "test_per_class": 50, "epochs": 4,
                        "budget": "small"},
        "verdict": {
            "verdict": verdict, "line": f"{verdict}: test_probe_top1 {summary(values).fmt(3)}",
            "metric": "test_probe_top1", "seeds": seeds, "winner": "tpe",
            "score": score(values), "floor": score(floor), "baselines": {"mocov2": score(moco)},
            "lift": {"mocov2": paired_interval(values, moco).to_dict(),
                     "best_baseline": paired_interval(values, moco).to_dict(),
                     "floor": paired_interval(values, floor).to_dict()},
        },
        **extra,
    }


def promote(store, values, *, backbone="resnet18", dataset="cifar10", fp=FP, budget="small",
            force=False, verdict="better_than_baselines", rec=None, val=None, served=True, **prov_extra):
    """Promote with scores ``values`` (test_probe_top1 = their mean) and val scores ``val`` (default:
    the same values, on seeds 0, 1, ...)."""
    mean = summary(values).mean
    val = dict(enumerate(values)) if val is None else val
    return store.promote(backbone, dataset, fp, rec or recipe(backbone), {"test_probe_top1": mean},
                         prov(values, verdict, fp, **prov_extra), scores=values, val_scores=val, served=served,
                         budget=budget, force=force)


@pytest.fixture()
def uri(tmp_path, make_search_home, empty_db) -> str:
    """An empty store beside (not in) the test's home: every read names its URI."""
    make_search_home("home")
    (tmp_path / "store").mkdir()
    shutil.copy(empty_db, tmp_path / "store" / "mlflow.db")
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


@pytest.fixture()
def store(uri) -> RecipeStore:
    return RecipeStore(uri)


def test_promote_then_get(store, tmp_path):
    values = [0.50, 0.52, 0.54]
    res = store.promote(
        "resnet18", "cifar10", FP, recipe(lr=0.1),
        {"test_probe_top1": 0.52, "test_knn_top1": 0.4, "val_knn_top1": 0.41, "note": "x"},
        prov(values, trial_id="t1"), scores=values, budget="small", source_run_id="abc123",
    )
    assert res.promoted and "first recipe for resnet18/cifar10/0123456789abcdef" in res.reason
    assert "0.520 ± 0.020 over 3 seeds" in res.reason and res.lift is None
    cur = store.get("resnet18")
    assert isinstance(cur, PromotedRecipe)
    assert cur == res.current
    assert cur.key == ("resnet18", "cifar10", FP)
    assert (cur.backbone, cur.dataset, cur.fingerprint, cur.budget, cur.state) == (
        "resnet18", "cifar10", FP, "small", "current")
    assert cur.recipe["lr"] == 0.1 and cur.recipe["backbone"] == "resnet18"
    assert cur.metric == pytest.approx(0.52) and cur.scores == (0.50, 0.52, 0.54)
    assert cur.metrics == {"test_probe_top1": pytest.approx(0.52), "test_knn_top1": 0.4, "val_knn_top1": 0.41}
    assert cur.score.n == 3 and cur.score.std == pytest.approx(0.02)
    assert cur.verdict == "better_than_baselines" and cur.verdict_line.startswith("better_than_baselines:")
    assert cur.source_run_id == "abc123"
    assert cur.provenance["search_id"] == "s1" and cur.provenance["previous"] is None
    assert cur.provenance["verdict"]["lift"]["floor"]["low"] > 0
    assert cur.provenance["fingerprint"]["digest"] == FP
    assert cur.updated_at.endswith("Z")
    # the MLflow run: name, tags, metric, recipe.json artifact next to the database
    run = store.client.get_run(cur.run_id)
    assert run.info.run_name == f"resnet18/cifar10/{FP}"
    tags = run.data.tags
    assert tags["rs.state"] == "current" and tags["rs.schema"] == SCHEMA == "2"
    assert (tags["rs.fingerprint"], tags["rs.budget"], tags["rs.verdict"]) == (FP, "small", "better_than_baselines")
    assert json.loads(tags["rs.scores"]) == values
    assert json.loads(tags["rs.recipe"]) == cur.recipe
    assert json.loads(tags["rs.provenance"])["trial_id"] == "t1"
    assert run.data.metrics["test_probe_top1"] == pytest.approx(0.52)
    assert run.info.status == "FINISHED"
    art = tmp_path / "store" / "artifacts"
    assert json.loads(next(art.rglob("recipe.json")).read_text()) == cur.recipe
    assert store.get("resnet18", dataset="cifar100") is None
    assert store.get("resnet18", fingerprint=FP2) is None
    assert store.get("vit_tiny_patch16_224") is None
    assert store.get_key("resnet18", "cifar10", FP) == cur and store.get_key("resnet18", "cifar10", FP2) is None


def test_replacement_rule_on_validation(store):
    first = promote(store, [0.330, 0.318, 0.342], rec=recipe(lr=0.1)).current
    assert first.val_scores == {0: 0.330, 1: 0.318, 2: 0.342}
    # overlapping val scores on the same seeds: a higher mean, but the paired interval includes 0 -> kept
    overlap = promote(store, [0.335, 0.350, 0.322], rec=recipe(lr=0.2))
    assert not overlap.promoted and overlap.current == first
    assert overlap.lift.low < 0 < overlap.lift.high and overlap.lift.mean > 0
    assert overlap.reason.startswith("val_knn_top1 lift over the current recipe +0.006 [")
    assert "includes 0 (paired t interval over seeds (95%)); kept the current recipe" in overlap.reason
    assert first.run_id in overlap.reason
    # clearly worse -> kept, the interval is below 0
    worse = promote(store, [0.20, 0.21, 0.22], rec=recipe(lr=0.3))
    assert not worse.promoted and "is below 0" in worse.reason and worse.current.run_id == first.run_id
    # one seed: no interval, never replaces without force
    single = promote(store, [0.9], rec=recipe(lr=0.35))
    assert not single.promoted and "no val_knn_top1 interval" in single.reason
    # other seeds than the current recipe's: Welch
    welch = promote(store, [0.371, 0.381, 0.361], rec=recipe(lr=0.38), val={7: 0.335, 8: 0.350, 9: 0.322})
    assert not welch.promoted and "Welch" in welch.reason
    # clearly better on val -> replaced, the reason states the interval
    better = promote(store, [0.372, 0.361, 0.381], rec=recipe(lr=0.4))
    iv = better.lift
    assert better.promoted and better.current.recipe["lr"] == 0.4 and iv.low > 0
    assert better.reason == (f"val_knn_top1 lift over the current recipe {iv.fmt(3)} "
                             f"(paired t interval over seeds (95%)); replaced")
    assert better.current.provenance["previous"]["run_id"] == first.run_id
    assert better.current.provenance["previous"]["scores"] == [0.330, 0.318, 0.342]
    assert better.current.provenance["previous"]["lift"]["low"] == pytest.approx(iv.low)
    assert better.current.provenance["promotion_reason"] == better.reason
    # force replaces even a worse one
    forced = promote(store, [0.10, 0.11, 0.12], rec=recipe(lr=0.5), force=True, verdict="below_floor")
    assert forced.promoted and "forced: replaced" in forced.reason and forced.lift.high < 0
    cur = store.get("resnet18")
    assert cur.recipe["lr"] == 0.5 and cur.verdict == "below_floor" and cur.provenance["forced"] is True
    assert [h.recipe["lr"] for h in store.history("resnet18")] == [0.5, 0.4, 0.1]  # refused ones leave no trace


def test_replacement_never_reads_a_test_metric(store):
    """A far better test score with worse val scores is kept out; worse test with better val goes in."""
    first = promote(store, [0.30, 0.31, 0.32], rec=recipe(lr=0.1), val={1: 0.40, 2: 0.41, 3: 0.42}).current
    test_only = promote(store, [0.90, 0.91, 0.92], rec=recipe(lr=0.2), val={1: 0.30, 2: 0.31, 3: 0.30})
    assert not test_only.promoted and store.get("resnet18").run_id == first.run_id
    val_only = promote(store, [0.10, 0.11, 0.12], rec=recipe(lr=0.3), val={1: 0.50, 2: 0.52, 3: 0.51})
    assert val_only.promoted and store.get("resnet18").recipe["lr"] == 0.3


def test_a_withheld_verdict_serves_nothing_and_keeps_the_current_recipe(store):
    held = promote(store, [0.20, 0.21, 0.19], rec=recipe(lr=0.2), served=False, verdict="no_significant_lift",
                   withheld_because="no recipe's lift over the untrained floor is shown")
    assert not held.promoted and held.current is None and "nothing served" in held.reason
    assert store.get("resnet18") is None and store.list() == []
    w = store.withheld("resnet18")
    assert w is not None and w.state == "withheld" and w.verdict == "no_significant_lift"
    assert w.provenance["withheld_because"].startswith("no recipe's lift")
    first = promote(store, [0.33, 0.32, 0.34], rec=recipe(lr=0.1)).current
    held = promote(store, [0.40, 0.41, 0.42], rec=recipe(lr=0.3), served=False)
    assert not held.promoted and held.current == first and store.get("resnet18") == first


def test_records_from_before_val_scores_read_them_from_provenance(store):
    """A store written before rs.val_scores: the winner's val values and the verdict's seeds."""
    from recipe_search.records import val_scores as _val_scores

    prov_old = {"verdict": {"winner": "t1", "seeds": [1, 2, 3]},
                "confirmation": [{"name": "t1", "val_knn_top1": {"values": [0.3, 0.31, 0.32]}}]}
    assert _val_scores(None, prov_old) == {1: 0.3, 2: 0.31, 3: 0.32}
    assert _val_scores(None, {}) is None and _val_scores('{"4": 0.5}', prov_old) == {4: 0.5}


def test_fingerprints_never_collide(store):
    """Same backbone and dataset name, different proxy data/budget: two keys, two current recipes."""
    a = promote(store, [0.50, 0.51, 0.52], fp=FP, budget="small", rec=recipe(lr=0.1))
    b = promote(store, [0.20, 0.21, 0.22], fp=FP2, budget="small", rec=recipe(lr=0.2))  # far worse, still lands
    assert a.promoted and b.promoted and "first recipe" in b.reason
    assert store.get_key("resnet18", "cifar10", FP).recipe["lr"] == 0.1
    assert store.get_key("resnet18", "cifar10", FP2).recipe["lr"] == 0.2
    # a better recipe under FP2 supersedes only FP2's
    c = promote(store, [0.40, 0.41, 0.42], fp=FP2, budget="proxy", rec=recipe(lr=0.3))
    assert c.promoted and c.current.budget == "proxy"
    assert store.get_key("resnet18", "cifar10", FP).run_id == a.current.run_id
    fps = store.fingerprints("resnet18")
    assert [(r.fingerprint, r.recipe["lr"]) for r in fps] == [(FP2, 0.3), (FP, 0.1)]  # newest first
    assert [r.fingerprint for r in store.fingerprints("resnet18", dataset="cifar10")] == [FP2, FP]
    assert store.fingerprints("resnet18", dataset="stl10") == [] and store.fingerprints("nope") == []
    assert store.get("resnet18").fingerprint == FP2  # newest
    assert store.get("resnet18", fingerprint=FP).recipe["lr"] == 0.1
    assert store.get("resnet18", dataset="cifar10", fingerprint=FP2).recipe["lr"] == 0.3
    assert store.get("resnet18", dataset="stl10", fingerprint=FP) is None
    assert sorted(r.key for r in store.list()) == [("resnet18", "cifar10", FP), ("resnet18", "cifar10", FP2)]
    # another dataset coexists too; list() sorts by backbone, dataset, newest first
    promote(store, [0.3, 0.31, 0.32], dataset="stl10", fp=FP, rec=recipe(lr=0.6))
    assert [(r.dataset, r.fingerprint) for r in store.list()] == [
        ("cifar10", FP2), ("cifar10", FP), ("stl10", FP)]
    assert store.get("resnet18", dataset="cifar10").recipe["lr"] == 0.3
    assert all(r.state == "current" for r in store.list())


def test_history_list_backbones(store):
    promote(store, [0.50, 0.51, 0.52], rec=recipe(lr=0.1))
    promote(store, [0.30, 0.31, 0.32], backbone="mobilenetv3_small_100")
    promote(store, [0.40, 0.41, 0.42], rec=recipe(lr=0.2))  # refused
    promote(store, [0.70, 0.71, 0.72], rec=recipe(lr=0.3))
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
    def bad(*, fp=FP, metrics=None, scores=(0.5, 0.5), backbone="resnet18", dataset="cifar10", rec=None,
            budget="small"):
        return store.promote(backbone, dataset, fp, rec or recipe(), {"test_probe_top1": 0.5} if metrics is None
                             else metrics, {}, scores=list(scores), budget=budget)

    with pytest.raises(ValueError, match="test_probe_top1"):
        bad(metrics={"probe_top1": 0.5})  # the old name is not the primary metric
    with pytest.raises(ValueError, match="test_probe_top1"):
        bad(metrics={"test_probe_top1": float("nan")})
    with pytest.raises(ValueError, match="not the mean of the scores"):
        bad(metrics={"test_probe_top1": 0.6})
    with pytest.raises(ValueError, match="scores"):
        bad(scores=())
    with pytest.raises(ValueError, match="scores"):
        bad(scores=(0.5, float("inf")))
    with pytest.raises(ValueError, match="fingerprint"):
        bad(fp="small")
    with pytest.raises(ValueError, match="fingerprint"):
        bad(fp=FP.upper())
    with pytest.raises(ValueError, match="backbone"):
        bad(backbone="resnet50")
    with pytest.raises(ValueError, match="dataset"):
        bad(dataset="a/b")
    with pytest.raises(TypeError):
        store.promote("resnet18", "cifar10", FP, recipe(), {"test_probe_top1": 0.5}, {})  # scores is required
    from trainer.errors import RecipeError

    with pytest.raises(RecipeError):
        bad(rec=recipe(lr=-1.0))
    assert store.list() == []


def write_old_promotion(uri: str, backbone: str = "resnet18") -> str:
    """A promotion run as recipe-search wrote it before rs.schema 2: key (backbone,
    dataset, budget), metric probe_top1, no rs.schema / rs.fingerprint / rs.scores."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("recipe-store")
    exp_id = exp.experiment_id if exp else c.create_experiment(
        "recipe-store", artifact_location=(Path(sqlite_path(uri)).parent / "artifacts").as_uri(),
        tags={"rs.kind": "store"})
    run = c.create_run(exp_id, run_name=f"{backbone}/cifar10/small", tags={
        "rs.kind": "promotion", "rs.backbone": backbone, "rs.dataset": "cifar10", "rs.budget": "small",
        "rs.state": "current", "rs.recipe": json.dumps(recipe(backbone)), "rs.provenance": "{}",
        "rs.source_run_id": "", "rs.promoted_at": "2026-01-01T00:00:00.000000Z"})
    c.log_metric(run.info.run_id, "probe_top1", 0.5)
    c.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def test_old_schema_store_is_refused(store, uri):
    promote(store, [0.5, 0.51], backbone="mobilenetv3_small_100")
    old_id = write_old_promotion(uri)
    db = sqlite_path(uri)
    reads = {"list": store.list, "get": lambda: store.get("mobilenetv3_small_100"),
             "get_key": lambda: store.get_key("resnet18", "cifar10", FP), "fingerprints":
             lambda: store.fingerprints("mobilenetv3_small_100"), "history": lambda: store.history("resnet18"),
             "backbones": store.backbones, "check_schema": store.check_schema,
             "promote": lambda: promote(store, [0.9, 0.91]),
             "read-only": lambda: RecipeStore(uri, create=False).get("resnet18")}
    for name, call in reads.items():
        with pytest.raises(StoreOutdated) as e:
            call()
        msg = str(e.value)
        assert isinstance(e.value, StoreUnavailable), name
        assert "\n" not in msg, name
        assert msg.startswith(f"recipe store {uri} holds promotions from before metric names said their split "
                              "(metric probe_top1, no rs.schema tag)"), msg
        assert f"move {db} aside" in msg and "RECIPE_SEARCH_HOME" in msg and "re-run the searches" in msg
        assert old_id in msg
    store.ping()  # connecting still works: only the promotions are refused
    # nothing was written by the refused promotion
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs([store.experiment_id])
    assert len(runs) == 2
    # a store of a newer schema is refused too
    MlflowClient(uri).set_tag(old_id, "rs.schema", "3")
    with pytest.raises(StoreOutdated, match=r"another schema \(rs.schema '3'"):
        store.list()


def test_cli_show_and_list(store, uri, capsys):
    from typer.testing import CliRunner

    from recipe_search.cli import app

    runner = CliRunner()
    promote(store, [0.50, 0.51, 0.52], fp=FP, budget="small", rec=recipe(lr=0.1))
    promote(store, [0.40, 0.41, 0.42], fp=FP2, dataset="stl10", budget="proxy", rec=recipe(lr=0.2),
            verdict="no_significant_lift")
    r = runner.invoke(app, ["show", "resnet18", "--tracking-uri", uri])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert (shown["fingerprint"], shown["dataset"], shown["verdict"]) == (FP2, "stl10", "no_significant_lift")
    assert shown["test_probe_top1"]["values"] == [0.40, 0.41, 0.42] and shown["test_probe_top1"]["n"] == 3
    assert shown["seeds"] == [0, 1, 2] and shown["recipe"]["lr"] == 0.2
    assert shown["verdict_line"].startswith("no_significant_lift: test_probe_top1 0.410")
    assert shown["provenance"]["verdict"]["floor"]["n"] == 3
    err = r.stderr
    assert "verdict: no_significant_lift" in err
    assert "2 current recipes; showing the newest" in err and f"cifar10 fingerprint {FP}" in err
    r = runner.invoke(app, ["show", "resnet18", "--fingerprint", FP[:6], "--tracking-uri", uri])
    assert r.exit_code == 0 and json.loads(r.stdout)["recipe"]["lr"] == 0.1 and "showing" not in r.stderr
    r = runner.invoke(app, ["show", "resnet18", "--dataset", "cifar10", "--tracking-uri", uri])
    assert json.loads(r.stdout)["fingerprint"] == FP
    r = runner.invoke(app, ["show", "resnet18", "--fingerprint", "0000", "--tracking-uri", uri])
    assert r.exit_code == 2 and "matches no recipe" in r.stderr and FP2 in r.stderr
    r = runner.invoke(app, ["list", "--tracking-uri", uri])
    assert r.exit_code == 0, r.output
    rows = [line.strip() for line in r.stdout.splitlines() if line.strip().startswith("resnet18")]
    assert len(rows) == 2
    assert FP in rows[0] and "cifar10" in rows[0] and "better_than_baselines" in rows[0] and "0.510 ± 0.010" in rows[0]
    assert FP2 in rows[1] and "proxy" in rows[1] and "no_significant_lift" in rows[1]
    assert max(len(line.rstrip()) for line in r.stdout.splitlines()) <= 160
    r = runner.invoke(app, ["list", "--json", "--tracking-uri", uri])
    assert [(x["dataset"], x["fingerprint"]) for x in json.loads(r.stdout)] == [("cifar10", FP), ("stl10", FP2)]
    # an old store: one line, exit 2, no traceback
    write_old_promotion(uri)
    for args in (["list"], ["show", "resnet18"], ["list", "--json"]):
        r = runner.invoke(app, [*args, "--tracking-uri", uri])
        assert r.exit_code == 2, (args, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: recipe store ") and "no rs.schema tag" in lines[0]
        assert "Traceback" not in r.output


def test_accepts_recipe_object(store):
    from trainer.recipe import Recipe

    r = Recipe(backbone="resnet18", lr=0.02)
    res = promote(store, [0.5, 0.5], rec=r)
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
        promote(ro, [0.5])


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
    promote(store, [0.5])
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
            promote(RecipeStore(uri), [0.1 * (i + 1) + d for d in (0.0, 0.001, 0.002)], rec=recipe(seed=i))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    currents = [h for h in store.history("resnet18") if h.state == "current"]
    assert len(currents) == 1 and currents[0].metric == pytest.approx(0.401)


def test_uri_helpers(make_search_home):
    home = make_search_home()
    assert home.tracking_uri == f"sqlite:///{home.path}/mlflow.db"
    assert sqlite_path(f"sqlite:///{home.path}/a.db") == home.path / "a.db"
    assert sqlite_path("sqlite:///:memory:") is None and sqlite_path("http://x") is None
    assert artifact_root_for(home.tracking_uri) == (home.path / "artifacts").as_uri()
    assert artifact_root_for(f"sqlite:///{home.path}/s/x.db") == (home.path / "s" / "artifacts").as_uri()
    assert artifact_root_for("http://mlflow:5000") is None
    assert "secret" not in repr(RecipeStore("postgresql://u:secret@db/mlflow"))


def test_long_provenance_is_kept_as_artifact(store, tmp_path):
    settings = {f"k{i}": "x" * 50 for i in range(400)}
    res = promote(store, [0.5, 0.51], settings=settings, search_id="s9")
    p = res.current.provenance
    assert p["search_id"] == "s9" and p["truncated"] is True
    assert "provenance.json" in p["settings"]
    assert p["verdict"]["verdict"] == "better_than_baselines" and p["fingerprint"]["digest"] == FP  # kept in the tag
    assert res.current.verdict == "better_than_baselines"
    full = json.loads(next((tmp_path / "store" / "artifacts").rglob("provenance.json")).read_text())
    assert full["settings"] == settings


@pytest.mark.parametrize("via", ["sqlite file", "generation tag"])
def test_reads_reuse_the_current_records_until_a_promotion_lands(uri, monkeypatch, via):
    """A reader reads the current runs once and again only after a promotion landed, also
    one written by another process (another store object): via the SQLite file's stat, or
    via the experiment's rs.generation tag where there is no local file (a server)."""
    writer = RecipeStore(uri)
    reader = RecipeStore(uri, create=False, snapshot="auto" if via == "sqlite file" else "generation")
    writer.promote("resnet18", "cifar10", FP, recipe(lr=0.1), {"test_probe_top1": 0.5},
                   prov([0.5, 0.5]), scores=[0.5, 0.5], val_scores={0: 0.5, 1: 0.5})
    reads = []
    real = reader._read_currents
    monkeypatch.setattr(reader, "_read_currents", lambda: reads.append(1) or real())
    assert reader.get("resnet18").recipe["lr"] == 0.1
    assert reader.get("resnet18").recipe["lr"] == 0.1 and reader.list() and reader.backbones() == ["resnet18"]
    assert len(reads) == 1
    writer.promote("resnet18", "cifar10", FP, recipe(lr=0.2), {"test_probe_top1": 0.8},
                   prov([0.79, 0.8, 0.81]), scores=[0.79, 0.8, 0.81], val_scores={0: 0.79, 1: 0.8, 2: 0.81})
    assert reader.get("resnet18").recipe["lr"] == 0.2
    assert reader.get("resnet18").recipe["lr"] == 0.2
    assert len(reads) == 2


def test_snapshot_off_reads_every_time_and_bad_modes_are_refused(uri, monkeypatch):
    reader = RecipeStore(uri, snapshot="off")
    reads = []
    real = reader._read_currents
    monkeypatch.setattr(reader, "_read_currents", lambda: reads.append(1) or real())
    reader.list()
    reader.list()
    assert len(reads) == 2
    with pytest.raises(ValueError, match="snapshot must be one of auto, generation, off"):
        RecipeStore(uri, snapshot="sometimes")
