"""The warm start (recipe_search/search/warm_start.py): which of the store's results of other
backbones become the sampler's first points, read from a real MLflow store on SQLite; the whole
path through a search is in test_search.py."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mlflow")

from api_support import promote  # noqa: E402
from recipe_search import known_results, records  # noqa: E402
from recipe_search.errors import SearchError  # noqa: E402
from recipe_search.baselines import by_name  # noqa: E402
from recipe_search.compose import compose  # noqa: E402
from recipe_search.search.warm_start import as_point, describe, trial_key, warm_points, warm_share  # noqa: E402
from recipe_search.space import load_space  # noqa: E402
from recipe_search.store import RecipeStore  # noqa: E402


def points(store, dataset="cifar10", **kw):
    """The warm points of an efficientnet_b0 search on ``dataset`` from what ``store`` knows."""
    return warm_points(known_results.from_store(store, dataset), backbone="efficientnet_b0", dataset=dataset, **kw)


def full_recipe(backbone: str, **values) -> dict:
    base = dict(by_name("sinfonce-light").values)
    return compose({**base, **values}, backbone=backbone, image_size=32, epochs=8, seed=0)[0].to_dict()


def log_trials(uri: str, backbone: str, search_id: str, trials: list[tuple[float, dict, str]],
               dataset: str = "cifar10") -> list[str]:
    """Search-stage trial runs tagged as recipe_search tags them: (val kNN, recipe, status)."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("recipe-search") or None
    exp_id = exp.experiment_id if exp else c.create_experiment("recipe-search")
    ids = []
    for i, (val, recipe, status) in enumerate(trials):
        tags = records.Trial(backbone=backbone, dataset=dataset, search_id=search_id, trial_id=f"{search_id}-{i}",
                             stage="search", status=status, recipe=json.dumps(recipe),
                             baseline=recipe.pop("_baseline", None)).to_tags()
        run = c.create_run(exp_id, run_name=f"tpe-{i}", tags=tags)
        c.log_metric(run.info.run_id, "val_knn_top1", val)
        c.set_terminated(run.info.run_id, "FINISHED")
        ids.append(run.info.run_id)
    return ids


@pytest.fixture()
def space():
    return load_space(None, "efficientnet_b0")


def test_a_third_of_the_sampled_trials_at_most():
    assert [warm_share(n) for n in (0, 1, 3, 4, 8, 30)] == [0, 1, 1, 2, 3, 10]


def test_another_backbones_recipe_is_projected_into_the_space(space):
    r = full_recipe("mobilenetv3_small_100", lr=5.0, temperature=0.2, proj_hidden_dim=1000)
    point = as_point(space, r)
    assert set(point) == set(space.params)  # every sampled parameter, nothing else
    assert point["lr"] == space.params["lr"].high  # clipped into its range
    assert point["temperature"] == pytest.approx(0.2)  # inside: kept
    assert point["proj_hidden_dim"] == 1024  # a choice outside the list: the nearest one
    assert as_point(space, {**r, "method": "byol"}) is None  # a method this space cannot run
    assert trial_key({"a.b": 1, "c": 2}) == json.dumps({"a": {"b": 1}, "c": 2}, sort_keys=True)


