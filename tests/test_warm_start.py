"""The warm start (recipe_search/search/warm_start.py): which of the store's results of other
backbones become the sampler's first points, read from a real MLflow store on SQLite; the whole
path through a search is in test_search.py."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mlflow")

from api_support import promote  # noqa: E402
from recipe_search import records  # noqa: E402
from recipe_search.baselines import by_name  # noqa: E402
from recipe_search.compose import compose  # noqa: E402
from recipe_search.search.warm_start import as_point, describe, trial_key, warm_points, warm_share  # noqa: E402
from recipe_search.space import load_space  # noqa: E402
from recipe_search.store import RecipeStore  # noqa: E402


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
    got = warm_points(store, backbone="efficientnet_b0", dataset="cifar10", space=space, limit=5)
    assert [(w.kind, w.backbone, round(w.point["lr"], 3)) for w in got] == [
        ("served", "mobilenetv3_small_100", 0.3),  # served on cifar10 (not the stl10 one, not its own)
        ("trial", "mobilenetv3_small_100", 0.03), ("trial", "mobilenetv3_small_100", 0.02)]  # best val first
    assert got[1].run_id == ids[1] and got[1].score == pytest.approx(0.35) and got[1].search_id == "s1"
    assert "mobilenetv3_small_100's trial" in got[1].label() and "val kNN 0.350" in got[1].label()
    assert warm_points(store, backbone="efficientnet_b0", dataset="cifar10", space=space, limit=1) == got[:1]
    # a point equal to a baseline's is not taken again; another dataset's results only when asked
    skip = [got[0].point]
    assert [w.point for w in warm_points(store, backbone="efficientnet_b0", dataset="cifar10", space=space,
                                         limit=5, skip=skip)] == [w.point for w in got[1:]]
    other = warm_points(store, backbone="efficientnet_b0", dataset="stl10", space=space, limit=5)
    assert [(w.kind, w.backbone, w.dataset) for w in other] == [("served", "resnet18", "stl10")]
    assert got[0].to_dict()["point"] == got[0].point and got[0].to_dict()["dataset"] == "cifar10"


def test_the_plan_says_where_the_search_starts(fresh_uri, space):
    store = RecipeStore(fresh_uri)
    assert warm_points(store, backbone="efficientnet_b0", dataset="cifar10", space=space, limit=3) == []
    assert "nothing in the store to start from" in describe([], "cifar10", enabled=True)
    assert "off (--no-warm-start)" in describe([], "cifar10", enabled=False)
    promote(store, [0.40, 0.41, 0.42], backbone="mobilenetv3_small_100",
            rec=full_recipe("mobilenetv3_small_100", lr=0.3))
    pts = warm_points(store, backbone="efficientnet_b0", dataset="cifar10", space=space, limit=3)
    line = describe(pts, "cifar10", enabled=True)
    assert line.startswith("warm start: the first 1 sampled trial(s)") and "mobilenetv3_small_100's served recipe" \
        in line and "test probe 0.410" in line


def test_the_transfer_study_counts_trial_epochs_to_the_cold_incumbent():
    from bench.quality_transfer import incumbent, reached_at, transfer_section

    def trial(curve, status="completed", point="{}"):
        return {"val_knn": curve, "status": status, "point": point}

    cold = [trial([0.1, 0.2], point=None), trial([0.1], "pruned"), trial([0.2, 0.3]), trial([0.1, 0.25])]
    warm = [trial([0.2, 0.35]), trial([0.1, 0.2])]
    assert incumbent(cold) == 0.3 and incumbent([trial([0.9], "pruned")]) is None
    assert reached_at(cold, 0.3) == 5 and reached_at(warm, 0.3) == 2  # epochs of every trial started so far
    assert reached_at([trial([0.1, 0.99], "pruned")], 0.3) is None  # a stopped trial never counts
    verdict = {"verdict": "no_significant_lift", "served": None}
    rows = [{"key": "source", "backbone": "mobilenetv3_small_100", "seed": 600, "trial_epochs": 20,
             "verdict": verdict, "repeat": None},
            {"key": "cold-r0", "repeat": 0, "trial_epochs": 7, "search_trials": cold, "verdict": verdict,
             "backbone": "mobilenetv3_large_100", "search_args": "--confirm-k 1", "wall_s": 600, "machine": "2 cores"},
            {"key": "warm-r0", "repeat": 0, "trial_epochs": 4, "search_trials": warm, "verdict": verdict,
             "warm_start": [{"backbone": "mobilenetv3_small_100"}]}]
    text = "\n".join(transfer_section(rows))
    # warm's earliest possible: the baseline's 2 epochs + one full trial's 2
    assert "| 0 | 30.0 | 5 (7) | 4 | 2 (4) | 0.40 | 1 |" in text and "met in 1 of 1 repeats" in text
    assert ("Run as: `python bench/bench_quality.py transfer --backbone mobilenetv3_large_100 --source "
            "mobilenetv3_small_100 --repeats 1 --search-args '--confirm-k 1'`") in text
    assert "cold-r0 10" in text and "Measured on: 2 cores; not recorded." in text
    assert transfer_section([]) == ["Not run yet."]
    rows[1]["verdict"] = {**verdict, "comparisons": {"winner-vs-baseline": {
        "image_method": "paired", "image_se": 0.0031, "image_se_bound": 0.0058}}}
    text = "\n".join(transfer_section(rows[:2]))  # the warm search not run yet: the cold one is shown
    assert "| 0 | 30.0 | 5 (7) | 4 | not run | - | - |" in text and "met in 0 of 0 repeats" in text
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
