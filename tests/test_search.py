"""Searches end to end, in-process: real Ray Tune + Optuna, real MLflow on SQLite in a temp dir,
real (tiny) CIFAR-10 data. One Ray session for the module; budget ``tiny``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")

import rs_faults  # noqa: E402 - tests/faults (on sys.path by conftest)
from recipe_search import __version__, records  # noqa: E402
from recipe_search.baselines import MOCO_V2, SINFONCE_LIGHT  # noqa: E402
from recipe_search.plan import SearchSettings  # noqa: E402
from recipe_search.search import run_search  # noqa: E402
from recipe_search.store import RecipeStore  # noqa: E402
from trainer.recipe import Recipe  # noqa: E402

BACKBONE = "mobilenetv3_small_050"
CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def data_args() -> dict:
    if CIFAR.exists():
        return {"dataset": "cifar10", "data": str(CIFAR)}
    return {"dataset": "synthetic", "data": None}


@pytest.fixture(scope="module")
def env(search_home):  # conftest: the module's home and Ray session
    return search_home


def client(home: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def child_runs(home: Path, search_id: str):
    c = client(home)
    exp = c.get_experiment_by_name("recipe-search")
    return c.search_runs([exp.experiment_id], records.filter(search_id=search_id, kind=records.TRIAL),
                         order_by=["attributes.start_time ASC"])


E2E_NOTES: list[str] = []  # what the e2e search printed


@pytest.fixture(scope="module")
def e2e(env):
    settings = SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=4, seed=0, report_looks=[2, 3],
                              **data_args())  # two looks (the tiny budget has one): the sequential path
    outcome = run_search(settings, progress=False, on_note=E2E_NOTES.append)
    return env, outcome


def test_the_budget_line_shows_the_confirmation_as_run_not_the_budgets_default(e2e):
    line = next(n for n in E2E_NOTES if "confirmation: select on val" in n)
    assert "seeds added at 2, 3 until decided" in line, line  # --report-looks 2,3, not the tiny budget's (2,)


def test_search_confirms_on_fresh_seeds_and_ends_with_a_verdict(e2e):
    home, o = e2e
    assert o.status == "finished"
    search = [t for t in o.trials if t.stage == "search"]
    confirm = [t for t in o.trials if t.stage == "confirmation"]
    assert len(search) == 4
    assert all(t.status in ("completed", "pruned") for t in o.trials), [(t.status, t.error) for t in o.trials]
    assert o.best is not None and o.best.objective == max(t.objective for t in search if t.objective is not None)
    # select: the finalist (tiny: k=1, when a searched trial completed) and both baselines on seeds 1, 2 (val only)
    select = [t for t in confirm if t.phase == "select"]
    report = [t for t in confirm if t.phase == "report"]
    names = {t.job for t in select}
    assert {"mocov2", "sinfonce-light"} <= names and len(names) <= 3
    assert sorted({t.seed for t in select}) == [1, 2] and len(select) == 2 * len(names)
    assert all(t.recipe["seed"] == t.seed for t in confirm)
    assert not any(k.startswith("test_") for t in select for k in t.metrics), "the select phase read the test split"
    assert o.wall_s > o.tune_s > 0 and o.search_s > 0 and o.confirm_s > 0

    # report: the winner and the reference baseline on fresh seeds (tiny: looks at 2 and 3 seeds, seeds 3-5)
    v = o.verdict
    assert v is not None and v.verdict in ("better_than_baselines", "no_significant_lift", "below_floor")
    assert v.seeds in ([3, 4], [3, 4, 5]) and v.selection.seeds == [1, 2] and v.looks == (2, 3)
    assert {t.job for t in report} == set(o.selection.report_names)
    assert sorted({t.seed for t in report}) == v.seeds and all("test_probe_top1" in t.metrics for t in report)
    assert v.line.startswith(f"verdict: {v.verdict}") and "floor" in v.line and "detectable" in v.line
    assert set(o.floor["test"]) == set(v.seeds) and v.floor.values == tuple(o.floor["test"][s]["test_probe_top1"]
                                                                            for s in v.seeds)
    assert "floor" in v.lift and v.mde is not None and v.mde > 0
    # every report run and the floor recorded which test images they got right: the image noise is paired
    from recipe_search.tracking import CORRECT_ARTIFACT, Tracker
    from trainer.per_image import KEY, decode

    tracker = Tracker(o.tracking_uri, "recipe-search")
    sizes = set()
    for t in report:
        bits = decode(tracker.read_text(t.run_id, CORRECT_ARTIFACT))
        assert bits.mean() == pytest.approx(t.metrics["test_probe_top1"])
        sizes.add(bits.size)
    sizes |= {decode(o.floor["test"][s][KEY]).size for s in v.seeds}
    assert len(sizes) == 1 and sizes.pop() > 1  # one bit per test image, the same images everywhere
    assert {d.image_method for d in v.comparisons.values()} == {"paired"}
    c = client(home)
    tags = c.get_run(o.parent_run_id).data.tags
    assert tags["rs.verdict"] == v.verdict and tags["rs.verdict_line"] == v.line
    assert tags["rs.served"] == (v.served or "")

    store = RecipeStore(o.tracking_uri)
    rec = store.get(BACKBONE)
    if v.served is None:  # nothing served: a withheld record says why, and nothing is current
        assert rec is None and o.promotion is not None and not o.promotion.promoted
        held = store.withheld(BACKBONE)
        assert held is not None and held.provenance["withheld_because"]
        return
    assert o.promotion is not None and o.promotion.promoted, o.promotion
    served = next(r for r in o.report if r.name == v.served)
    assert rec.fingerprint == o.fingerprint["digest"]
    assert list(rec.scores) == pytest.approx(served.values("test_probe_top1", v.seeds))
    assert set(rec.val_scores) == set(v.seeds) | set(v.selection.seeds)
    prov = rec.provenance
    assert prov["verdict"]["verdict"] == v.verdict and prov["verdict"]["seeds"] == v.seeds
    assert prov["fingerprint"]["digest"] == o.fingerprint["digest"] and prov["search_id"] == o.search_id
    assert prov["code_version"] and prov["date"].endswith("Z")


def test_parent_and_child_runs_in_mlflow(e2e):
    home, o = e2e
    c = client(home)
    parent = c.get_run(o.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["rs.kind"] == "search" and parent.data.tags["rs.search_id"] == o.search_id
    for key in ("best_search_val_knn_top1", "search_wall_s", "search_stage_s", "confirm_stage_s",
                "floor_val_knn_top1", "floor_test_probe_top1", "trials_train_s"):
        assert key in parent.data.metrics, key
    assert parent.data.params["budget"] == "tiny" and parent.data.params["confirm_seeds"] == "1,2"
    # every setting given (recipe_search/settings.py) is a param, with the plan's resolved values
    given = {"backbone", "dataset", "budget", "seed", "experiment", "sampler", "early_stopping",
             "reuse_confirmations", "report_looks", "num_samples", "force", "yes", "download", *data_args()}
    assert given <= set(parent.data.params), given - set(parent.data.params)
    assert parent.data.params["report_looks"] == "2,3" and parent.data.params["sampler"] == "tpe"
    assert {"space.yaml", "verdict.json"} <= {a.path for a in c.list_artifacts(o.parent_run_id)}
    digest = o.fingerprint["data_digest"][:32]
    assert [d.dataset.digest for d in parent.inputs.dataset_inputs] == [digest]

    runs = child_runs(home, o.search_id)
    assert len(runs) == len(o.trials)
    assert len({r.data.tags["rs.trial_id"] for r in runs}) == len(runs)
    for r in runs:
        tags, metrics, params = r.data.tags, r.data.metrics, r.data.params
        assert tags["mlflow.parentRunId"] == o.parent_run_id
        assert tags["rs.backbone"] == BACKBONE and tags["rs.kind"] == "trial"
        assert tags["rs.fingerprint"] == o.fingerprint["digest"]
        assert [d.dataset.digest for d in r.inputs.dataset_inputs] == [digest]  # the UI's Dataset column
        # the full recipe as params (``method`` is left out while it is the default, mocov2)
        assert set(params) <= set(Recipe.field_names()) and set(Recipe.field_names()) - set(params) <= {"method"}
        assert r.info.status == "FINISHED"
        history = c.get_metric_history(r.info.run_id, "val_knn_top1")
        steps = [m.step for m in history]
        assert steps == sorted(set(steps))       # per epoch, with step, no duplicates
        losses = [m.step for m in c.get_metric_history(r.info.run_id, "loss")]
        if tags["rs.stage"] == "search":  # ASHA and the progress view read val every epoch
            assert steps[0] == 1 and losses[:len(steps)] == steps
        else:  # a confirmation run uses only its final val figure: the monitor ran after the last epoch alone
            assert len(steps) == 1 and steps == losses[-1:] and losses[0] == 1
        assert "duration_s" in metrics
        artifacts = {a.path for a in c.list_artifacts(r.info.run_id)}
        assert {"recipe.json", "curves.json", "curves.csv"} <= artifacts
        curves = json.loads(Path(c.download_artifacts(r.info.run_id, "curves.json")).read_text())
        assert [(p["epoch"], p["value"]) for p in curves["val_knn_top1"]] == [(m.step, m.value) for m in history]
        assert set(curves) >= {"loss", "val_knn_top1", "lr", "images_per_sec"}
        if tags["rs.stage"] == "search":  # selection never saw a test metric
            assert not [k for k in metrics if k.startswith("test_")], metrics
        elif tags["rs.phase"] == "select":  # the confirmation's select phase reads val only
            assert tags["rs.stage"] == "confirmation" and tags["rs.status"] == "completed"
            assert not [k for k in metrics if k.startswith("test_")], metrics
        else:
            assert tags["rs.stage"] == "confirmation" and tags["rs.phase"] == "report"
            assert tags["rs.status"] == "completed"
            assert math.isfinite(metrics["test_probe_top1"]) and math.isfinite(metrics["test_knn_top1"])
        if tags["rs.status"] == "completed":
            assert losses == [1, 2]
            for key in ("val_knn_top1", "val_probe_top1", "train_time_s", "mean_images_per_sec",
                        "epochs_completed"):
                assert math.isfinite(metrics[key]), key
        else:
            assert tags["rs.status"] == "pruned" and "val_probe_top1" not in metrics


def test_tune_storage_keeps_no_weights_of_ended_trials(e2e):
    """Every trial of the finished search ended (completed or pruned): Tune's storage keeps
    their small JSON files but no checkpoint.pt / encoder.pt (~90 MB each for a real backbone)."""
    from recipe_search.state import storage_dir

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
    runs = [r for r in child_runs(home, o.search_id) if r.data.tags["rs.stage"] == "search"]
    # the first two trials started (two run at once on 2 CPUs) are the baselines
    assert {r.data.tags.get("rs.baseline") for r in runs[:2]} == {"mocov2", "sinfonce-light"}
    assert all("rs.baseline" not in r.data.tags for r in runs[2:])
    runs = sorted(runs[:2], key=lambda r: r.data.tags["rs.baseline"] != "mocov2")
    for r, b in zip(runs, (MOCO_V2, SINFONCE_LIGHT)):
        recipe = json.loads(r.data.tags["rs.recipe"])
        for k in ("lr", "temperature", "weight_decay", "proj_hidden_dim", "smoothing", "crop_min_scale"):
            assert recipe[k] == b.values[k], k
        assert recipe["batch_size"] == 16  # the tiny budget's fixed batch
    # ASHA never stops a baseline: both finish the search stage and are confirmed
    assert {t.baseline: t.status for t in o.trials if t.baseline and t.stage == "search"} == {
        "mocov2": "completed", "sinfonce-light": "completed"}
    assert {r.name for r in o.confirmation if r.role == "baseline"} == {"mocov2", "sinfonce-light"}


@pytest.mark.slow  # a whole extra search: CI runs it with `pytest -m slow`, outside the 15-minute default suite
def test_a_second_search_reuses_the_confirmations_it_shares_with_the_first(e2e):
    """Same data, budget and seed: both baselines' confirmation runs on seeds 1 and 2 are the same
    computation as in the first search, so the second search re-reports them (figures, curves and
    a tag naming the run they came from) and trains nothing in its confirmation stage; so are its
    search stage's two baseline trials, replayed epoch by epoch."""
    from recipe_search.tune.reuse import reusable
    from recipe_search.records import TAG_VERSION
    from recipe_search.tracking import Tracker

    home, first = e2e
    notes = []
    # two trials: the baselines only, so no searched finalist and every confirmation job is shared
    o = run_search(SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=2, seed=0, **data_args()),
                   progress=False, on_note=notes.append)
    assert o.status == "finished" and o.fingerprint["digest"] == first.fingerprint["digest"]
    assert any("confirmation: 4 of 4 runs reused from search " + first.search_id in n for n in notes), notes
    assert any(f"search: 2 of 2 baselines reused from search {first.search_id}" in n for n in notes), notes
    c = client(home)
    first_base = {t.baseline: t for t in first.trials if t.stage == "search" and t.baseline}
    for t in (t for t in o.trials if t.stage == "search"):  # the two baselines, replayed
        twin = first_base[t.baseline]
        assert c.get_run(t.run_id).data.tags["rs.reused_from"] == twin.run_id
        assert t.status == "completed" and t.objective == twin.objective and t.metrics["trial_time_s"] == 0.0
        for key in ("val_knn_top1", "loss"):
            assert [(m.step, m.value) for m in c.get_metric_history(t.run_id, key)] == [
                (m.step, m.value) for m in c.get_metric_history(twin.run_id, key)], key
    assert c.get_run(o.parent_run_id).data.tags["rs.baselines_reused"] == f"2/2 from {first.search_id}"
    assert {t.reused_from for t in o.trials if t.stage == "search"} == {b.run_id for b in first_base.values()}
    twins = {(t.job, t.seed): t for t in first.trials if t.phase == "select"}
    confirm = [t for t in o.trials if t.phase == "select"]
    assert sorted((t.job, t.seed) for t in confirm) == sorted(
        (b, s) for b in ("mocov2", "sinfonce-light") for s in (1, 2))
    for t in confirm:
        twin = twins[(t.job, t.seed)]
        tags = c.get_run(t.run_id).data.tags
        assert tags["rs.reused_from"] == twin.run_id and tags[TAG_VERSION]
        for k in ("val_knn_top1", "val_probe_top1", "epochs_completed"):
            assert t.metrics[k] == twin.metrics[k], k
        assert t.metrics["trial_time_s"] == 0.0  # trained nothing
        curve = [(m.step, m.value) for m in c.get_metric_history(t.run_id, "val_knn_top1")]
        assert curve == [(m.step, m.value) for m in c.get_metric_history(twin.run_id, "val_knn_top1")]
    assert c.get_run(o.parent_run_id).data.tags["rs.confirmations_reused"] == f"4/4 from {first.search_id}"
    from recipe_search.tracking import CORRECT_ARTIFACT

    reader = Tracker(o.tracking_uri, "recipe-search")
    report_twins = {(t.job, t.seed): t for t in first.trials if t.phase == "report"}
    reused_reports = [t for t in o.trials if t.phase == "report" and (t.job, t.seed) in report_twins]
    assert reused_reports, "the second search re-reports no report run of the first"
    for t in reused_reports:  # a reused report run carries its twin's per-image correctness
        assert reader.read_text(t.run_id, CORRECT_ARTIFACT) == reader.read_text(
            report_twins[(t.job, t.seed)].run_id, CORRECT_ARTIFACT) is not None
    first_runs = [c.get_run(t.run_id).data.tags for t in first.trials]
    assert not any("rs.reused_from" in tags for tags in first_runs)
    assert o.selection is not None and [r.summary("val_knn_top1", [1, 2]).values for r in o.confirmation] == [
        r.summary("val_knn_top1", [1, 2]).values for r in first.confirmation if r.role == "baseline"]
    # another version, another data digest, or the same search: nothing to reuse
    jobs = [{"name": t.job, "role": "baseline", "seed": t.seed, "recipe": json.dumps(t.recipe), "phase": "select"}
            for t in confirm]
    tracker = Tracker(o.tracking_uri, "recipe-search")
    common = dict(backbone=BACKBONE, jobs=jobs)
    assert len(reusable(tracker, search_id=o.search_id, digest=first.fingerprint["digest"],
                        version=c.get_run(first.trials[0].run_id).data.tags[TAG_VERSION], **common)) == 4
    assert reusable(tracker, search_id=o.search_id, digest=first.fingerprint["digest"], version="0.0.0", **common) == {}
    assert reusable(tracker, search_id=o.search_id, digest="0" * 16, version=__version__, **common) == {}
    assert reusable(tracker, search_id=first.search_id, digest=first.fingerprint["digest"], version=__version__,
                    **common) == {}  # its own runs are not "earlier searches", and reused runs are skipped


