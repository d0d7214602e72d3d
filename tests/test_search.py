"""Searches end to end, in-process: real Ray Tune + Optuna, real MLflow on SQLite in a temp dir,
real (tiny) CIFAR-10 data. One Ray session for the module; budget ``tiny``."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")

from recipe_search.baselines import MOCO_V2, SINFONCE_LIGHT  # noqa: E402
from recipe_search.promote import promote_best  # noqa: E402
from recipe_search.search import SearchSettings, ray_session, run_search  # noqa: E402
from recipe_search.store import RecipeStore  # noqa: E402
from trainer.recipe import Recipe  # noqa: E402

BACKBONE = "mobilenetv3_small_050"
CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def data_args() -> dict:
    if CIFAR.exists():
        return {"dataset": "cifar10", "data": str(CIFAR)}
    return {"dataset": "synthetic", "data": None}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("rs-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("RECIPE_SEARCH_HOME", str(home))
    mp.setenv("RECIPE_SEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "rs-cache"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("RECIPE_SEARCH_FAULTS", raising=False)
    with ray_session(num_cpus=2):
        yield home
    mp.undo()


def client(home: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def child_runs(home: Path, search_id: str):
    c = client(home)
    exp = c.get_experiment_by_name("recipe-search")
    return c.search_runs([exp.experiment_id], f"tags.`rs.search_id` = '{search_id}' and tags.`rs.kind` = 'trial'",
                         order_by=["attributes.start_time ASC"])


@pytest.fixture(scope="module")
def e2e(env):
    settings = SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=4, seed=0, **data_args())
    outcome = run_search(settings, progress=False)
    return env, outcome


def test_search_completes_and_promotes(e2e):
    home, o = e2e
    assert o.status == "finished"
    assert len(o.trials) == 4
    assert all(t.status in ("completed", "pruned") for t in o.trials), [(t.status, t.error) for t in o.trials]
    assert o.best is not None and o.best.status == "completed"
    assert o.best.probe_top1 == max(t.probe_top1 for t in o.trials if t.probe_top1 is not None)
    assert o.promotion is not None and o.promotion.promoted, o.promotion
    assert o.overhead is not None and o.overhead > 0.5 and o.wall_s > o.tune_s > 0

    rec = RecipeStore(o.tracking_uri).get(BACKBONE)
    assert rec is not None and rec.source_run_id == o.best.run_id
    assert rec.recipe == o.best.recipe and rec.metric == pytest.approx(o.best.probe_top1)
    prov = rec.provenance
    assert prov["backbone"] == BACKBONE and prov["budget"] == "tiny" and prov["search_id"] == o.search_id
    assert prov["trial_id"] == o.best.trial_id and prov["trial_run_id"] == o.best.run_id
    assert set(prov["baselines"]) == {"mocov2", "sinfonce-light"}
    assert prov["code_version"] and prov["date"].endswith("Z")
    probes = [b["probe_top1"] for b in prov["baselines"].values() if b["probe_top1"] is not None]
    if probes:
        assert prov["lift"]["best_baseline"] == pytest.approx(o.best.probe_top1 - max(probes))


def test_parent_and_child_runs_in_mlflow(e2e):
    home, o = e2e
    c = client(home)
    parent = c.get_run(o.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["rs.kind"] == "search" and parent.data.tags["rs.search_id"] == o.search_id
    for key in ("best_probe_top1", "search_wall_s", "trials_train_s", "overhead_ratio"):
        assert key in parent.data.metrics, key
    assert parent.data.params["budget"] == "tiny"
    assert "space.yaml" in {a.path for a in c.list_artifacts(o.parent_run_id)}

    runs = child_runs(home, o.search_id)
    assert len(runs) == 4
    assert len({r.data.tags["rs.trial_id"] for r in runs}) == 4
    for r in runs:
        tags, metrics, params = r.data.tags, r.data.metrics, r.data.params
        assert tags["mlflow.parentRunId"] == o.parent_run_id
        assert tags["rs.backbone"] == BACKBONE and tags["rs.kind"] == "trial"
        assert set(params) == set(Recipe.field_names())            # the full recipe as params
        assert r.info.status == "FINISHED"
        history = c.get_metric_history(r.info.run_id, "knn_top1")
        steps = [m.step for m in history]
        assert steps == sorted(set(steps)) and steps[0] == 1       # per epoch, with step, no duplicates
        assert "duration_s" in metrics
        artifacts = {a.path for a in c.list_artifacts(r.info.run_id)}
        assert {"recipe.json", "curves.json", "curves.csv"} <= artifacts
        curves = json.loads(Path(c.download_artifacts(r.info.run_id, "curves.json")).read_text())
        assert [(p["epoch"], p["value"]) for p in curves["knn_top1"]] == [(m.step, m.value) for m in history]
        assert set(curves) >= {"loss", "knn_top1", "lr", "images_per_sec"}
        if tags["rs.status"] == "completed":
            assert steps == [1, 2]
            for key in ("probe_top1", "train_time_s", "mean_images_per_sec", "epochs_completed"):
                assert math.isfinite(metrics[key]), key
        else:
            assert tags["rs.status"] == "pruned" and "probe_top1" not in metrics


def test_tune_storage_keeps_no_weights_of_ended_trials(e2e):
    """Every trial of the finished search ended (completed or pruned): Tune's storage keeps
    their small JSON files but no checkpoint.pt / encoder.pt (~90 MB each for a real backbone)."""
    from recipe_search.search import storage_dir

    home, o = e2e
    exp = storage_dir() / o.search_id
    assert exp.is_dir(), exp
    ckpts = [d for d in exp.rglob("checkpoint_*") if d.is_dir()]
    assert len(ckpts) >= 4, ckpts  # each trial reported at least one checkpoint
    weights = [f for f in exp.rglob("*.pt")]
    assert not weights, weights
    assert any((d / "history.json").exists() for d in ckpts)
    finished = [d for d in ckpts if (d / "metrics.json").exists()]
    assert finished and all(json.loads((d / "metrics.json").read_text())["status"] == "completed" for d in finished)


def test_baselines_are_the_first_trials(e2e):
    home, o = e2e
    runs = child_runs(home, o.search_id)
    # the first two trials started (two run at once on 2 CPUs) are the baselines
    assert {r.data.tags.get("rs.baseline") for r in runs[:2]} == {"mocov2", "sinfonce-light"}
    assert all("rs.baseline" not in r.data.tags for r in runs[2:])
    runs = sorted(runs[:2], key=lambda r: r.data.tags["rs.baseline"] != "mocov2")
    for r, b in zip(runs, (MOCO_V2, SINFONCE_LIGHT)):
        recipe = json.loads(r.data.tags["rs.recipe"])
        for k in ("lr", "temperature", "weight_decay", "proj_hidden_dim", "smoothing", "crop_min_scale"):
            assert recipe[k] == b.values[k], k
        assert recipe["batch_size"] == 16  # the tiny budget's fixed batch
    # ASHA never stops a baseline: both reach the probe, so the lift is always reported
    assert {b: m["status"] for b, m in o.baselines.items()} == {"mocov2": "completed", "sinfonce-light": "completed"}
    assert o.lift["mocov2"] is not None and o.lift["sinfonce-light"] is not None
    assert o.lift["best_baseline"] == pytest.approx(
        o.best.probe_top1 - max(m["probe_top1"] for m in o.baselines.values()))


def test_promotion_replacement_rule(e2e):
    home, o = e2e
    store = RecipeStore(o.tracking_uri)
    best = o.best
    worse = dataclasses.replace(best, metrics={**best.metrics, "probe_top1": best.probe_top1 - 0.05})
    kwargs = dict(backbone=BACKBONE, dataset=data_args()["dataset"], budget="tiny",
                  provenance={"search_id": "manual"})
    r = promote_best(store, best=worse, **kwargs)
    assert not r.promoted and r.current.metric == pytest.approx(best.probe_top1)
    r = promote_best(store, best=worse, force=True, **kwargs)
    assert r.promoted and r.current.metric == pytest.approx(best.probe_top1 - 0.05)
    better = dataclasses.replace(best, metrics={**best.metrics, "probe_top1": best.probe_top1 + 0.01})
    r = promote_best(store, best=better, **kwargs)
    assert r.promoted and r.current.metric == pytest.approx(best.probe_top1 + 0.01)
    # another budget is another key: not compared with this one
    r = promote_best(store, best=worse, **{**kwargs, "budget": "smoke"})
    assert r.promoted


def test_failing_and_diverging_trials_are_recorded_and_the_search_goes_on(env):
    settings = SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=4, seed=1, experiment="recipe-search",
                              faults="mocov2=raise,sinfonce-light=nan", **data_args())
    o = run_search(settings, progress=False)
    assert o.status == "finished"
    by = {t.baseline or f"tpe{i}": t for i, t in enumerate(o.trials)}
    assert by["mocov2"].status == "failed" and "InjectedFault" in by["mocov2"].error
    assert by["sinfonce-light"].status == "diverged" and "non-finite loss" in by["sinfonce-light"].error
    tpe = [t for t in o.trials if not t.baseline]
    assert len(tpe) == 2 and any(t.status == "completed" for t in tpe)
    assert o.best is not None and o.best.baseline is None and o.promotion is not None
    assert o.lift["mocov2"] is None and o.lift["best_baseline"] is None
    c = client(env)
    for t in (by["mocov2"], by["sinfonce-light"]):
        run = c.get_run(t.run_id)
        assert run.info.status == "FAILED" and run.data.tags["rs.error"]
        assert "error.txt" in {a.path for a in c.list_artifacts(t.run_id)}
    assert c.get_run(o.parent_run_id).data.metrics["trials_failed"] == 1
    assert c.get_run(o.parent_run_id).data.metrics["trials_diverged"] == 1


def test_one_process_per_search(tmp_path):
    from recipe_search.errors import SearchError
    from recipe_search.search import _exclusive

    with _exclusive(tmp_path / "s1", "s1"):
        with pytest.raises(SearchError, match=f"search s1 is running in another process \\(pid {os.getpid()}\\)"):
            with _exclusive(tmp_path / "s1", "s1"):
                pass
    with _exclusive(tmp_path / "s1", "s1"):  # released
        pass


def test_a_trial_lost_by_tune_in_a_crash_is_adopted_not_duplicated(tmp_path):
    """Tune may lose a trial started after its last state snapshot; the restored searcher then
    suggests the same point under a new trial id, whose MLflow run must be the old one."""
    from recipe_search.tracking import TAG_POINT, Tracker, point_key
    from recipe_search.trial import TrialContext

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "adopt")
    parent = tracker.parent_run("s1", name="search-s1", tags={}, params={})
    point = {"lr": 0.1, "temperature": 0.2}
    tags = {TAG_POINT: point_key(point)}
    old, _ = tracker.child_run(parent, "s1", "aaaa", name="tpe-aaaa", tags=tags)
    tracker.log_metrics(old, {"knn_top1": 0.5}, step=1)
    # a trial Tune still knows keeps its own run even with the same point
    other, _ = tracker.child_run(parent, "s1", "bbbb", name="tpe-bbbb", tags=tags, known_trial_ids=["aaaa"])
    assert other != old
    # the lost trial's point comes back as cccc: adopted, with its last logged epoch
    run, last = tracker.child_run(parent, "s1", "cccc", name="tpe-cccc", tags=tags, known_trial_ids=["bbbb"])
    assert run == old and last == 1
    assert tracker.client.get_run(run).data.tags["rs.trial_id"] == "cccc"
    assert len(tracker.trial_runs("s1")) == 2

    ctx = TrialContext(backbone="resnet18", space=None, budget_fixed={}, image_size=32, max_epochs=2, seed=0,
                       data=None, extra={"finished": {"aaaa": {"probe_top1": 0.7}},
                                         "finished_points": {point_key(point): {"probe_top1": 0.6}}})
    assert ctx.finished_result("aaaa", {}) == {"probe_top1": 0.7}
    assert ctx.finished_result("dddd", dict(point)) == {"probe_top1": 0.6}
    assert ctx.finished_result("dddd", {"lr": 0.2, "temperature": 0.2}) is None


def test_study_storage_on_sqlite_resumes_from_a_second_driver(env, tmp_path, monkeypatch):
    """``--study-storage sqlite:///...``: the Optuna study lives in its own database, so a second
    driver with an empty $RECIPE_SEARCH_HOME (no Tune state) continues the search from it and
    from the shared MLflow store: only the new samples run, nothing is duplicated."""
    optuna = pytest.importorskip("optuna")
    study_url = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("RECIPE_SEARCH_HOME", str(tmp_path / "driver1"))
    first = run_search(SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=3, seed=1, max_epochs=1,
                                      tracking_uri=tracking, study_storage=study_url, **data_args()),
                       progress=False)
    assert first.status == "finished" and len(first.trials) == 3
    study = optuna.load_study(study_name=f"recipe-search:{first.search_id}", storage=study_url)
    assert len([t for t in study.trials if t.state.is_finished()]) == 3

    monkeypatch.setenv("RECIPE_SEARCH_HOME", str(tmp_path / "driver2"))
    notes = []
    second = run_search(SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=4, seed=1, max_epochs=1,
                                       tracking_uri=tracking, study_storage=study_url, search_id=first.search_id,
                                       **data_args()),
                        resume=True, progress=False, on_note=notes.append)
    assert any("continuing its Optuna study" in n for n in notes), notes
    assert second.search_id == first.search_id and second.parent_run_id == first.parent_run_id
    study = optuna.load_study(study_name=f"recipe-search:{first.search_id}", storage=study_url)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 4, [(t.number, t.state) for t in study.trials]
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=tracking)
    exp = c.get_experiment_by_name("recipe-search")
    runs = c.search_runs([exp.experiment_id], f"tags.`rs.search_id` = '{first.search_id}' and "
                                              "tags.`rs.kind` = 'trial'")
    assert len(runs) == 4 and len({r.data.tags["rs.trial_id"] for r in runs}) == 4
    assert all(r.info.status == "FINISHED" for r in runs), [r.info.status for r in runs]
    assert not (tmp_path / "driver2" / "mlflow.db").exists()  # the second driver wrote to the shared store


def test_node_preflight_loads_the_data_on_every_node(env, tmp_path):
    """``check_nodes`` (run when a search joins a cluster with --ray-address) pins a task to
    each node: it sees the driver's probe in the Tune storage and loads the proxy data."""
    import ray

    from recipe_search.budget import get_budget
    from recipe_search.errors import SearchError
    from recipe_search.nodes import PROBE_PREFIX, _probe_node, check_nodes

    d = data_args()
    spec = get_budget("tiny").data_spec(d["dataset"], d["data"])
    notes = check_nodes(ray, tmp_path / "storage", spec, 16, 0)
    assert notes == [f"1 Ray node(s) checked: each can read the data and see the Tune storage {tmp_path / 'storage'}"]
    assert not list((tmp_path / "storage").glob(PROBE_PREFIX + "*"))  # the probe is removed

    bad = get_budget("tiny").data_spec("cifar10", str(tmp_path / "nowhere" / "cifar10-jpeg.tar.gz"))
    with pytest.raises(SearchError) as e:
        check_nodes(ray, tmp_path / "storage", bad, 16, 0)
    msg = str(e.value)
    assert msg.startswith("the Ray cluster cannot run this search:") and "cannot load the data" in msg, msg
    assert "nowhere" in msg and "node " in msg, msg

    # a node that does not share the storage directory (simulated: the probe is not there)
    out = _probe_node(str(tmp_path / "not-shared" / ".rs-probe-x"), "t", None, 16, 0)
    assert len(out["problems"]) == 1 and "shared filesystem" in out["problems"][0], out


