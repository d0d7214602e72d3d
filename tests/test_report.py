"""Search reports (``recipe_search/report*.py``), ``recipe-search report`` and ``GET
/recipes/{backbone}/report``: real MLflow on SQLite in a temp dir, one real tiny search (Ray Tune +
Optuna with its study in SQLite, synthetic data) and a synthetic MLflow record of a 40-trial search
(plus a 20-trial random-search control and a promotion) written without training."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import random
import re
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")
pytest.importorskip("matplotlib")

from typer.testing import CliRunner  # noqa: E402

from recipe_search import records  # noqa: E402
from recipe_search.cli import app as cli_app  # noqa: E402
from recipe_search.report import build_report  # noqa: E402

BACKBONE = "mobilenetv3_small_050"
SYNTH = "mobilenetv3_small_100"  # the backbone of the synthetic record
SECTIONS = ("verdict", "confirmation", "lift", "floor", "curves", "best-so-far", "importance", "search", "recipe",
            "reproduce")
runner = CliRunner()


def images_of(html: str) -> dict[str, tuple[int, int]]:
    """``{data-file: (width, height)}`` of the page's inline PNGs (decoded with PIL)."""
    from PIL import Image

    out = {}
    for data, name in re.findall(r"<img src='data:image/png;base64,([^']+)'[^>]*data-file='([^']+)'", html):
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            out[name] = im.size
    return out


def assert_self_contained(html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:|//)""", html), "the page loads something from the network"
    assert "<script" not in html and "@import" not in html


# --------------------------------------------------------------------------- a real tiny search


@pytest.fixture(scope="module")
def searched(search_home):
    from recipe_search.plan import SearchSettings
    from recipe_search.search import run_search

    storage = f"sqlite:///{search_home / 'optuna.db'}"
    t0 = time.monotonic()
    # the two baselines and one sampled trial; the baselines confirmed at 2 seeds (about 45 s)
    o = run_search(SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=3, seed=0, confirm_k=0,
                                  dataset="synthetic", study_storage=storage), progress=False)
    print(f"\ntiny search with its report: {time.monotonic() - t0:.1f}s")
    return search_home, o, storage


def test_the_search_logs_its_report_on_the_parent_run(searched):
    from mlflow.tracking import MlflowClient

    home, o, _ = searched
    assert o.status == "finished"
    c = MlflowClient(o.tracking_uri)
    files = {a.path for a in c.list_artifacts(o.parent_run_id, "report")}
    assert {"report/report.html", "report/curves.png", "report/best_so_far.png"} <= files, files
    metrics = c.get_run(o.parent_run_id).data.metrics
    print(f"report at the end of the search: {metrics['report_s']:.2f}s")
    assert 0 < metrics["report_s"] < 120
    html = Path(c.download_artifacts(o.parent_run_id, "report/report.html", str(home / "dl"))).read_text()
    assert_self_contained(html)
    for sid in SECTIONS:
        assert f"<section id='{sid}'>" in html, sid
    assert o.verdict is not None and o.verdict.line.split(":")[0] in html
    assert "SE (paired per image" in html and " paired (bound " in html  # the report runs recorded their test images
    imgs = images_of(html)
    assert {"curves.png", "best_so_far.png"} <= set(imgs) and all(w > 100 and h > 100 for w, h in imgs.values())
    for t in o.trials:  # every search trial is in the search-stage table
        assert t.stage == "confirmation" or f"<td>{t.trial_id}</td>" in html
    from recipe_search.report import report_page

    assert report_page(o.tracking_uri, o.parent_run_id) == html  # what the API serves: the logged page