def test_failing_and_diverging_trials_are_recorded_and_the_search_goes_on(env):
    settings = SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=4, seed=1, experiment="recipe-search",
                              **data_args())
    with rs_faults.injected("mocov2=raise,sinfonce-light=nan"):
        o = run_search(settings, progress=False)
    assert o.status == "finished"
    search = [t for t in o.trials if t.stage == "search"]
    by = {t.baseline or f"tpe{i}": t for i, t in enumerate(search)}
    assert by["mocov2"].status == "failed" and "InjectedFault" in by["mocov2"].error
    assert by["sinfonce-light"].status == "diverged" and "non-finite loss" in by["sinfonce-light"].error
    tpe = [t for t in search if not t.baseline]
    assert len(tpe) == 2 and any(t.status == "completed" for t in tpe)
    assert o.best is not None and o.best.baseline is None
    # the baselines fail in confirmation too: their seeds are recorded, the searched finalist
    # alone is eligible, and the verdict cannot claim a lift over baselines that never finished
    confirm = {(t.job, t.seed): t.status for t in o.trials if t.phase == "select"}
    assert {confirm[("mocov2", s)] for s in (2, 3)} == {"failed"}
    assert {confirm[("sinfonce-light", s)] for s in (2, 3)} == {"diverged"}
    assert o.verdict is not None and o.verdict.winner_role == "finalist" and o.selection.reference is None
    assert o.verdict.verdict != "better_than_baselines" and set(o.verdict.incomplete) == {"mocov2", "sinfonce-light"}
    assert o.verdict.served is None  # not shown better than defaults that never finished: nothing served
    c = client(env)
    for t in (by["mocov2"], by["sinfonce-light"]):
        run = c.get_run(t.run_id)
        assert run.info.status == "FAILED" and run.data.tags["rs.error"]
    assert "error.txt" in {a.path for a in c.list_artifacts(by["mocov2"].run_id)}
    assert c.get_run(o.parent_run_id).data.metrics["trials_failed"] == 1
    assert c.get_run(o.parent_run_id).data.metrics["trials_diverged"] == 1