def test_served_recipes_first_then_the_best_trials_of_other_backbones(fresh_uri, space):
    store = RecipeStore(fresh_uri)
    promote(store, [0.40, 0.41, 0.42], backbone="mobilenetv3_small_100",
            rec=full_recipe("mobilenetv3_small_100", lr=0.3))
    promote(store, [0.50, 0.51, 0.52], backbone="resnet18", dataset="stl10", rec=full_recipe("resnet18", lr=0.4))
    promote(store, [0.45, 0.46, 0.47], backbone="efficientnet_b0", rec=full_recipe("efficientnet_b0", lr=0.5))
    ids = log_trials(fresh_uri, "mobilenetv3_small_100", "s1", [
        (0.30, full_recipe("mobilenetv3_small_100", lr=0.02), "completed"),
        (0.35, full_recipe("mobilenetv3_small_100", lr=0.03), "completed"),
        (0.90, full_recipe("mobilenetv3_small_100", lr=0.04), "pruned"),  # never finished: not a source
        (0.80, {**full_recipe("mobilenetv3_small_100", lr=0.05), "_baseline": "mocov2"}, "completed"),
        (0.32, full_recipe("mobilenetv3_small_100", lr=0.3), "completed"),  # the served recipe's point again
    ])
    log_trials(fresh_uri, "efficientnet_b0", "s2", [(0.99, full_recipe("efficientnet_b0", lr=0.06), "completed")])
    got = points(store, space=space, limit=5)
    assert [(w.kind, w.backbone, round(w.point["lr"], 3)) for w in got] == [
        ("served", "mobilenetv3_small_100", 0.3),  # served on cifar10 (not the stl10 one, not its own)
        ("trial", "mobilenetv3_small_100", 0.03), ("trial", "mobilenetv3_small_100", 0.02)]  # best val first
    assert got[1].run_id == ids[1] and got[1].score == pytest.approx(0.35) and got[1].search_id == "s1"
    assert "mobilenetv3_small_100's trial" in got[1].label() and "val kNN 0.350" in got[1].label()
    assert points(store, space=space, limit=1) == got[:1]
    # a point equal to a baseline's is not taken again; another dataset's results only when asked
    skip = [got[0].point]
    assert [w.point for w in points(store, space=space, limit=5, skip=skip)] == [w.point for w in got[1:]]
    other = points(store, "stl10", space=space, limit=5)
    assert [(w.kind, w.backbone, w.dataset) for w in other] == [("served", "resnet18", "stl10")]
    assert got[0].to_dict()["point"] == got[0].point and got[0].to_dict()["dataset"] == "cifar10"


def test_the_plan_says_where_the_search_starts(fresh_uri, space):
    store = RecipeStore(fresh_uri)
    assert points(store, space=space, limit=3) == []
    assert "nothing in the store to start from" in describe([], "cifar10", enabled=True)
    assert "off (--no-warm-start)" in describe([], "cifar10", enabled=False)
    promote(store, [0.40, 0.41, 0.42], backbone="mobilenetv3_small_100",
            rec=full_recipe("mobilenetv3_small_100", lr=0.3))
    pts = points(store, space=space, limit=3)
    line = describe(pts, "cifar10", enabled=True)
    assert line.startswith("warm start: the first 1 trial(s), each run to the end, from")
    assert "mobilenetv3_small_100's served recipe" in line and "test probe 0.410" in line


def _populated(uri: str) -> RecipeStore:
    """A store with a recipe served on cifar10 and on stl10, and finished trials of two searches."""
    store = RecipeStore(uri)
    promote(store, [0.40, 0.41, 0.42], backbone="mobilenetv3_small_100",
            rec=full_recipe("mobilenetv3_small_100", lr=0.3))
    promote(store, [0.50, 0.51, 0.52], backbone="resnet18", dataset="stl10", rec=full_recipe("resnet18", lr=0.4))
    log_trials(uri, "mobilenetv3_small_100", "s1", [
        (0.30, full_recipe("mobilenetv3_small_100", lr=0.02), "completed"),
        (0.35, full_recipe("mobilenetv3_small_100", lr=0.03), "completed"),
        (0.33, full_recipe("mobilenetv3_small_100", lr=0.05), "completed"),
        (0.80, {**full_recipe("mobilenetv3_small_100", lr=0.06), "_baseline": "mocov2"}, "completed")])
    log_trials(uri, "resnet18", "s3", [(0.31, full_recipe("resnet18", lr=0.07), "completed")])
    return store


