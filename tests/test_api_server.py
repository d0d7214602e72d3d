"""The API as a real server (a uvicorn subprocess beside writers of the same store) and under
schemathesis.

Shared helpers: ``tests/api_support.py``; fixtures (``populated``, ``client``, ``fresh_uri``,
``jobs_home``): ``tests/conftest.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from recipe_search.store import RecipeStore

from api_support import ROOT, recipe, promote, AUTH, jobs_app, free_port, start_server  # tests/ is on sys.path


def test_uvicorn_serves_while_another_process_writes(tmp_path, fresh_uri):
    uri = fresh_uri
    promote(RecipeStore(uri), [0.10, 0.10, 0.10])
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_server(uri, port, log, "--cache-ttl", "0.2")
    base = f"http://127.0.0.1:{port}"
    # the writer runs in this (pytest) process, the server in its own: two processes on one SQLite file
    writer_errors: list[BaseException] = []

    def write() -> None:
        try:
            s = RecipeStore(uri)
            for i in range(1, 6):
                promote(s, [0.1 + i / 100] * 3, rec=recipe(seed=i))
                promote(s, [0.2, 0.2], backbone="mobilenetv3_small_100", fp=f"{i:016x}", budget=f"b{i}")
                time.sleep(0.2)  # let the readers see each state
        except BaseException as e:  # pragma: no cover - reported below
            writer_errors.append(e)

    assert httpx.get(base + "/recipes/resnet18", timeout=30).status_code == 200  # warm
    writer = threading.Thread(target=write)
    writer.start()
    statuses: dict[int, int] = {}
    seen: set[float] = set()
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            while writer.is_alive():
                for path in ("/recipes/resnet18", "/recipes", "/recipes/resnet18/history"):
                    r = http.get(path)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if path == "/recipes/resnet18" and r.status_code == 200:
                        seen.add(r.json()["test_probe_top1"]["mean"])
            assert not writer_errors
            time.sleep(0.3)
            assert http.get("/recipes/resnet18").json()["test_probe_top1"]["mean"] == pytest.approx(0.15)
            assert len(http.get("/recipes").json()) == 6
            assert len(http.get("/recipes/resnet18/history").json()) == 6
        assert set(statuses) == {200} and sum(statuses.values()) > 10, statuses
        assert len(seen) >= 2  # it saw promotions while they happened
    finally:
        writer.join()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    # graceful shutdown: uvicorn drains, logs, then re-raises the signal (exit status -15)
    assert rc in (0, -signal.SIGTERM), log.read_text()
    text = log.read_text()
    assert "Shutting down" in text and "Finished server process" in text, text
    assert "Traceback" not in text and " 500 " not in text




@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_no_server_errors(populated, jobs_home, mode):
    """Property-based requests generated from the OpenAPI schema, with the write token (so the
    job routes are in it; a stand-in runs the jobs): every check schemathesis has passes on
    every operation -- no 5xx, documented status codes, headers and schemas, valid data
    accepted, invalid data rejected, auth enforced."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import CHECKS, load_all_checks

    jobs_home.mkdir(parents=True)
    (jobs_home / "hold").touch()  # the stand-in search runs until the test ends
    app = jobs_app(populated["uri"], jobs_home, follow_limit_s=0.2)  # ?follow=true ends while the job runs
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    gen_mode = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 13
    load_all_checks()
    checks = CHECKS.get_all()  # every check schemathesis has
    assert len(checks) >= 10, [c.__name__ for c in checks]
    tested = 0
    try:
        for op in operations:
            try:
                strategy = op.as_strategy(gen_mode)
            except Exception as e:  # nothing to negate (e.g. no parameters)
                if mode == "negative":
                    continue
                raise AssertionError(f"{op.label}: {e}") from e

            @given(case=strategy)
            @settings(max_examples=20, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call_and_validate(headers=AUTH, checks=checks)
                assert response.status_code < 500, (op.label, case.path_parameters, response.text)

            try:
                check()
                tested += 1
            except Unsatisfiable:  # negative mode: the operation has no input that can be invalid
                assert mode == "negative", op.label
    finally:
        app.state.jobs.shutdown()
    assert tested >= (13 if mode == "positive" else 6)


@pytest.mark.slow  # a real search beside uvicorn (~90 s): the default suite measured 15m09s on 2 idle cores with it
def test_uvicorn_keeps_answering_while_a_real_search_writes_the_same_store(tmp_path, fresh_uri, make_search_home):
    """A real `recipe-search run` (Ray + MLflow on the same SQLite file) beside a real server."""
    cifar = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    data = ["--data", str(cifar)] if cifar.exists() else ["--dataset", "synthetic"]
    port = free_port()
    proc = start_server(fresh_uri, port, tmp_path / "server.log", "--cache-ttl", "0.2")
    make_search_home()  # the search's home (and no MLflow URI of the caller's)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    search = subprocess.Popen(
        [sys.executable, "-m", "recipe_search", "run", "--backbone", "mobilenetv3_small_050", "--budget", "tiny",
         *data, "--num-samples", "3", "--num-cpus", "2", "--no-progress", "--tracking-uri", fresh_uri],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    statuses: dict[int, int] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            while search.poll() is None:
                for path in ("/recipes", "/readyz", "/recipes/mobilenetv3_small_050/trials"):
                    code = http.get(path).status_code
                    statuses[code] = statuses.get(code, 0) + 1
                time.sleep(0.1)
            out = search.stdout.read()
            assert search.returncode == 0, out
            time.sleep(0.3)  # one cache TTL
            promoted = http.get("/recipes/mobilenetv3_small_050")
            rec = RecipeStore(fresh_uri).get("mobilenetv3_small_050")
            if rec is None:  # a tiny budget may land below the untrained floor: nothing is promoted
                assert "not promoted" in out and promoted.status_code == 404, (out, promoted.text)
            else:
                assert promoted.status_code == 200, promoted.text
                body = promoted.json()
                assert body["recipe"]["backbone"] == "mobilenetv3_small_050"
                assert body["fingerprint"] == rec.fingerprint and body["verdict"]["verdict"] == rec.verdict
                assert body["test_probe_top1"]["n"] == len(body["verdict"]["seeds"]) >= 2
            trials = http.get("/recipes/mobilenetv3_small_050/trials").json()
            search_trials = [t for t in trials if t["stage"] == "search"]
            confirmation = [t for t in trials if t["stage"] == "confirmation"]
            assert len(search_trials) == 3 and confirmation, trials
            assert all(t["test_probe_top1"] is None for t in search_trials)  # the search never reads test
            finished = [t for t in confirmation if t["status"] == "FINISHED"]
            assert {t["phase"] for t in finished} == {"select", "report"}, finished
            # the select phase chooses on val only; the report phase alone reads test
            assert all((t["test_probe_top1"] is not None) == (t["phase"] == "report") for t in finished), finished
        # while the search wrote: never a 5xx; 404 only for the leaderboard before its first trial run
        assert statuses.get(200, 0) > 10 and all(code in (200, 404) for code in statuses), statuses
    finally:
        if search.poll() is None:
            search.kill()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