def test_a_trial_whose_worker_is_killed_is_retried_from_its_checkpoint_in_the_same_run(env):
    """Issue 26: SIGKILL of a trial's worker process after its epoch-1 report (a system failure:
    what a lost node does to its trials) is retried from the trial's last checkpoint, in the
    search stage and in confirmation; the trial keeps one MLflow run with each epoch once, and
    the parent run and the progress log say which trials were retried and why."""
    from recipe_search.state import storage_dir

    settings = SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=2, seed=2, confirm_seeds=2,
                              experiment="recipe-search", **data_args())
    with rs_faults.injected("mocov2=kill:1"):
        o = run_search(settings, progress=False)
    assert o.status == "finished"
    assert all(t.status in ("completed", "pruned") for t in o.trials), [(t.label, t.status, t.error) for t in o.trials]
    killed = [t for t in o.trials if "mocov2" in (t.baseline, t.job)]
    assert len(killed) >= 3  # the search's baseline, and its 2 select-phase seeds (at least)
    assert all(rs_faults.kill_marker(t.trial_id).exists() for t in killed)  # each was killed once
    runs = child_runs(env, o.search_id)
    assert len(runs) == len({r.data.tags["rs.trial_id"] for r in runs}) == len(o.trials)  # one run per trial
    c = client(env)
    for t in killed:
        steps = [m.step for m in c.get_metric_history(t.run_id, "loss")]
        assert steps == [1, 2], (t.label, steps)  # no epoch lost, none twice
        tags = c.get_run(t.run_id).data.tags
        assert tags["rs.retries"] == "1" and tags["rs.status"] == "completed", tags
        assert "rs.retry_reason" in tags
    parent = c.get_run(o.parent_run_id).data
    assert parent.metrics["trials_retried"] == len(killed) == parent.metrics["trial_retries"]
    assert {k for k in parent.tags if k.startswith("rs.retry.")} == {f"rs.retry.{t.trial_id}" for t in killed}
    log = (storage_dir() / o.search_id / "progress.log").read_text()
    assert log.count("lost at epoch") == len(killed) and "retry 1/2 from its last checkpoint" in log


