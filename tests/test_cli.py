"""The recipe-search CLI: clear one-line errors, store views, train, and crash/Ctrl-C + --resume
through real subprocesses (real Ray, MLflow on SQLite in a temp dir)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rs_faults  # tests/faults (on sys.path by conftest)
from typer.testing import CliRunner

from recipe_search.cli import app

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
BACKBONE = "mobilenetv3_small_050"
runner = CliRunner()


def data_args() -> list[str]:
    return ["--data", str(CIFAR)] if CIFAR.exists() else ["--dataset", "synthetic"]


@pytest.fixture
def cache(tmp_path_factory) -> Path:
    """One decoded-data cache for the session (decoding the tarball is the slow part)."""
    return tmp_path_factory.getbasetemp() / "rs-cache"


@pytest.fixture
def home(make_search_home, monkeypatch, cache):
    monkeypatch.setenv("RECIPE_SEARCH_CACHE", str(cache))
    return make_search_home().path


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    out = result.stdout + (result.stderr if hasattr(result, "stderr") else "")
    return result, out


def assert_user_error(result, out: str, *fragments: str) -> None:
    assert result.exit_code == 2, out
    assert "Traceback" not in out and result.exception is None or isinstance(result.exception, SystemExit)
    assert "error:" in out
    for f in fragments:
        assert f in out, out


# -- user errors: one red line, exit 2, no traceback ---------------------------------------------


def test_unknown_backbone_lists_close_matches(home):
    result, out = invoke("run", "--backbone", "mobilenetv3_smal_100")
    assert_user_error(result, out, "is not a timm model", "mobilenetv3_small_100")


def test_bad_space_yaml_names_the_path(home, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: {type: loguniform, low: 0, high: 1}\n")
    result, out = invoke("run", "--backbone", "resnet18", "--space", str(bad))
    assert_user_error(result, out, "bad.yaml", "lr.low must be > 0")
    bad.write_text("lr: {type: loguniform, low: 0.01, high: 1\n")
    result, out = invoke("run", "--backbone", "resnet18", "--space", str(bad))
    assert_user_error(result, out, "not valid YAML")
    bad.write_text("learning_rate: 0.1\n")
    result, out = invoke("run", "--backbone", "resnet18", "--space", str(bad))
    assert_user_error(result, out, "unknown recipe field 'learning_rate'")


@pytest.mark.parametrize("args, fragment", [
    (["--budget", "huge"], "unknown budget 'huge'"),
    (["--num-samples", "1"], "--num-samples must be >= 2"),
    (["--gpus-per-trial", "-0.5"], "--gpus-per-trial must be >= 0"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--data", "/no/such/cifar.tar.gz"], "does not exist"),
    (["--storage-path", "s3://bucket/rs"], "cloud URIs are not supported"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
    (["--warm-start-file", "/no/such/results.json"], "--warm-start-file: /no/such/results.json does not exist"),
])
def test_bad_options_are_user_errors(home, args, fragment):
    result, out = invoke("run", "--backbone", "resnet18", *args)
    assert_user_error(result, out, fragment)


def test_gpu_budgets_and_gpus_asked_for_on_a_cpu_box_are_refused_with_the_estimate(home):
    """No GPU here: --budget proxy stops after printing the plan and its estimated wall time
    (measured), and asks for --yes; --gpus-per-trial 1 is an error, not a silent CPU run."""
    pytest.importorskip("ray")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result, out = invoke("run", "--backbone", BACKBONE, "--budget", "proxy", *data_args(), "--num-cpus", "2",
                         "--no-progress", "--train-per-class", "16", "--val-per-class", "8", "--test-per-class", "8")
    assert_user_error(result, out, "--budget proxy is sized for a GPU", "--yes", "estimated")
    assert "plan: search 40 trials x <= 30 epochs" in out and "train images/s per trial" in out, out
    assert "SE <=" in out  # the budget says its val/test standard errors
    result, out = invoke("run", "--backbone", BACKBONE, "--budget", "tiny", *data_args(), "--num-cpus", "2",
                         "--gpus-per-trial", "1", "--no-progress")
    assert_user_error(result, out, "--gpus-per-trial 1 asks for a GPU but the Ray cluster has none")


@pytest.mark.slow  # starts its own Ray (~50 s): CI runs it with `pytest -m slow`
def test_trials_failing_alike_stop_the_search_with_one_line(home, tmp_path, monkeypatch):
    """Issue 24: run from another directory with a relative $RECIPE_SEARCH_DATA, every trial of the
    first wave failing the same way (an injected fault): exit 2, the error in one line, no
    traceback, no confirmation."""
    pytest.importorskip("ray")
    if not CIFAR.exists():
        pytest.skip(f"needs the shared CIFAR-10 tarball at {CIFAR}")
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("RECIPE_SEARCH_DATA", os.path.relpath(CIFAR, work))
    for key, value in rs_faults.process_env("*=raise").items():  # the workers of the Ray the CLI starts
        monkeypatch.setenv(key, value)
    result, out = invoke("run", "--backbone", BACKBONE, "--budget", "tiny", "--num-cpus", "2", "--num-samples", "6",
                         "--search-id", "ff", "--no-progress")
    assert_user_error(result, out, "error: search ff stopped: all 2 trials of the first wave failed with the same "
                                   "error: InjectedFault: injected fault in trial <trial>")
    assert "note: confirmation:" not in out and "Traceback" not in out, out


def test_show_without_a_store_or_recipe(home):
    result, out = invoke("show", "resnet18")
    assert_user_error(result, out, "no store at", "mlflow.db", "recipe-search run")
    result, out = invoke("show", "resnet_18")
    assert_user_error(result, out, "close matches")
    result, out = invoke("list")
    assert result.exit_code == 0 and "no promoted recipes" in out


def test_corrupt_store_is_a_user_error(home):
    home.mkdir(parents=True)
    (home / "mlflow.db").write_bytes(b"this is not a database")
    result, out = invoke("list")
    assert_user_error(result, out, "mlflow.db")


# -- store views and train ------------------------------------------------------------------------


def test_show_list_and_train_use_the_promoted_recipe(home, tmp_path):
    from recipe_search import config
    from recipe_search.store import RecipeStore
    from trainer.recipe import Recipe

    recipe = Recipe(backbone=BACKBONE, batch_size=16, queue_size=64, image_size=16, epochs=2,
                    proj_hidden_dim=128)
    verdict = {"verdict": "no_significant_lift", "line": "verdict: no_significant_lift (...)", "seeds": [1, 2, 3],
               "metric": "test_probe_top1", "winner": "t1",
               "score": {"mean": 0.6, "std": 0.01, "n": 3, "values": [0.59, 0.6, 0.61]},
               "floor": {"mean": 0.3, "std": 0.02, "n": 3, "values": [0.28, 0.3, 0.32]},
               "lift": {"best_baseline": {"mean": 0.1, "low": -0.01, "high": 0.21, "n": 3, "method": "paired"}}}
    prov = {"search_id": "s1", "verdict": verdict, "fingerprint": {"digest": "0123456789abcdef"},
            "code_version": "0.1.0", "date": "2026-01-01T00:00:00Z"}
    r = RecipeStore(config.default_tracking_uri()).promote(
        BACKBONE, "synthetic", "0123456789abcdef", recipe, {"test_probe_top1": 0.6}, prov,
        scores=[0.59, 0.6, 0.61], budget="tiny")
    assert r.promoted

    result, out = invoke("show", BACKBONE)
    assert result.exit_code == 0, out
    shown = json.loads(result.stdout)
    assert shown["recipe"] == recipe.to_dict() and shown["provenance"]["search_id"] == "s1"
    assert shown["test_probe_top1"]["mean"] == pytest.approx(0.6) and shown["budget"] == "tiny"
    assert shown["fingerprint"] == "0123456789abcdef" and shown["verdict"] == "no_significant_lift"

    result, out = invoke("list")
    assert result.exit_code == 0 and BACKBONE in out and "no_significant_lift" in out and "0.600" in out
    result, out = invoke("list", "--json")
    assert [r["backbone"] for r in json.loads(result.stdout)] == [BACKBONE]

    out_dir = tmp_path / "full"
    result, out = invoke("train", BACKBONE, "--epochs", "1", "--dataset", "synthetic", "--classes", "2",
                         "--train-per-class", "16", "--val-per-class", "4", "--test-per-class", "8",
                         "--out", str(out_dir), "--device", "cpu", "--threads", "1")
    assert result.exit_code == 0, out
    assert (out_dir / "encoder.pt").exists() and json.loads((out_dir / "recipe.json").read_text())["epochs"] == 1
    assert "test_probe_top1" in out and "val_knn_top1" in out


# -- crash and Ctrl-C: real subprocesses ------------------------------------------------------------


def _env(home: Path, cache: Path) -> dict:
    env = dict(os.environ)
    env.update(RECIPE_SEARCH_HOME=str(home), RECIPE_SEARCH_CACHE=str(cache),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    env.update(rs_faults.process_env("*=sleep:0.5", base=env))  # a little slack to interrupt in
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _query(db: Path, sql: str, *args):
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # tables not created yet, or locked
        return []


FINISHED_TRIALS = ("select r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid "
                   "where t.key = 'rs.kind' and t.value = 'trial' and r.status = 'FINISHED'")
CONFIRMED_RUNS = ("select r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid "
                  "where t.key = 'rs.stage' and t.value = 'confirmation' and r.status = 'FINISHED'")
EPOCH_ROWS = "select count(*) from metrics where key = 'val_knn_top1' and timestamp > ?"


def _wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"search exited ({proc.returncode}) before {what}:\n{out[-3000:]}")
        time.sleep(0.25)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _reap_session(sid: int) -> None:
    """Wait for the killed driver's Ray processes (its session) to exit; kill stragglers by pid."""
    deadline = time.monotonic() + 20
    pids: list[int] = []
    while time.monotonic() < deadline:
        ps = subprocess.run(["ps", "-o", "pid=", "-s", str(sid)], capture_output=True, text=True)
        pids = [int(p) for p in ps.stdout.split()]
        if not pids:
            return
        time.sleep(0.5)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_sigkill_and_ctrl_c_then_resume_rerun_and_duplicate_nothing(tmp_path, cache):
    home = tmp_path / "home"
    db = home / "mlflow.db"
    env = _env(home, cache)
    base = [sys.executable, "-m", "recipe_search", "run", "--backbone", BACKBONE, "--budget", "tiny",
            *data_args(), "--num-samples", "4", "--max-concurrent", "1", "--num-cpus", "2", "--no-progress"]
    resume = [sys.executable, "-m", "recipe_search", "run", "--backbone", BACKBONE, "--resume",
              "--num-cpus", "2", "--no-progress"]

    # 1. SIGKILL as soon as the first trial has finished (the second has just started)
    proc = subprocess.Popen([*base, "--search-id", "crash"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    _wait_for(lambda: len(_query(db, FINISHED_TRIALS)) >= 1, proc, 300, "the first finished trial")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = int(time.time() * 1000)
    _reap_session(proc.pid)
    first_done = {r[0] for r in _query(db, FINISHED_TRIALS)}
    assert first_done
    rows_before = {run: _query(db, "select count(*) from metrics where run_uuid = ?", run)[0][0]
                   for run in first_done}

    # 2. --resume, then Ctrl-C once it has trained another epoch: clean stop + resume hint
    started = int(time.time() * 1000)
    proc = subprocess.Popen(resume, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    _wait_for(lambda: _query(db, EPOCH_ROWS, started)[0][0] >= 1, proc, 300, "an epoch after resuming")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted" in out and f"recipe-search run --backbone {BACKBONE} --resume" in out, out[-3000:]
    assert "Traceback" not in out
    parent = _query(db, "select r.status from runs r join tags t on t.run_uuid = r.run_uuid "
                        "where t.key = 'rs.kind' and t.value = 'search'")
    assert parent == [("KILLED",)]
    _reap_session(proc.pid)

    # 3. --resume, and SIGKILL again once a confirmation run has finished
    proc = subprocess.Popen(resume, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    _wait_for(lambda: len(_query(db, CONFIRMED_RUNS)) >= 1, proc, 400, "the first finished confirmation run")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = int(time.time() * 1000)
    _reap_session(proc.pid)
    confirmed_first = {r[0] for r in _query(db, CONFIRMED_RUNS)}
    confirmed_rows = {run: _query(db, "select count(*) from metrics where run_uuid = ?", run)[0][0]
                      for run in confirmed_first}

    # 4. --resume to the end: it continues inside the confirmation stage
    done = subprocess.run(resume, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "resumed" in done.stdout and "verdict: " in done.stdout, done.stdout[-3000:]
    assert "s with the earlier sessions; this session:" in " ".join(done.stdout.split()), done.stdout[-3000:]
    walls = dict(_query(db, "select m.key, m.value from latest_metrics m join tags k on k.run_uuid = m.run_uuid "
                            "where k.key = 'rs.kind' and k.value = 'search' and m.key like 'search%wall_s'"))
    assert walls["search_total_wall_s"] > walls["search_wall_s"] > 0, walls  # the Ctrl-C'd session counts

    def runs_of(stage: str):
        return _query(db, "select r.run_uuid, r.status, (select value from tags where run_uuid = r.run_uuid and "
                          "key = 'rs.trial_id'), (select value from tags where run_uuid = r.run_uuid and key = "
                          "'rs.job'), (select value from tags where run_uuid = r.run_uuid and key = 'rs.seed') "
                          "from runs r join tags t on t.run_uuid = r.run_uuid where t.key = 'rs.stage' and "
                          "t.value = ?", stage)

    # exactly one parent and one child run per trial, all finished, none duplicated
    trials = runs_of("search")
    assert len(trials) == 4, trials
    assert len({t[2] for t in trials}) == 4
    assert {t[1] for t in trials} == {"FINISHED"}, trials
    # the Optuna state was restored: each baseline ran exactly once in the search stage
    baselines = _query(db, "select b.value, count(*) from tags b join tags s on s.run_uuid = b.run_uuid "
                           "where b.key = 'rs.baseline' and s.key = 'rs.stage' and s.value = 'search' "
                           "group by b.value")
    assert sorted(baselines) == [("mocov2", 1), ("sinfonce-light", 1)], baselines
    # confirmation: one run per (recipe, seed); select: both baselines on seeds 1 and 2; report: fresh seeds
    confirmed = runs_of("confirmation")
    pairs = [(c[3], c[4]) for c in confirmed]
    phase = dict(_query(db, "select run_uuid, value from tags where key = 'rs.phase'"))
    select = [(c[3], c[4]) for c in confirmed if phase.get(c[0]) == "select"]
    report = [(c[3], c[4]) for c in confirmed if phase.get(c[0]) == "report"]
    assert len(pairs) == len(set(pairs)) == len(select) + len(report), confirmed
    assert {"1", "2"} == {p[1] for p in select} and {p[1] for p in report} <= {"3", "4", "5"}, confirmed
    assert {("mocov2", "1"), ("sinfonce-light", "2")} <= set(select) and len(select) in (4, 6), pairs
    assert 2 <= len(report) <= 6, report
    assert {c[1] for c in confirmed} == {"FINISHED"}, confirmed
    assert _query(db, "select r.status from runs r join tags t on t.run_uuid = r.run_uuid "
                      "where t.key = 'rs.kind' and t.value = 'search'") == [("FINISHED",)]
    # per-epoch metrics were never logged twice for an epoch
    dup = _query(db, "select run_uuid, key, step, count(*) from metrics where key in ('val_knn_top1', 'loss', "
                     "'val_probe_top1', 'test_probe_top1') group by run_uuid, key, step having count(*) > 1")
    assert dup == [], dup
    # the trials finished before a crash were not re-run: nothing new logged to them
    for run in first_done:
        assert _query(db, "select count(*) from metrics where run_uuid = ?", run)[0][0] == rows_before[run]
    for run in confirmed_first:
        assert _query(db, "select count(*) from metrics where run_uuid = ?", run)[0][0] == confirmed_rows[run]
        assert _query(db, "select count(*) from metrics where run_uuid = ? and timestamp > ?", run,
                      killed_at)[0][0] == 0
    # the verdict is tagged on the parent; a recipe is promoted unless it is below the floor
    verdict = _query(db, "select t.value from tags t join tags k on k.run_uuid = t.run_uuid "
                         "where k.key = 'rs.kind' and k.value = 'search' and t.key = 'rs.verdict'")
    assert len(verdict) == 1 and verdict[0][0] in ("better_than_baselines", "no_significant_lift", "below_floor")
    promos = _query(db, "select t.value from tags t join tags k on k.run_uuid = t.run_uuid "
                        "where k.key = 'rs.kind' and k.value = 'promotion' and t.key = 'rs.state'")
    served = _query(db, "select t.value from tags t join tags k on k.run_uuid = t.run_uuid "
                        "where k.key = 'rs.kind' and k.value = 'search' and t.key = 'rs.served'")
    assert promos == ([("current",)] if served[0][0] else [("withheld",)]), (promos, served)


def test_ui_links_to_the_runs_table(home, tmp_path):
    """MLflow 3 opens an experiment on its GenAI overview: the commands link to the runs table."""
    from mlflow.tracking import MlflowClient

    from recipe_search.cli import runs_url

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("recipe-search")
    run = client.create_run(exp).info.run_id
    assert runs_url("http://h:5000/", uri) == f"http://h:5000/#/experiments/{exp}/runs"
    assert runs_url("http://h:5000", uri, run_id=run) == f"http://h:5000/#/experiments/{exp}/runs/{run}"
    assert runs_url("http://h:5000", uri, experiment="nope") == "http://h:5000"
    result, out = invoke("ui", "--tracking-uri", "http://127.0.0.1:9")  # nothing listens there
    assert result.exit_code == 0 and "the store is an MLflow server: open http://127.0.0.1:9" in out, out


def test_serve_runs_the_api_package_in_its_own_process(tmp_path):
    """`recipe-search serve` execs `python -m api.server` (recipe_search never imports api: the
    arrows run api -> recipe_search): same options, and SIGTERM reaches uvicorn's graceful shutdown."""
    import socket
    import urllib.request

    probe = ("import sys, recipe_search.cli, recipe_search.search; "
             "sys.exit(sorted(m for m in sys.modules if m == 'api' or m.startswith('api.')) != [])")
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO).returncode == 0

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:  # from another directory: api is found beside recipe_search, not in cwd
        proc = subprocess.Popen([sys.executable, "-m", "recipe_search", "serve", "--host", "127.0.0.1", "--port",
                                 str(port), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert r.status == 200 and json.loads(r.read())["status"] == "ok"
                    break
            except OSError:
                assert time.monotonic() < deadline, "serve did not come up in 60 s"
                time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert rc in (0, -signal.SIGTERM), text
    assert "Shutting down" in text and "Finished server process" in text and "Traceback" not in text, text
