"""Helpers shared by the API tests (``tests/test_api_*.py``): promotions and searches logged the
way recipe-search logs them, the stand-in search command of the job tests, the job client
helpers, and a uvicorn subprocess. The fixtures built on them are in ``tests/conftest.py``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from api.app import create_app
from recipe_search import records
from recipe_search.verdict.stats import paired_interval, summary
from recipe_search.store import RecipeStore

ROOT = Path(__file__).resolve().parents[1]
FP = "0123456789abcdef"
FP2 = "fedcba9876543210"
FP3 = "00000000000000aa"


def recipe(backbone: str = "resnet18", **kw) -> dict:
    return {"backbone": backbone, **kw}


def prov(values, verdict: str = "better_than_baselines", fp: str = FP, **extra) -> dict:
    """Provenance shaped like the lead's promotion code writes it (see the contract)."""
    floor = [v - 0.2 for v in values]
    moco = [v - 0.05 for v in values]
    lift = paired_interval(values, moco).to_dict()
    return {
        "fingerprint": {"digest": fp, "data_digest": "ab" * 32, "image_size": 32, "classes": 10,
                        "train_per_class": 100, "val_per_class": 20, "test_per_class": 50, "epochs": 4,
                        "budget": "small"},
        "verdict": {"verdict": verdict, "line": f"{verdict} (test_probe_top1 {summary(values).fmt(3)})",
                    "metric": "test_probe_top1", "seeds": list(range(len(values))), "winner": "tpe",
                    "score": summary(values).to_dict(), "floor": summary(floor).to_dict(),
                    "baselines": {"mocov2": summary(moco).to_dict()},
                    "lift": {"mocov2": lift, "best_baseline": lift, "floor": paired_interval(values, floor).to_dict()}},
        **extra,
    }


def promote(store: RecipeStore, values, *, backbone="resnet18", dataset="cifar10", fp=FP, budget="small",
            rec=None, metrics=None, verdict="better_than_baselines", source_run_id=None, **extra):
    mean = summary(values).mean
    return store.promote(backbone, dataset, fp, rec or recipe(backbone), {"test_probe_top1": mean, **(metrics or {})},
                         prov(values, verdict, fp, **extra), scores=values, val_scores=dict(enumerate(values)),
                         budget=budget, source_run_id=source_run_id)


def add_search(uri: str, backbone: str, trials: list[dict | None],
               stages: dict[int, str] | None = None) -> tuple[str, list[str]]:
    """Log a search the way recipe_search does: a parent run (:class:`records.Search`) with trial
    child runs (:class:`records.Trial` of the backbone and search; a stage only where ``stages``
    gives one). None -> a failed trial."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    name = f"search-{backbone}"
    exp = c.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else c.create_experiment(name, artifact_location=(Path(uri[10:]).parent / "a").as_uri())
    parent = c.create_run(exp_id, run_name="search", tags=records.Search(backbone=backbone).to_tags())
    ids = []
    for i, m in enumerate(trials):
        tags = records.Trial(backbone=backbone, search_id=parent.info.run_id, parent_run_id=parent.info.run_id,
                             stage=(stages or {}).get(i)).to_tags()
        run = c.create_run(exp_id, run_name=f"trial-{i}", tags=tags)
        rid = run.info.run_id
        c.log_param(rid, "lr", str(0.01 * (i + 1)))
        c.log_param(rid, "optimizer", "sgd")
        c.log_param(rid, "data.dataset", "cifar10")
        if m is None:
            c.set_terminated(rid, "FAILED")
        else:
            for k, v in m.items():
                c.log_metric(rid, k, v)
            c.set_terminated(rid, "FINISHED")
        ids.append(rid)
    c.set_terminated(parent.info.run_id, "FINISHED")
    return parent.info.run_id, ids



TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# A stand-in for `recipe-search run`: records its argv and process group, writes the search's
# state file like a real search, stops on SIGINT with status 130 (as Ctrl-C does), else
# runs while the file <home>/hold exists (at most 60 s) and finishes.
FAKE_RUN = r"""
import json, os, pathlib, signal, sys, time
args = sys.argv[1:]
sid = args[args.index("--search-id") + 1]
home = pathlib.Path(os.environ["RECIPE_SEARCH_HOME"])
state = home / "ray" / sid / "recipe_search.json"
state.parent.mkdir(parents=True, exist_ok=True)
with open(home / "calls.jsonl", "a") as fh:
    fh.write(json.dumps({"args": args, "pid": os.getpid(), "pgid": os.getpgid(0)}) + "\n")
def stop(*_):
    with open(home / "sigint.txt", "a") as fh:
        fh.write(sid + "\n")
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
state.write_text(json.dumps({"search_id": sid, "status": "running", "stage": "search"}))
print("started", flush=True)
if (home / "fail").exists():  # a search that fails the way a bad data path does
    print(f"error: $RECIPE_SEARCH_DATA path {home.parent / 'nowhere.tar.gz'} does not exist", flush=True)
    sys.exit(2)
deadline = time.time() + 60
while (home / "hold").exists() and time.time() < deadline:
    time.sleep(0.05)
state.write_text(json.dumps({"search_id": sid, "status": "finished", "stage": "finished"}))
"""

def jobs_app(uri: str, home: Path, *, max_trials: int = 6, token: str | None = TOKEN, **kw):
    from api.jobs import JobsConfig

    cfg = JobsConfig.from_strings([f"cifar10={home.parent}"], max_trials=max_trials, num_cpus=2, **kw)
    return create_app(uri, write_token=token, jobs=cfg,
                      search_command=[sys.executable, str(home.parent / "fake_run.py")])


def calls(home: Path) -> list[dict]:
    import json

    f = home / "calls.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def wait_state(c: TestClient, job_id: str, states: tuple[str, ...], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = c.get(f"/searches/{job_id}", headers=AUTH).json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, (job, job_log(c, job_id)[-3000:])
        time.sleep(0.1)


def job_log(c: TestClient, job_id: str, **params) -> str:
    r = c.get(f"/searches/{job_id}/log", params=params, headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    return r.text


BODY = {"backbones": ["resnet18"], "budget": "tiny", "dataset": "cifar10"}



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(uri: str, port: int, log: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.server", "--port", str(port), "--tracking-uri", uri, *extra],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not come up in 60 s")