@pytest.mark.slow  # a whole search (~30 s) for one path: CI runs it with `pytest -m slow`
def test_a_relative_data_variable_works_from_another_working_directory(env, cifar10_tarball, tmp_path,
                                                                        monkeypatch):
    """Issue 24: a relative $RECIPE_SEARCH_DATA is resolved once on the driver (against its working
    directory), so the trials, which run in their own directories, read the same file."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("RECIPE_SEARCH_DATA", os.path.relpath(cifar10_tarball, work))
    settings = SearchSettings(backbone=BACKBONE, budget="tiny", dataset="cifar10", num_samples=2, max_epochs=1,
                              confirm_k=0, confirm_seeds=2, seed=4)
    o = run_search(settings, progress=False)
    assert o.status == "finished"
    assert {t.status for t in o.trials} == {"completed"}, [(t.status, t.error) for t in o.trials]
    assert client(env).get_run(o.parent_run_id).data.params["data"] == str(cifar10_tarball)


def _first_wave_fails(home: Path, search_id: str) -> None:
    """A search whose every trial fails with the same error (an injected fault, its trial id
    masked) stops with that error in one line before confirmation; the parent run is FAILED
    with rs.status=failed and rs.error."""
    from recipe_search.errors import SearchError

    settings = SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=4, seed=5, search_id=search_id,
                              max_epochs=1, confirm_k=0, confirm_seeds=2, **data_args())
    with rs_faults.injected("*=raise"), pytest.raises(SearchError) as e:
        run_search(settings, progress=False)
    msg = str(e.value)
    assert msg == (f"search {search_id} stopped: all 2 trials of the first wave failed with the same error: "
                   "InjectedFault: injected fault in trial <trial>"), msg
    c = client(home)
    parent = c.search_runs([c.get_experiment_by_name("recipe-search").experiment_id],
                           f"tags.`rs.search_id` = '{search_id}' and tags.`rs.kind` = 'search'")[0]
    assert parent.info.status == "FAILED"
    assert parent.data.tags["rs.status"] == "failed" and "InjectedFault" in parent.data.tags["rs.error"]
    runs = child_runs(home, search_id)
    assert 2 <= len(runs) < 4 and {r.data.tags["rs.stage"] for r in runs} == {"search"}
    meta = json.loads((home / "ray" / search_id / "recipe_search.json").read_text())
    assert meta["status"] == "failed" and meta["stage"] == "search"


def test_a_first_wave_failing_alike_stops_the_search_before_confirmation(env):
    """Issue 24: fail fast, and say why."""
    _first_wave_fails(env, "failfast")


@pytest.mark.slow  # a whole extra search (~70 s): CI runs it with `pytest -m slow`
def test_a_search_stopped_by_its_first_wave_searches_again_on_resume(env):
    """The cause fixed, --resume of a search its first wave stopped runs its search stage from the
    start (its stopped Tune experiment has nothing to go on), then confirms as usual."""
    _first_wave_fails(env, "failfast-resumed")
    notes: list[str] = []
    o = run_search(SearchSettings(backbone=BACKBONE, search_id="failfast-resumed"), resume=True, progress=False,
                   on_note=notes.append)
    assert o.status == "finished" and any("its search stage starts over" in n for n in notes), notes
    assert len([t for t in o.trials if t.stage == "search" and t.status != "failed"]) == 4
    parent = client(env).get_run(o.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["rs.status"] == "finished"
    assert not parent.data.tags.get("rs.error")


@pytest.mark.slow  # a whole extra search: CI runs it with `pytest -m slow`, outside the 15-minute default suite
def test_random_search_without_early_stopping_is_a_control(env):
    """--sampler random --no-early-stopping (the control of bench_quality's search study): every
    sampled trial runs all its epochs, and the parent run says how it searched."""
    settings = SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=5, seed=3, sampler="random",
                              early_stopping=False, confirm_k=0, **data_args())
    notes: list[str] = []
    o = run_search(settings, progress=False, on_note=notes.append)
    assert o.status == "finished"
    search = [t for t in o.trials if t.stage == "search"]
    assert len(search) == 5 and {t.status for t in search} == {"completed"}, [(t.status, t.error) for t in search]
    assert {int(t.metrics["epochs_completed"]) for t in search} == {2}
    params = client(env).get_run(o.parent_run_id).data.params
    assert (params["sampler"], params["early_stopping"]) == ("random", "false")
    names = sorted(r.data.tags["mlflow.runName"].split("-")[0] for r in child_runs(env, o.search_id)
                   if r.data.tags["rs.stage"] == "search" and "rs.baseline" not in r.data.tags)
    assert names == ["random"] * 3  # the sampled trials are named for their sampler, not "tpe"
    assert sorted(t.label for t in search if not t.baseline) == ["random"] * 3  # read back from rs.sampler
    assert any(n.startswith("plan: search 5 trials x 2 epochs (no early stopping)") for n in notes), notes
    assert o.total_wall_s == o.wall_s > 0  # one session


def test_the_plan_says_whether_asha_stops_trials():
    from recipe_search.search.estimate import estimate

    kw = dict(rates=100.0, sizes={"classes": 10, "train": 2000, "val": 500, "test": 500}, num_samples=10,
              baselines=2, max_epochs=8, select_jobs=9, report_looks=(3, 5, 8), concurrency=2, device="cpu",
              cpus_per_trial=1, gpus_per_trial=0)
    asha, full = estimate(grace_period=2, **kw), estimate(grace_period=None, **kw)
    assert asha.lines[0].startswith("plan: search 10 trials x <= 8 epochs (ASHA from epoch 2), then confirmation "
                                    "<= 25 runs")
    assert full.lines[0].startswith("plan: search 10 trials x 8 epochs (no early stopping), then confirmation <= 25")
    assert asha.search_max_s == full.search_max_s == full.search_s > asha.search_s > 0  # ASHA: expected < bound


def test_a_bad_sampler_is_a_clear_error():
    from recipe_search.errors import SearchError
    from recipe_search.plan import plan

    with pytest.raises(SearchError, match="--sampler must be one of tpe, tpe-mv, local, gp, random, got 'grid'"):
        plan(SearchSettings(backbone=BACKBONE, budget="tiny", sampler="grid", **data_args()))


def test_one_process_per_search(tmp_path):
    from recipe_search.errors import SearchError
    from recipe_search.state import search_lock

    with search_lock(tmp_path / "s1", "s1"):
        with pytest.raises(SearchError, match=f"search s1 is running in another process \\(pid {os.getpid()}\\)"):
            with search_lock(tmp_path / "s1", "s1"):
                pass
    with search_lock(tmp_path / "s1", "s1"):  # released
        pass


def test_a_trial_lost_by_tune_in_a_crash_is_adopted_not_duplicated(tmp_path):
    """Tune may lose a trial started after its last state snapshot; the restored searcher then
    suggests the same point under a new trial id, whose MLflow run must be the old one."""
    from recipe_search import records
    from recipe_search.tracking import Tracker, point_key
    from recipe_search.tune.trial import TrialContext

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "adopt")
    parent = tracker.parent_run(records.Search(search_id="s1"), name="search-s1", params={})
    point = {"lr": 0.1, "temperature": 0.2}
    tags = records.Trial(point=point_key(point))
    old, _ = tracker.child_run(parent, "s1", "aaaa", name="tpe-aaaa", trial=tags)
    tracker.log_metrics(old, {"val_knn_top1": 0.5}, step=1)
    # a trial Tune still knows keeps its own run even with the same point
    other, _ = tracker.child_run(parent, "s1", "bbbb", name="tpe-bbbb", trial=tags, known_trial_ids=["aaaa"])
    assert other != old
    # the lost trial's point comes back as cccc: adopted, with its last logged epoch
    run, last = tracker.child_run(parent, "s1", "cccc", name="tpe-cccc", trial=tags, known_trial_ids=["bbbb"])
    assert run == old and last == 1
    assert tracker.client.get_run(run).data.tags["rs.trial_id"] == "cccc"
    assert len(tracker.trial_runs("s1")) == 2

    ctx = TrialContext(backbone="resnet18", space=None, budget_fixed={}, image_size=32, max_epochs=2, seed=0,
                       data=None, extra={"finished": {"aaaa": {"val_knn_top1": 0.7}},
                                         "finished_points": {point_key(point): {"val_knn_top1": 0.6}}})
    assert ctx.finished_result("aaaa", {}) == {"val_knn_top1": 0.7}
    assert ctx.finished_result("dddd", dict(point)) == {"val_knn_top1": 0.6}
    assert ctx.finished_result("dddd", {"lr": 0.2, "temperature": 0.2}) is None


@pytest.mark.slow  # two search sessions (~55 s): the default suite measured 15m09s on 2 idle cores with it
def test_study_storage_on_sqlite_resumes_from_a_second_driver(env, tmp_path, make_search_home):
    """``--study-storage sqlite:///...``: the Optuna study lives in its own database, so a second
    driver with an empty $RECIPE_SEARCH_HOME (no Tune state) continues the search from it and
    from the shared MLflow store: only the new samples run, nothing is duplicated."""
    optuna = pytest.importorskip("optuna")
    study_url = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    make_search_home("driver1")
    first = run_search(SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=3, seed=1, max_epochs=1,
                                      tracking_uri=tracking, study_storage=study_url, confirm_k=0,
                                      **data_args()),
                       progress=False)
    assert first.status == "finished" and len([t for t in first.trials if t.stage == "search"]) == 3
    study = optuna.load_study(study_name=f"recipe-search:{first.search_id}", storage=study_url)
    # both baselines lie outside this backbone's space (its heads are narrower): the sampler only
    # hears of the sampled trial
    assert len([t for t in study.trials if t.state.is_finished()]) == 1
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=tracking)
    exp = c.get_experiment_by_name("recipe-search")

    def confirmation_jobs() -> list[tuple[str, str, str]]:
        runs = c.search_runs([exp.experiment_id], f"tags.`rs.search_id` = '{first.search_id}' and "
                                                  "tags.`rs.kind` = 'trial' and tags.`rs.stage` = 'confirmation'")
        return sorted((r.data.tags["rs.phase"], r.data.tags["rs.job"], r.data.tags["rs.seed"]) for r in runs)

    before = confirmation_jobs()
    # the select phase ran both baselines on the budget's select seeds; the report phase ran fresh seeds
    assert {(j, s) for p, j, s in before if p == "select"} == {(b, s) for b in ("mocov2", "sinfonce-light")
                                                                for s in ("2", "3")}, before
    assert {p for p, _, _ in before} == {"select", "report"} and len(set(before)) == len(before), before

    make_search_home("driver2")
    notes = []
    second = run_search(SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=4, seed=1, max_epochs=1,
                                       tracking_uri=tracking, study_storage=study_url, search_id=first.search_id,
                                       confirm_k=0, **data_args()),
                        resume=True, progress=False, on_note=notes.append)
    assert any("continuing its Optuna study" in n for n in notes), notes
    assert second.search_id == first.search_id and second.parent_run_id == first.parent_run_id
    study = optuna.load_study(study_name=f"recipe-search:{first.search_id}", storage=study_url)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 2, [(t.number, t.state) for t in study.trials]
    runs = c.search_runs([exp.experiment_id], f"tags.`rs.search_id` = '{first.search_id}' and "
                                              "tags.`rs.kind` = 'trial'")
    search = [r for r in runs if r.data.tags["rs.stage"] == "search"]
    assert len(search) == 4 and len({r.data.tags["rs.trial_id"] for r in search}) == 4
    assert all(r.info.status == "FINISHED" for r in runs), [r.info.status for r in runs]
    # the baselines' confirmation runs (same jobs, phases and seeds) were adopted, not run twice
    assert confirmation_jobs() == before
    assert not (tmp_path / "driver2" / "mlflow.db").exists()  # the second driver wrote to the shared store


def test_node_preflight_loads_the_data_on_every_node(env, tmp_path):
    """``check_nodes`` (run when a search joins a cluster with --ray-address) pins a task to
    each node: it sees the driver's probe in the Tune storage and loads the proxy data."""
    import ray

    from recipe_search.budget import get_budget
    from recipe_search.errors import SearchError
    from recipe_search.tune.nodes import PROBE_PREFIX, _probe_node, check_nodes

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


@pytest.mark.parametrize("every, latest", [(2, "checkpoint_000001"),
                                           pytest.param(0, "checkpoint_000000", marks=pytest.mark.slow)])
def test_checkpoint_every_n_epochs(env, tmp_path, make_search_home, every, latest):
    """``checkpoint_every=2`` with 3 epochs: a trial persists a checkpoint at epoch 2 and its
    final one (no weights), not one per epoch: its latest is Tune's second, checkpoint_000001
    (the first is kept, weight-free, for a safe resume). With 0 the final one is its only one."""
    from recipe_search.state import storage_dir

    make_search_home()
    o = run_search(SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=2, max_epochs=3, seed=2,
                                  checkpoint_every=every, confirm_k=0, **data_args()), progress=False)
    search = [t for t in o.trials if t.stage == "search"]
    assert o.status == "finished" and len(search) == 2  # the two baselines: never pruned
    trial_dirs = [d for d in (storage_dir() / o.search_id).iterdir() if d.name.startswith("run_trial_")]
    assert len(trial_dirs) == 2, trial_dirs
    for d in trial_dirs:
        # every persisted checkpoint (Tune keeps the last few) up to the final one, and no weights
        ckpts = sorted(c.name for c in d.glob("checkpoint_*"))
        assert ckpts[-1] == latest and len(ckpts) == int(latest[-1]) + 1, (d.name, ckpts)
        assert json.loads((d / latest / "metrics.json").read_text())["epochs_completed"] == 3
        assert not list(d.rglob("*.pt"))
    c = client(tmp_path / "home")
    for r in child_runs(tmp_path / "home", o.search_id):  # every epoch is still logged
        assert [m.step for m in c.get_metric_history(r.info.run_id, "loss")] == [1, 2, 3]