def test_an_exported_results_file_starts_a_search_in_another_store_as_the_store_would(fresh_uri, space, tmp_path):
    """`recipe-search export cifar10 --out F` writes what the store knows on cifar10 (not stl10's recipe,
    not a baseline's trial); `run --warm-start-file F` reads it as it would read the store, whatever the
    order of the file's trials, and its plan line names the file."""
    from typer.testing import CliRunner

    from recipe_search.cli import app

    store = _populated(fresh_uri)
    path = tmp_path / "out" / "cifar10-results.json"
    result = CliRunner().invoke(app, ["export", "cifar10", "--out", str(path), "--tracking-uri", fresh_uri])
    assert result.exit_code == 0, result.output
    assert "1 served recipe(s) and 4 finished trial(s) on cifar10" in result.output
    data = json.loads(path.read_text())
    assert data["format"] == known_results.FORMAT and data["datasets"] == ["cifar10"]
    assert [(t["backbone"], t["score"]) for t in data["trials"]] == [
        ("mobilenetv3_small_100", 0.35), ("mobilenetv3_small_100", 0.33), ("resnet18", 0.31),
        ("mobilenetv3_small_100", 0.30)]  # best val first; the baseline's 0.80 is not there
    from_file = known_results.read(path)
    assert from_file.origin == str(path) and from_file.datasets() == ["cifar10"]
    want = points(store, space=space, limit=4)
    got = warm_points(from_file, backbone="efficientnet_b0", dataset="cifar10", space=space, limit=4)
    assert got == want and [w.kind for w in got] == ["served", "trial", "trial", "trial"]
    assert [w.backbone for w in got[1:]] == ["mobilenetv3_small_100"] * 2 + ["resnet18"]  # 2 per search first
    data["trials"].reverse()  # a file edited by hand: order does not matter
    path.write_text(json.dumps(data))
    assert warm_points(known_results.read(path), backbone="efficientnet_b0", dataset="cifar10", space=space,
                       limit=4) == want
    line = describe(got, "cifar10", enabled=True, origin=str(path))
    assert f"results on cifar10 in {path}:" in line
    assert f"nothing in {path} to start from" in describe([], "cifar10", enabled=True, origin=str(path))
    result = CliRunner().invoke(app, ["export", "cifar10", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"])
    assert result.exit_code == 2 and "error: no store at" in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("content, fragment", [
    (None, "does not exist"),
    ("{not json", "is not a JSON results file"),
    (json.dumps({"format": "other/1"}), "has format 'other/1'; allowed: 'recipe-search.results/1'"),
    (json.dumps({"format": known_results.FORMAT, "trials": {}}), "'trials' must be a list, got dict"),
    (json.dumps({"format": known_results.FORMAT, "trials": [{"backbone": "b", "dataset": "d", "run_id": "r"}]}),
     "trials[0].recipe must be a recipe object"),
    (json.dumps({"format": known_results.FORMAT, "served": [{"backbone": "b", "dataset": "d", "run_id": "r",
                                                            "recipe": {"lr": 1}, "score": "high"}]}),
     "served[0].score must be a number or null, got 'high'"),
    (json.dumps({"format": known_results.FORMAT, "served": [{"dataset": "d", "run_id": "r"}]}),
     "served[0].backbone must be a non-empty string, got None"),
])
def test_a_bad_results_file_is_refused_naming_the_field(tmp_path, content, fragment):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SearchError) as e:
        known_results.read(path)
    assert str(e.value).startswith(f"--warm-start-file: {path}") and fragment in str(e.value), str(e.value)


def test_the_plan_checks_the_warm_start_file_before_anything_runs(fresh_uri, tmp_path):
    from recipe_search.plan import check_warm_start_file
    from recipe_search.settings import SearchSettings

    path = known_results.write(known_results.from_store(_populated(fresh_uri), "stl10"), tmp_path / "stl10.json")
    check_warm_start_file(SearchSettings(backbone="efficientnet_b0", dataset="stl10", warm_start_file=str(path)))
    check_warm_start_file(SearchSettings(backbone="efficientnet_b0", dataset="cifar10", warm_start_from="stl10",
                                         warm_start_file=str(path)))
    with pytest.raises(SearchError, match="holds results on stl10, none on cifar10 .*--warm-start-from stl10"):
        check_warm_start_file(SearchSettings(backbone="efficientnet_b0", dataset="cifar10", warm_start_file=str(path)))
    empty = known_results.write(known_results.from_store(RecipeStore(fresh_uri), "svhn"), tmp_path / "svhn.json")
    with pytest.raises(SearchError, match="svhn.json holds no results .*nothing to start from"):
        check_warm_start_file(SearchSettings(backbone="efficientnet_b0", dataset="svhn", warm_start_file=str(empty)))
    with pytest.raises(SearchError, match="--warm-start-file and --no-warm-start contradict"):
        check_warm_start_file(SearchSettings(backbone="efficientnet_b0", dataset="stl10", warm_start=False,
                                             warm_start_file=str(path)))


def test_the_transfer_study_counts_trial_epochs_to_the_cold_incumbent():
    from bench.quality_transfer import incumbent, reached_at, transfer_section

    def trial(curve, status="completed", point="{}"):
        return {"val_knn": curve, "status": status, "point": point}

    cold = [trial([0.1, 0.2], point=None), trial([0.1], "pruned"), trial([0.2, 0.3]), trial([0.1, 0.25])]
    warm = [trial([0.1, 0.2], point=None), trial([0.2, 0.35]), trial([0.1, 0.2])]  # the baselines first
    first = [trial([0.2, 0.35]), trial([0.1, 0.2], point=None), trial([0.1, 0.2])]  # warm points first (measured)
    assert incumbent(cold) == 0.3 and incumbent([trial([0.9], "pruned")]) is None
    assert reached_at(cold, 0.3) == 5 and reached_at(warm, 0.3) == 4  # epochs of every trial started so far
    assert reached_at(first, 0.3) == 2
    assert reached_at([trial([0.1, 0.99], "pruned")], 0.3) is None  # a stopped trial never counts
    verdict = {"verdict": "no_significant_lift", "served": None}
    rows = [{"key": "source", "backbone": "mobilenetv3_small_100", "seed": 600, "trial_epochs": 20,
             "verdict": verdict, "repeat": None},
            {"key": "cold-r0", "repeat": 0, "trial_epochs": 7, "search_trials": cold, "verdict": verdict,
             "backbone": "mobilenetv3_large_100", "search_args": "--confirm-k 1", "wall_s": 600, "machine": "2 cores"},
            {"key": "warm-r0", "repeat": 0, "trial_epochs": 6, "search_trials": warm, "verdict": verdict,
             "warm_start": [{"backbone": "mobilenetv3_small_100"}]}]
    text = "\n".join(transfer_section(rows))
    # warm's earliest possible: the baseline's 2 epochs + one full trial's 2
    assert "| 0 | after the baselines | 30.0 | 5 (7) | 4 | 4 (6) | 0.80 | 1 |" in text
    assert ("Goal: warm reaches the cold incumbent in at most half the trial-epochs: warm points after the "
            "baselines: met in 0 of 1 repeats") in text  # an older order's rows alone: named
    rows.append({**rows[2], "search_trials": first, "warm_order": "first", "wall_s": 300})
    rows.append({**rows[2], "search_trials": first, "warm_order": "kept", "wall_s": 200})
    text = "\n".join(transfer_section(rows))
    # run first, a warm point can complete after its own 2 epochs; the current order's row shown first
    assert "| 0 | first | 30.0 | 5 (7) | 2 | 2 (6) | 0.40 | 1 |" in text
    assert "| 0 | first, run to the end | 30.0 | 5 (7) | 2 | 2 (6) | 0.40 | 1 |" in text
    assert text.index("| 0 | first, run to the end |") < text.index("| 0 | after the baselines |") \
        < text.index("| 0 | first |")
    assert ("warm points first, run to the end: met in 1 of 1 repeats; warm points after the baselines: met in 0 "
            "of 1 repeats; warm points first: met in 1 of 1") in text
    assert "warm-r0 (first) 5" in text and "warm-r0 (kept) 3" in text
    rows.pop()
    rows.pop()
    assert "Goal: warm reaches the cold incumbent in at most half the trial-epochs: met in 0 of 1 repeats" not in text
    assert ("Run as: `python bench/bench_quality.py transfer --backbone mobilenetv3_large_100 --source "
            "mobilenetv3_small_100 --repeats 1 --search-args '--confirm-k 1'`") in text
    assert "cold-r0 10" in text and "Measured on: 2 cores; not recorded." in text
    assert transfer_section([]) == ["Not run yet."]
    rows[1]["verdict"] = {**verdict, "comparisons": {"winner-vs-baseline": {
        "image_method": "paired", "image_se": 0.0031, "image_se_bound": 0.0058}}}
    text = "\n".join(transfer_section(rows[:2]))  # the warm search not run yet: the cold one is shown
    assert "| 0 | - | 30.0 | 5 (7) | 4 | not run | - | - |" in text and "met in 0 of 0 repeats" in text
    assert "cold-r0 winner-vs-baseline 0.31 (bound 0.58)" in text


def test_a_transfer_study_carried_to_a_new_store_searches_its_source_again():
    """The results file says the source ran, but the store the warm searches read does not hold it (a
    new machine): the study searches the source again under a new key rather than warm-start from nothing."""
    from bench.quality_transfer import source_key, transfer_section

    assert source_key([], lambda k: False) == "source"
    assert source_key(["source"], lambda k: k == "source") == "source"
    assert source_key(["source"], lambda k: False) == "source-2"
    assert source_key(["source", "source-2"], lambda k: k == "source") == "source"
    assert source_key(["source", "source-2"], lambda k: False) == "source-3"
    verdict = {"verdict": "no_significant_lift", "served": None}
    trials = [{"val_knn": [0.1, 0.3], "status": "completed", "point": "{}"}]
    rows = [{"key": k, "backbone": "mobilenetv3_small_100", "seed": 600, "trial_epochs": 20, "verdict": verdict,
             "repeat": None} for k in ("source", "source-2")]
    rows += [{"key": f"{m}-r{r}", "repeat": r, "trial_epochs": 2, "search_trials": trials, "verdict": verdict,
              "backbone": "mobilenetv3_large_100", "warm_start": [{}] * 3 if m == "warm" else [],
              **({"source_key": "source-2"} if (m, r) == ("warm", 1) else {})}
             for r in (0, 1) for m in ("cold", "warm")]
    text = "\n".join(transfer_section(rows))
    assert "Source `source-2`: one `mobilenetv3_small_100` search" in text
    assert "| 3 (source) |" in text and "| 3 (source-2) |" in text  # the old rows name no source: the first


def test_a_transfer_study_carried_with_its_source_export_reads_it_instead_of_searching_again(tmp_path, monkeypatch):
    """The results file names a source the new store lacks, but its export lies beside the file: no
    source search runs; the warm search reads the export with --warm-start-file and its row says so.
    Without the export the source is searched again, and exported after it."""
    import argparse
    from types import SimpleNamespace

    from bench import quality_transfer as qt

    verdict = {"verdict": "no_significant_lift", "served": None}
    path = tmp_path / "transfer.jsonl"
    path.write_text(json.dumps({"key": "source", "backbone": "mobilenetv3_small_100", "seed": 600,
                                "trial_epochs": 20, "verdict": verdict, "repeat": None}) + "\n")
    ran, exported = [], []

    def search(setup, sid, experiment, extra, backbone):
        ran.append((sid, extra))
        return {"search_wall_s": 1.0, "trial_epochs": 2, "verdict": verdict,
                "search_trials": [{"val_knn": [0.1, 0.3], "status": "completed", "point": "{}"}]}

    monkeypatch.setattr(qt, "_searched", lambda uri, sid: False)  # a new store: nothing searched in it
    monkeypatch.setattr(qt, "_warm_sources", lambda uri, sid: [])
    monkeypatch.setattr(qt, "export_source", lambda uri, sid, backbone, dest: exported.append((sid, dest)))
    setup = SimpleNamespace(tracking_uri="sqlite:///x.db", args=argparse.Namespace(
        tracking_uri="sqlite:///x.db", backbone="mobilenetv3_large_100", source="mobilenetv3_small_100",
        repeats=1, search_args="--confirm-k 1", budget="cpu"))
    qt.results_file(path, "source").write_text("{}")  # the export carried beside the results file
    qt.transfer(setup, search, lambda study: path)
    assert [sid for sid, _ in ran] == ["q-tr-cpu-mobilenetv3_large_100-cold-r0",
                                       "q-tr-cpu-mobilenetv3_large_100-warm-r0-kept"]
    assert "--warm-start-file" not in ran[0][1]
    assert ran[1][1][-2:] == ["--warm-start-file", str(tmp_path / "transfer-source.results.json")]
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert rows[-1]["warm_start_file"] == "transfer-source.results.json" and rows[-1]["source_key"] == "source"
    assert rows[-1]["warm_order"] == "kept" and "warm_order" not in rows[-2]
    assert exported == []

    # a repeat whose only warm search ran its points after the baselines (older code): the warm one again
    old = {**rows[-1]}
    del old["warm_order"]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows[:-1], old]))
    ran.clear()
    qt.transfer(setup, search, lambda study: path)
    assert [sid for sid, _ in ran] == ["q-tr-cpu-mobilenetv3_large_100-warm-r0-kept"]
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [qt.warm_order(r) for r in rows if r["key"] == "warm-r0"] == ["after", "kept"]
    assert qt.search_id("cpu", "b", "warm-r0", "first") == "q-tr-cpu-b-warm-r0-first"
    assert qt.search_id("cpu", "b", "warm-r0", "after") == "q-tr-cpu-b-warm-r0"
    qt.transfer(setup, search, lambda study: path)  # nothing left to run
    assert len(ran) == 1
    assert "read its results from `transfer-source.results.json`" in "\n".join(qt.transfer_section(rows))

    path.write_text(path.read_text().splitlines()[0] + "\n")  # again, without the export: searched again
    qt.results_file(path, "source").unlink()
    ran.clear()
    qt.transfer(setup, search, lambda study: path)
    assert [sid for sid, _ in ran][0] == "q-tr-cpu-mobilenetv3_small_100-source-2"
    assert all("--warm-start-file" not in extra for _, extra in ran)
    assert exported == [("q-tr-cpu-mobilenetv3_small_100-source-2", tmp_path / "transfer-source-2.results.json")]


