"""Search jobs over the API (a stand-in search command, and one real search): lifecycle, cancel, 429,
resume, restart, delete, the log, shutdown.

Shared helpers: ``tests/api_support.py``; fixtures (``populated``, ``client``, ``fresh_uri``,
``jobs_home``): ``tests/conftest.py``."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from recipe_search.settings import SearchSettings

from settings_support import run_settings  # tests/ is on sys.path
from api_support import ROOT, TOKEN, AUTH, jobs_app, calls, wait_state, job_log, BODY  # tests/ is on sys.path



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


@pytest.mark.slow  # ~2 min of real training: CI runs it with `pytest -m slow`, outside the 15-minute default suite
def test_api_job_runs_a_real_search_cancel_resume_no_duplicates(fresh_uri, make_search_home):
    """A job over the API runs a real tiny search on an operator-configured data root: listed,
    cancelled (SIGINT) after its first trial, resumed, and finished with a verdict, every
    MLflow run once."""
    from mlflow.tracking import MlflowClient

    from api.jobs import JobsConfig

    make_search_home()
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


def test_a_jobs_progress_is_read_from_the_search_records(make_search_home):
    """``search_progress``: stage and status from the search's state file; trial counts per stage,
    the best search-stage trial and the verdict from its MLflow records (promote.summarize)."""
    from api.job_process import search_dir, search_progress
    from recipe_search import records
    from recipe_search.state import META_FILE, write_meta
    from recipe_search.tracking import Tracker

    home = make_search_home(db=True)
    assert search_progress("s1", home.tracking_uri)["trials"] == {}  # no state file yet: nothing read
    write_meta(search_dir("s1") / META_FILE, {"search_id": "s1", "status": "running", "stage": "report",
                                              "experiment": "recipe-search", "floor_val": {"val_knn_top1": 0.1}})
    tracker = Tracker(home.tracking_uri, "recipe-search")
    parent = tracker.parent_run(records.Search(search_id="s1", backbone="resnet18", status="running"),
                                name="search-s1", params={})
    base = records.Trial(backbone="resnet18", stage="search")
    for tid, status, val, baseline in (("a", "completed", 0.4, "mocov2"), ("b", "completed", 0.5, None),
                                       ("c", "diverged", None, None), ("d", "pruned", 0.6, None)):
        run, _ = tracker.child_run(parent, "s1", tid, name=tid, trial=dataclasses.replace(
            base, status=status, baseline=baseline))
        if val is not None:
            tracker.log_metrics(run, {"val_knn_top1": val})
        tracker.terminate(run)
    run, _ = tracker.child_run(parent, "s1", "e", name="e", trial=base.confirmation(
        job="mocov2", phase="select", status="completed"))
    tracker.log_metrics(run, {"val_knn_top1": 0.9})  # still RUNNING: counted as running
    tracker.set_tags(parent, records.Search(verdict="no_significant_lift", verdict_line="nothing shown").to_tags())
    p = search_progress("s1", home.tracking_uri)
    assert (p["stage"], p["status"], p["floor_val_knn_top1"]) == ("report", "running", 0.1)
    assert p["trials"] == {"done": 2, "failed": 1, "pruned": 1} and p["confirmation"] == {"running": 1}
    assert p["best"] == {"trial_id": "b", "run_id": p["best"]["run_id"], "kind": "tpe", "val_knn_top1": 0.5}
    assert (p["verdict"], p["verdict_line"]) == ("no_significant_lift", "nothing shown")