def test_janitor_strips_weights_of_stopped_and_failed_trials_only(tmp_path):
    from types import SimpleNamespace

    from ray.tune import Checkpoint

    from recipe_search.tune.janitor import CheckpointJanitor

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
    # Tune keeps a trial's last few checkpoints (a safe resume after SIGKILL): once it finishes,
    # the older ones lose their weights, the latest (final, weight-free) one is left as it is
    trial_dir = tmp_path / "run_trial_x"
    for i in range(3):
        d = trial_dir / f"checkpoint_00000{i}"
        d.mkdir(parents=True)
        for f in (("metrics.json", "history.json") if i == 2 else ("checkpoint.pt", "history.json")):
            (d / f).write_text(f)
    janitor.on_trial_complete(SimpleNamespace(checkpoint=Checkpoint.from_directory(str(d)),
                                              last_result={"epoch": 3, "final": 1.0}), [])
    assert not list(trial_dir.rglob("*.pt")) and len(list(trial_dir.rglob("history.json"))) == 3
    assert (d / "metrics.json").exists() and janitor.freed_files == 6


def test_node_preflight_needs_a_writable_storage(env, tmp_path):
    import ray

    from recipe_search.errors import SearchError
    from recipe_search.tune.nodes import check_nodes

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SearchError, match="is not writable from this driver"):
        check_nodes(ray, blocker / "storage", None, 16, 0)