@pytest.mark.parametrize("every, latest", [(2, "checkpoint_000001"), (0, "checkpoint_000000")])
def test_checkpoint_every_n_epochs(env, tmp_path, monkeypatch, every, latest):
    """``checkpoint_every=2`` with 3 epochs: a trial persists a checkpoint at epoch 2 and its
    final one (no weights), not one per epoch: its latest is Tune's second, checkpoint_000001.
    With 0 the final one is its only checkpoint."""
    from recipe_search.search import storage_dir

    monkeypatch.setenv("RECIPE_SEARCH_HOME", str(tmp_path / "home"))
    o = run_search(SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=2, max_epochs=3, seed=2,
                                  checkpoint_every=every, **data_args()), progress=False)
    assert o.status == "finished" and len(o.trials) == 2  # the two baselines: never pruned
    trial_dirs = [d for d in (storage_dir() / o.search_id).iterdir() if d.name.startswith("run_trial_")]
    assert len(trial_dirs) == 2, trial_dirs
    for d in trial_dirs:
        ckpts = sorted(c.name for c in d.glob("checkpoint_*"))
        assert ckpts == [latest], (d.name, ckpts)
        assert json.loads((d / ckpts[0] / "metrics.json").read_text())["epochs_completed"] == 3
        assert not list(d.rglob("*.pt"))
    c = client(tmp_path / "home")
    for r in child_runs(tmp_path / "home", o.search_id):  # every epoch is still logged
        assert [m.step for m in c.get_metric_history(r.info.run_id, "knn_top1")] == [1, 2, 3]