def test_cli_report_by_backbone_and_by_search_id(searched, tmp_path):
    home, o, _ = searched
    res = runner.invoke(cli_app, ["report", BACKBONE, "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert f"report of search {o.search_id}" in res.output
    page = tmp_path / "a" / "report.html"
    assert page.is_file() and (tmp_path / "a" / "curves.png").stat().st_size > 5000
    html = page.read_text()
    assert_self_contained(html)
    assert f"recipe-search run --backbone {BACKBONE} --dataset synthetic --budget tiny --num-samples 3 --confirm-k 0" in html
    assert f"recipe-search train {BACKBONE} --epochs 200 --dataset synthetic" in html
    assert f"optuna-dashboard sqlite:///{home / 'optuna.db'}" in html
    res = runner.invoke(cli_app, ["report", o.search_id])  # default: $RECIPE_SEARCH_HOME/reports/<id>
    assert res.exit_code == 0, res.output
    assert (home / "reports" / o.search_id / "report.html").is_file()


@pytest.mark.parametrize("target", ["resnet999", "no-such-search-20260101", "a'b"])
def test_cli_report_unknown_target_is_one_line_exit_2(searched, target):
    res = runner.invoke(cli_app, ["report", target])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) <= 2 and lines[0].startswith("error:") and "Traceback" not in res.output, res.output


def test_the_optuna_study_has_names_for_optuna_dashboard(searched):
    """optuna-dashboard reads the same storage: the study is recipe-search:<id>, its objective is
    val_knn_top1, and every trial told carries its Tune trial id, MLflow run id and stage."""
    import optuna
    from mlflow.tracking import MlflowClient

    _, o, storage = searched
    study = optuna.load_study(study_name=f"recipe-search:{o.search_id}", storage=storage)
    assert study.metric_names == ["val_knn_top1"]
    assert study.user_attrs["search_id"] == o.search_id and study.user_attrs["backbone"] == BACKBONE
    assert study.user_attrs["mlflow_parent_run_id"] == o.parent_run_id
    runs = {records.Trial.from_run(r).trial_id: r.info.run_id for r in MlflowClient(o.tracking_uri).search_runs(
        [MlflowClient(o.tracking_uri).get_run(o.parent_run_id).info.experiment_id],
        records.filter(search_id=o.search_id, stage="search"))}
    told = [t for t in study.trials if t.state.is_finished()]
    assert told, study.trials
    for t in told:
        assert t.user_attrs["stage"] == "search" and t.user_attrs["search_id"] == o.search_id
        assert runs[t.user_attrs["trial_id"]] == t.user_attrs["mlflow_run_id"], (t.user_attrs, runs)


# --------------------------------------------------------------------------- a synthetic 40-trial record


def _search_record(uri: str, search_id: str, *, n: int, sampler: str, seed: int, fingerprint: str,
                   epochs: int = 8) -> tuple[str, list]:
    """Log a finished search the way ``recipe_search.search`` does (parent run, artifacts, child
    trial runs with per-epoch val_knn_top1, confirmation runs, verdict), without training."""
    import optuna
    from mlflow.entities import Metric

    from recipe_search.baselines import baselines_for
    from recipe_search.plan import SearchSettings
    from recipe_search.space import load_space
    from recipe_search.tracking import Tracker
    from recipe_search.verdict import RecipeRuns, choose, decide

    rng = random.Random(seed)
    space = load_space(None, SYNTH)
    tracker = Tracker(uri, "recipe-search")
    search = records.Search(search_id=search_id, backbone=SYNTH, dataset="cifar10", budget="proxy",
                            fingerprint=fingerprint, status="running")
    base_trial = search.trial_base()
    parent = tracker.parent_run(search, name=f"search-{search_id}", params={
        "backbone": SYNTH, "dataset": "cifar10", "budget": "proxy", "num_samples": n, "max_epochs": epochs,
        "seed": seed, "space": ",".join(space.sources), "sampler": sampler,
        "early_stopping": sampler == "tpe", "fingerprint": fingerprint, "data.classes": 10, "data.train": 5000})
    tracker.log_text(parent, space.to_yaml(), "space.yaml")
    tracker.log_dict(parent, SearchSettings(backbone=SYNTH, budget="proxy", num_samples=n, seed=seed,
                                            data="cifar10-jpeg.tar.gz", sampler=sampler,
                                            early_stopping=sampler == "tpe").public_dict(), "settings.json")
    tracker.log_metrics(parent, {"floor_val_knn_top1": 0.21, "floor_val_probe_top1": 0.24})
    dist = space.optuna_space()
    BASELINES = baselines_for(space)  # the baselines a search of this space runs (mocov2, sinfonce-light)
    asker = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    now = int(time.time() * 1000)
    best, trials = (None, -1.0), []
    for i in range(n):
        base = BASELINES[i].name if i < len(BASELINES) else None
        point = asker.ask(dist).params
        # the score rises with lr (log) and falls with temperature: fANOVA should find lr first
        final = 0.3 + 0.08 * math.log10(point["lr"] / 0.01) - 0.2 * point["temperature"] + rng.gauss(0, 0.01)
        stop = epochs if base or sampler == "random" or rng.random() < 0.4 else rng.choice([2, 4])
        curve = [final * (0.55 + 0.45 * e / epochs) for e in range(1, stop + 1)]
        status = "completed" if stop == epochs else "pruned"
        if i == 5:
            status, curve = "failed", curve[:1]
        trial_id = f"{search_id[-4:]}{i:04d}"
        run, _ = tracker.child_run(parent, search_id, trial_id, name=f"t-{trial_id}", trial=dataclasses.replace(
            base_trial, stage="search", status=status, baseline=base,
            point=json.dumps({"baseline": base} if base else point, sort_keys=True),
            recipe=json.dumps({"backbone": SYNTH, **point})))
        tracker.client.log_batch(run, metrics=[Metric("val_knn_top1", v, now, e) for e, v in enumerate(curve, 1)])
        if status == "completed":
            tracker.log_metrics(run, {"val_probe_top1": curve[-1] + 0.02, "epochs_completed": epochs}, step=epochs)
            best = max(best, (run, curve[-1]), key=lambda b: b[1])
        tracker.terminate(run, "FAILED" if status == "failed" else "FINISHED")
        trials.append((trial_id, point, curve[-1], status))
    finalist = max((t for t in trials[2:] if t[3] == "completed"), key=lambda t: t[2])
    recipes = [RecipeRuns(finalist[0], "finalist", {"backbone": SYNTH, **finalist[1]}),
               *[RecipeRuns(b.name, "baseline", {"backbone": SYNTH}) for b in BASELINES]]
    select_seeds, report_seeds = [1, 2, 3], [4, 5, 6]
    reported = {}

    def confirm_run(r, s, phase):
        lift = 0.08 if r.role == "finalist" else 0.0
        m = {"val_knn_top1": 0.4 + lift + rng.gauss(0, 0.005)}
        if phase == "report":
            m.update(test_probe_top1=0.45 + lift + 0.01 * s, test_knn_top1=0.4 + lift + rng.gauss(0, 0.005))
        run, _ = tracker.child_run(parent, search_id, f"c{r.name[:6]}{s}", name=f"confirm-{r.name}-s{s}",
                                   trial=base_trial.confirmation(
                                       job=r.name, phase=phase, status="completed", seed=s,
                                       baseline=r.name if r.role == "baseline" else None, recipe=json.dumps(r.recipe)))
        tracker.log_metrics(run, m, step=epochs)
        tracker.terminate(run)
        return m

    for r in recipes:
        for s in select_seeds:
            r.runs[s] = confirm_run(r, s, "select")
    sel = choose(recipes, select_seeds)
    for r in recipes:  # the report phase trains the winner and the reference baseline only
        if r.name in sel.report_names:
            reported[r.name] = RecipeRuns(r.name, r.role, r.recipe, {s: confirm_run(r, s, "report")
                                                                     for s in report_seeds})
    v = decide(sel, list(reported.values()), {s: {"test_probe_top1": 0.3} for s in report_seeds}, report_seeds, (3,))
    tracker.log_dict(parent, v.to_dict(), "verdict.json")
    tracker.set_tags(parent, records.Search(status="finished", stage="finished", verdict=v.verdict,
                                            verdict_line=v.line, best_run_id=best[0]).to_tags())
    tracker.terminate(parent)
    return parent, recipes, v


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A 40-trial TPE search of SYNTH with a 20-trial random-search control, its winner promoted."""
    from recipe_search.store import RecipeStore

    d = tmp_path_factory.mktemp("synthetic")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    fp = "0123456789abcdef"
    control, _, _ = _search_record(uri, f"{SYNTH}-control-0001", n=20, sampler="random", seed=1, fingerprint=fp)
    parent, recipes, v = _search_record(uri, f"{SYNTH}-search-0002", n=40, sampler="tpe", seed=0, fingerprint=fp)
    win = next(r for r in recipes if r.name == v.winner)
    assert v.verdict == "better_than_baselines" and v.served == win.name
    prov = {"search_id": f"{SYNTH}-search-0002", "search_run_id": parent, "verdict": v.to_dict(),
            "fingerprint": {"digest": fp, "classes": 10, "train_per_class": 500}, "code_version": "test"}
    RecipeStore(uri).promote(SYNTH, "cifar10", fp, win.recipe, {"test_probe_top1": v.score.mean}, prov,
                             scores=list(v.score.values), budget="proxy")
    return uri, parent, control


def test_report_of_a_40_trial_search(synthetic, tmp_path):
    uri, parent, control = synthetic
    t0 = time.monotonic()
    rep = build_report(uri, SYNTH)
    took = time.monotonic() - t0
    print(f"\nreport of a 40-trial search (+ a 20-trial control): {took:.2f}s, page {len(rep.html) / 1e3:.0f} kB")
    rec = rep.record
    assert rec.parent_run_id == parent and len(rec.search_trials) == 40
    assert rec.comparison is not None and rec.comparison["sampler"] == "random"
    assert rec.promoted is not None
    page = rep.write(tmp_path)
    html = page.read_text()
    assert_self_contained(html)
    imgs = images_of(html)
    assert set(imgs) == {"curves.png", "best_so_far.png", "importances.png", "slices.png"}, imgs
    assert all((tmp_path / name).stat().st_size > 5000 for name in imgs)
    imp = re.findall(r"<tr class=''><td>([\w.]+)</td><td class=n>([\d.]+)</td></tr>", html.split("id='importance'")[1])
    assert imp and imp[0][0] == "lr", imp  # the synthetic score depends mostly on lr
    assert "better_than_baselines" in html and "stopped by ASHA" not in html  # the legend is in the PNG
    assert f"{SYNTH}-control-0001" in html  # the random-search control beside it
    assert "Provenance" in html and "0123456789abcdef" in html
    assert took < 60


def test_api_serves_the_report_with_etag(synthetic):
    from fastapi.testclient import TestClient

    from api.app import create_app

    from mlflow.tracking import MlflowClient

    uri, parent, _ = synthetic
    client = TestClient(create_app(uri))
    # the synthetic search predates reports (no report/ artifact): the page is rendered, nothing written
    assert not MlflowClient(uri).list_artifacts(parent, "report")
    r = client.get(f"/recipes/{SYNTH}/report")
    assert not MlflowClient(uri).list_artifacts(parent, "report")
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"].startswith("text/html") and r.headers["etag"].startswith('"')
    assert "max-age" in r.headers["cache-control"]
    assert "<section id='verdict'>" in r.text and parent in r.text
    assert set(images_of(r.text)) >= {"curves.png", "best_so_far.png", "importances.png"}
    again = client.get(f"/recipes/{SYNTH}/report", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == r.headers["etag"]
    missing = client.get("/recipes/resnet18/report")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
    assert "resnet18" in missing.json()["detail"] and missing.json()["known_backbones"] == [SYNTH]
    bad = client.get(f"/recipes/{SYNTH}/report", params={"fingerprint": "fedcba9876543210"})
    assert bad.status_code == 404 and "fingerprint" in bad.json()["detail"]
    assert "/recipes/{backbone}/report" in client.get("/openapi.json").json()["paths"]



def test_the_searcher_names_what_it_tells_optuna():
    """Unit level: the study's objective name and attributes, and each told trial's user attributes
    (the MLflow run id comes from the search's registered MLflow logger)."""
    import optuna
    from optuna.distributions import FloatDistribution

    from recipe_search.tune import events
    from recipe_search.tune.searcher import RecipeSearcher

    class Logger:  # what TrialLogger exposes: Tune trial id -> MLflow run id
        runs = {"t1": "run-1", "b1": "run-b"}

    events.register("sid-1", [Logger()])
    try:
        s = RecipeSearcher(space={"lr": FloatDistribution(0.01, 1.0, log=True)}, metric="objective", mode="max",
                           sampler=optuna.samplers.RandomSampler(seed=0), baselines=[("sinfonce-light", {"lr": 0.06})],
                           search_id="sid-1", study_name="recipe-search:sid-1",
                           study_attrs={"search_id": "sid-1", "backbone": "resnet18"})
        assert s.suggest("b1") == {"baseline": "sinfonce-light"} and "lr" in s.suggest("t1")
        s.on_trial_complete("t1", {"objective": 0.4, "final": 1.0})
        s.on_trial_complete("b1", {"objective": 0.3, "final": 1.0})
    finally:
        events.unregister("sid-1")
    study = s._ot_study
    assert study.study_name == "recipe-search:sid-1" and study.metric_names == ["val_knn_top1"]
    assert study.user_attrs == {"search_id": "sid-1", "backbone": "resnet18"}
    attrs = sorted((t.user_attrs for t in study.trials), key=lambda a: a["trial_id"])
    assert attrs == [{"trial_id": "b1", "stage": "search", "search_id": "sid-1", "mlflow_run_id": "run-b",
                      "baseline": "sinfonce-light"},
                     {"trial_id": "t1", "stage": "search", "search_id": "sid-1", "mlflow_run_id": "run-1"}]