# -- selection never reads the test split; small folders fit the budget ------------------------------


def _cifar_folder(root: Path, *, swap_test: int = 0) -> Path:
    """An ImageFolder of real CIFAR-10 JPEGs: 2 classes, 48 train images each, 30 and 27 test images.
    ``swap_test`` exchanges that many test images between the two classes (their labels shuffled;
    train, val and the set of test images stay the same)."""
    import tarfile

    want = {("train", "airplane"): 48, ("train", "automobile"): 48, ("test", "airplane"): 30,
            ("test", "automobile"): 27}
    got: dict[tuple[str, str], list[tuple[str, bytes]]] = {k: [] for k in want}
    with tarfile.open(CIFAR) as tar:
        for m in tar:
            parts = Path(m.name).parts
            if len(parts) < 4 or not m.isfile():
                continue
            key = (parts[-3], parts[-2])
            if key in got and len(got[key]) < want[key]:
                got[key].append((parts[-1], tar.extractfile(m).read()))
            if all(len(got[k]) == n for k, n in want.items()):
                break
    a, b = got[("test", "airplane")], got[("test", "automobile")]
    got[("test", "airplane")], got[("test", "automobile")] = b[:swap_test] + a[swap_test:], a[:swap_test] + b[swap_test:]
    for (split, cls), files in got.items():
        d = root / split / cls
        d.mkdir(parents=True)
        for name, data in files:
            (d / name).write_bytes(data)
    return root