def test_janitor_strips_weights_of_stopped_and_failed_trials_only(tmp_path):
    from types import SimpleNamespace

    from ray.tune import Checkpoint

    from recipe_search.janitor import CheckpointJanitor

    def trial(name: str, last_result: dict):
        d = tmp_path / name
        d.mkdir()
        for f in ("checkpoint.pt", "encoder.pt", "history.json"):
            (d / f).write_text(f)
        return d, SimpleNamespace(checkpoint=Checkpoint.from_directory(str(d)), last_result=last_result)

    janitor = CheckpointJanitor()
    pruned_dir, pruned = trial("pruned", {"epoch": 1})
    failed_dir, failed = trial("failed", {"epoch": 2})
    done_dir, done = trial("done", {"epoch": 2, "final": 1.0})
    janitor.on_trial_complete(pruned, [])
    janitor.on_trial_error(failed, [])
    janitor.on_trial_complete(done, [])  # a finished trial's checkpoint is left alone
    assert sorted(p.name for p in pruned_dir.iterdir()) == ["history.json"]
    assert sorted(p.name for p in failed_dir.iterdir()) == ["history.json"]
    assert sorted(p.name for p in done_dir.iterdir()) == ["checkpoint.pt", "encoder.pt", "history.json"]
    janitor.on_trial_complete(SimpleNamespace(checkpoint=None, last_result={}), [])  # never checkpointed
    assert janitor.freed_files == 4


def test_node_preflight_needs_a_writable_storage(env, tmp_path):
    import ray

    from recipe_search.errors import SearchError
    from recipe_search.nodes import check_nodes

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SearchError, match="is not writable from this driver"):
        check_nodes(ray, blocker / "storage", None, 16, 0)