def test_the_warm_points_run_before_the_baselines_and_the_sampler():
    """The searcher issues the enqueued warm points first (the best recipes known on the data can reach
    their level after one trial's epochs; ASHA never stops them: asha.py), then the baselines as
    themselves, then sampled points."""
    pytest.importorskip("ray")
    import optuna
    from optuna.distributions import FloatDistribution

    from recipe_search.tune.searcher import RecipeSearcher

    warm = [("a's trial 1", {"lr": 0.2}), ("a's trial 2", {"lr": 0.5})]
    s = RecipeSearcher(space={"lr": FloatDistribution(0.01, 1.0, log=True)}, metric="objective", mode="max",
                       sampler=optuna.samplers.RandomSampler(seed=0), warm=warm,
                       baselines=[("mocov2", None), ("sinfonce-light", {"lr": 0.06})])
    issued = [s.suggest(f"t{i}") for i in range(5)]
    assert issued[:4] == [{"lr": 0.2}, {"lr": 0.5}, {"baseline": "mocov2"}, {"baseline": "sinfonce-light"}]
    assert set(issued[4]) == {"lr"} and issued[4]["lr"] not in (0.2, 0.5, 0.06)
    attrs = [t.user_attrs.get("warm_start") for t in s._ot_study.trials]
    # without a warm start, the baselines first
    cold = RecipeSearcher(space={"lr": FloatDistribution(0.01, 1.0, log=True)}, metric="objective", mode="max",
                          sampler=optuna.samplers.RandomSampler(seed=0), baselines=[("mocov2", None)])
    assert cold.suggest("b") == {"baseline": "mocov2"} and set(cold.suggest("x")) == {"lr"}
    assert attrs[:2] == ["a's trial 1", "a's trial 2"] and attrs[2] is None  # the sampled one names no source