@pytest.mark.slow  # two serial searches (~60 s): CI runs it with `pytest -m slow`
@pytest.mark.skipif(not CIFAR.exists(), reason="needs the shared CIFAR-10 tarball")
def test_shuffled_test_labels_change_no_selection_decision(env, tmp_path, make_search_home):
    """Two searches on folders that differ only in their test labels make every decision before
    the confirmation stage identically (points sampled, ASHA's stops, val scores, finalists, the
    winner); only the confirmed test figures and the data fingerprint differ. The folders have 27
    test images in one class while the search asks for 50: the budget fits itself to the data."""
    make_search_home()
    outcomes, notes = [], []
    for name, swap in (("plain", 0), ("shuffled", 13)):
        folder = _cifar_folder(tmp_path / name / "data", swap_test=swap)
        outcomes.append(run_search(SearchSettings(
            backbone=BACKBONE, budget="tiny", dataset="imagefolder", data=str(folder), num_samples=3, seed=3,
            max_concurrent=1, test_per_class=50), progress=False, on_note=notes.append))
    assert any("test_per_class 50 -> 27" in n for n in notes), notes
    a, b = outcomes
    assert a.fingerprint["test_per_class"] == 27 and a.fingerprint["digest"] != b.fingerprint["digest"]
    assert a.fingerprint["data_digest"] != b.fingerprint["data_digest"]

    def decisions(o):
        search = [t for t in o.trials if t.stage == "search"]
        return [(t.baseline, {k: v for k, v in (t.recipe or {}).items()}, t.status, t.objective,
                 t.metrics.get("val_probe_top1")) for t in search]

    assert decisions(a) == decisions(b)
    for o in (a, b):
        assert all(not k.startswith("test_") for t in o.trials if t.stage == "search" for k in t.metrics)
        assert o.verdict is not None
    # the same finalists (a finalist is named by its trial id, which differs between the searches)
    recipes = lambda o: {r.name: (r.role, r.recipe) for r in o.confirmation}  # noqa: E731
    assert [recipes(a)[n] for n in a.verdict.ranking] == [recipes(b)[n] for n in b.verdict.ranking]
    assert recipes(a)[a.verdict.winner] == recipes(b)[b.verdict.winner]
    val = lambda o: [r.summary("val_knn_top1", o.selection.seeds).values for r in o.confirmation]  # noqa: E731
    assert val(a) == val(b) and a.selection.report_names == b.selection.report_names
    first = a.verdict.seeds[:a.verdict.looks[0]]
    test = lambda o: [r.summary("test_probe_top1", first).values for r in o.report]  # noqa: E731
    assert test(a) != test(b)  # the report phase did read the (different) test labels


def test_a_search_of_another_backbone_starts_from_the_first_ones_results(e2e):
    """Issue 22, warm start: a search of another backbone on the same data starts, before its
    baselines, from the first search's best finished trial (or served recipe), says so in its plan,
    names the source on the trial's MLflow run and records it on the parent run and provenance."""
    from recipe_search.search.warm_start import trial_key

    home, first = e2e
    other = "mobilenetv3_small_075"
    finished = [t for t in first.trials if t.stage == "search" and not t.baseline and t.status == "completed"]
    assert finished or (first.verdict and first.verdict.served), "the first search left nothing to start from"
    notes = []
    o = run_search(SearchSettings(backbone=other, budget="tiny", num_samples=3, max_epochs=1, seed=4, **data_args()),
                   progress=False, on_note=notes.append)
    assert o.status == "finished"
    line = next(n for n in notes if n.startswith("warm start:"))
    assert line.startswith("warm start: the first 1 trial(s), each run to the end, from"), line
    assert f"{BACKBONE}'s" in line, line
    c = client(home)
    warm = json.loads(Path(c.download_artifacts(o.parent_run_id, "warm_start.json", str(home / "dl"))).read_text())
    assert len(warm) == 1 and warm[0]["backbone"] == BACKBONE and warm[0]["dataset"] == first.fingerprint["dataset"]
    # a finished sampled trial of BACKBONE (this module's searches of it, the first one's among them), or the
    # recipe served for it
    store = RecipeStore(o.tracking_uri)
    sources = {t.run_id for t in store.finished_trials(first.fingerprint["dataset"])
               if t.backbone == BACKBONE and not t.baseline}
    sources |= {r.source_run_id or r.run_id for r in store.list() if r.backbone == BACKBONE}
    assert {t.run_id for t in finished} <= sources and warm[0]["run_id"] in sources
    assert c.get_run(o.parent_run_id).data.params["warm_start_points"] == "1"
    sampled = [t for t in o.trials if t.stage == "search" and not t.baseline]
    assert len(sampled) == 1 and sampled[0].point == trial_key(warm[0]["point"])
    tags = c.get_run(sampled[0].run_id).data.tags
    assert tags["rs.sampler"] == "warm" and f"warm start from {BACKBONE}'s" in tags["rs.notes"]
    served = RecipeStore(o.tracking_uri).get(other)
    if served is not None:  # a served recipe's provenance names its search's warm start
        assert served.provenance["settings"]["warm_start"] == warm


@pytest.mark.slow
def test_a_search_in_another_store_starts_from_an_exported_results_file(e2e, tmp_path):
    """`recipe-search export` of the first search's store, read by a search of another backbone in a new
    store with --warm-start-file: the same warm point as from the store, the file named in the plan."""
    from typer.testing import CliRunner

    from recipe_search import known_results
    from recipe_search.cli import app
    from recipe_search.search.warm_start import trial_key

    _, first = e2e
    dataset = first.fingerprint["dataset"]
    path = tmp_path / "results.json"
    result = CliRunner().invoke(app, ["export", dataset, "--out", str(path), "--tracking-uri", first.tracking_uri])
    assert result.exit_code == 0, result.output
    known = known_results.read(path)
    assert any(t.backbone == BACKBONE for t in [*known.served, *known.trials])
    notes = []
    o = run_search(SearchSettings(backbone="mobilenetv3_small_075", budget="tiny", num_samples=3, max_epochs=1, seed=4,
                                  tracking_uri=f"sqlite:///{tmp_path / 'new.db'}", warm_start_file=str(path),
                                  **data_args()), progress=False, on_note=notes.append)
    assert o.status == "finished" and o.tracking_uri != first.tracking_uri
    line = next(n for n in notes if n.startswith("warm start:"))
    assert line.startswith("warm start: the first 1 trial(s), each run to the end, from"), line
    assert f"in {path}:" in line, line
    from mlflow.tracking import MlflowClient

    dl = MlflowClient(o.tracking_uri).download_artifacts(o.parent_run_id, "warm_start.json", str(tmp_path))
    warm = json.loads(Path(dl).read_text())
    # a result of another backbone in the file (the new store holds none: it can only come from there)
    sources = {r.run_id for r in [*known.served, *known.trials] if r.backbone != "mobilenetv3_small_075"}
    assert len(warm) == 1 and warm[0]["run_id"] in sources and warm[0]["backbone"] == BACKBONE
    sampled = [t for t in o.trials if t.stage == "search" and not t.baseline]
    assert len(sampled) == 1 and sampled[0].point == trial_key(warm[0]["point"])