def test_asha_never_stops_a_warm_point_and_stops_a_sampled_trial_that_scores_the_same():
    """Ray's own scheduler, driven without a cluster: two strong trials set the rung's cut-off, then a
    warm point and a sampled point with the same poor scores report; only the sampled one is stopped.
    The warm point is known by its trial key, as the MLflow logger knows it: a dotted name (a distill
    field) reaches the trial nested, as Tune passes it."""
    pytest.importorskip("ray")
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from recipe_search.search.warm_start import trial_key
    from recipe_search.tune.asha import BaselineSafeASHA

    warm = {"lr": 0.2, "distill.weight": 0.1}
    sched = BaselineSafeASHA(time_attr="epoch", metric="obj", mode="max", max_t=8, grace_period=2,
                             reduction_factor=3, stop_last_trials=False, keep={trial_key(warm): "a's trial 1"})
    trials = [SimpleNamespace(trial_id=f"t{i}", config=c) for i, c in enumerate(
        [{"lr": 0.5, "distill": {"weight": 0.2}}, {"lr": 0.6, "distill": {"weight": 0.2}},
         {"lr": 0.2, "distill": {"weight": 0.1}}, {"lr": 0.2, "distill": {"weight": 0.3}}])]
    for t in trials:
        sched.on_trial_add(None, t)

    def actions(trial, score):
        return [sched.on_trial_result(None, trial, {"epoch": e, "obj": score}) for e in range(1, 9)]

    actions(trials[0], 0.9), actions(trials[1], 0.8)
    assert set(actions(trials[2], 0.1)) == {TrialScheduler.CONTINUE}  # the warm point runs to the end
    assert TrialScheduler.STOP in actions(trials[3], 0.1)  # lr alone is not the warm point
