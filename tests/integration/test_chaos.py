"""Issue 26, chaos: a Ray node lost mid-trial costs no trial.

A two-node Ray cluster on loopback (head 1 CPU + worker 1 CPU, token auth), MLflow on SQLite
(only the driver writes it) and a shared ``--storage-path``; ``python -m recipe_search run``
joins it with a smoke search of the two baselines. Once a trial running on the worker node has
reported an epoch checkpoint (and is not at its last epoch), the worker node is killed: SIGKILL
of its process group and of every process below it. The search must end with a verdict, every
trial completed or pruned (none failed for the lost node), the interrupted trial retried from its
checkpoint in the same MLflow run (no epoch twice, none missing), one MLflow run per trial, and
no process left behind. The figures (which trial, at which epoch, resumed where, the extra wall
time, the run count) go to ``<test output>/integration/chaos-node-loss.json``.

Run with ``RECIPE_SEARCH_INTEGRATION=1 .venv/bin/python -m pytest -m integration
tests/integration/test_chaos.py -q`` (no PostgreSQL needed).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
BACKBONE = "mobilenetv3_small_050"
MAX_EPOCHS = 3  # the smoke budget's


def _load_services():
    import importlib.util

    spec = importlib.util.spec_from_file_location("rs_it_services", HERE / "services.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("rs_it_services", mod)
    spec.loader.exec_module(mod)
    return mod


svc = _load_services()


def _say(capsys, msg: str) -> None:
    with capsys.disabled():
        print(f"\n[chaos] {msg}", flush=True)


def _output_dir() -> Path:
    return Path(os.environ.get("RECIPE_SEARCH_TEST_OUTPUT") or REPO / "test-output") / "integration"


def _db(c: dict) -> Path:
    return c["root"] / "home" / "mlflow.db"


def _logged_epochs(db: Path) -> dict[str, int]:
    """The last epoch MLflow holds per trial id (the driver logs it once Tune has the epoch's checkpoint)."""
    if not db.exists():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            rows = con.execute("select t.value, max(m.step) from metrics m join tags t on t.run_uuid = m.run_uuid "
                               "and t.key = 'rs.trial_id' where m.key = 'val_knn_top1' group by t.value").fetchall()
    except sqlite3.Error:
        return {}  # the schema is being created, or the driver holds a write lock: next poll
    return {tid: int(step) for tid, step in rows}


def _trials_on(node_pid: int) -> dict[str, int]:
    """Trial id -> pid of the trials running on the node below ``node_pid``: Tune runs each trial
    in its trial directory (``run_trial_<trial id>_...``), the cwd of its worker process."""
    out = {}
    for pid in svc.descendants(node_pid):
        try:
            name = Path(os.readlink(f"/proc/{pid}/cwd")).name
        except OSError:
            continue
        if name.startswith("run_trial_"):
            out[name] = pid
    return out


def _victim(c: dict) -> tuple[str, int] | None:
    """``(trial id, epoch)`` of a trial on the worker node whose last logged epoch is checkpointed
    and not its last."""
    running = _trials_on(c["worker"].proc.pid)
    for tid, epoch in _logged_epochs(_db(c)).items():
        if 1 <= epoch < MAX_EPOCHS and any(name.startswith(f"run_trial_{tid}_") for name in running):
            return tid, epoch
    return None


def _kill_node(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the worker node: its ``ray start`` process group, then every process below it."""
    pids = sorted(svc.descendants(proc.pid) | {proc.pid})
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


@pytest.fixture()
def cluster():
    root = Path(tempfile.mkdtemp(prefix="rsch", dir="/tmp"))  # short: Ray's AF_UNIX sockets live below
    tracker = svc.ProcessTracker(marker=str(root))
    env = {"RECIPE_SEARCH_HOME": str(root / "home"), "RECIPE_SEARCH_CACHE": str(root / "cache"),
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_LOGGING_LEVEL": "WARNING",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    head = worker = None
    try:
        head = svc.start_ray_head(root / "ray", num_cpus=1, env=env, tracker=tracker)
        worker = svc.start_ray_worker(head, num_cpus=1, env=env, tracker=tracker)
        yield {"root": root, "env": env, "head": head, "worker": worker, "tracker": tracker}
    finally:
        if worker is not None:
            svc.stop_ray_worker(worker, tracker)
        if head is not None:
            svc.stop_ray_head(head, tracker)
        deadline = time.monotonic() + 15
        while tracker.leftovers() and time.monotonic() < deadline:
            time.sleep(0.5)
        if tracker.leftovers():
            tracker.kill_all()
        shutil.rmtree(root, ignore_errors=True)


def _search(c: dict) -> tuple[subprocess.Popen, float]:
    data = ["--dataset", "cifar10", "--data", str(CIFAR)] if CIFAR.exists() else ["--dataset", "synthetic"]
    args = [sys.executable, "-m", "recipe_search", "run", "--backbone", BACKBONE, "--budget", "smoke",
            "--num-samples", "2", "--confirm-seeds", "2", "--report-looks", "2", *data, "--no-progress",
            "--ray-address", f"127.0.0.1:{c['head'].port}", "--storage-path", str(c["root"] / "storage"),
            "--search-id", "chaos"]
    log = open(c["root"] / "search.log", "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=c["root"],
                            env={**os.environ, **c["env"], "COLUMNS": "200"}, start_new_session=True)
    log.close()
    c["tracker"].add(proc.pid)
    return proc, time.monotonic()


def test_a_lost_node_costs_no_trial(cluster, capsys):
    c = cluster
    proc, t0 = _search(c)
    victim = None
    deadline = t0 + 900
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        c["tracker"].sample()
        victim = _victim(c)
        if victim is None:
            time.sleep(0.3)
    assert victim is not None, (c["root"] / "search.log").read_text()[-5000:]
    t_kill = time.time()
    killed = _kill_node(c["worker"].proc)
    kill_s = time.monotonic() - t0
    _say(capsys, f"killed the worker node ({len(killed)} processes) at {kill_s:.0f}s: trial {victim[0]} "
                 f"after its epoch {victim[1]}/{MAX_EPOCHS}")
    try:
        proc.wait(timeout=1800)
    except subprocess.TimeoutExpired:
        svc._terminate(proc)
    wall_s = time.monotonic() - t0
    out = (c["root"] / "search.log").read_text()
    assert proc.returncode == 0, out[-6000:]
    assert "verdict: " in out and "2 Ray node(s) checked" in out, out[-4000:]
    figures = _figures(c, victim, t_kill, kill_s, wall_s)
    _output_dir().mkdir(parents=True, exist_ok=True)
    (_output_dir() / "chaos-node-loss.json").write_text(json.dumps(figures, indent=2) + "\n")
    _say(capsys, json.dumps(figures, indent=2))

    assert figures["statuses"] and set(figures["statuses"]) <= {"completed", "pruned"}, figures["statuses"]
    assert figures["mlflow_trial_runs"] == figures["distinct_trial_ids"] == figures["tune_trials"], figures
    v = figures["interrupted"]
    assert v["retries"] == "1" and v["status"] in ("completed", "pruned"), v
    assert v["mlflow_epochs"] == list(range(1, len(v["mlflow_epochs"]) + 1)), v  # each epoch once, no gap
    assert v["resumed_at_epoch"] == v["killed_after_epoch"] + 1, v  # from its checkpoint, not from scratch
    assert figures["parent"]["trials_retried"] >= 1, figures["parent"]

    left = []
    svc.stop_ray_worker(c["worker"], c["tracker"])
    svc.stop_ray_head(c["head"], c["tracker"])
    deadline = time.monotonic() + 20
    while (left := c["tracker"].leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, "processes left behind:\n" + "\n".join(left)


def _resumed_at(log: str, trial_id: str) -> tuple[int | None, str | None]:
    """From the search's progress log: the first epoch the trial reported after it was lost, and
    the loss line itself."""
    lost, resumed = None, None
    for line in log.splitlines():
        if f"trial {trial_id} " not in line:
            continue
        if " lost at epoch " in line:
            lost = line.split(" | ")[0]
        elif lost is not None and resumed is None and " epoch " in line and "/" in line.split(" epoch ")[1]:
            resumed = int(line.split(" epoch ")[1].split("/")[0])
    return resumed, lost


def _figures(c: dict, victim: tuple[str, int], t_kill: float, kill_s: float, wall_s: float) -> dict:
    """What the lost node cost, read back from MLflow (the driver's SQLite) and the progress log."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{_db(c)}")
    exp = client.get_experiment_by_name("recipe-search")
    runs = client.search_runs([exp.experiment_id], "tags.`rs.kind` = 'trial' and tags.`rs.search_id` = 'chaos'")
    parent = client.search_runs([exp.experiment_id], "tags.`rs.kind` = 'search' and tags.`rs.search_id` = 'chaos'")[0]
    trial_id, epoch = victim
    run = next(r for r in runs if r.data.tags.get("rs.trial_id") == trial_id)
    hist = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    at = {m.step: m.timestamp / 1000 for m in hist}
    epoch_s = statistics.median(m.value for m in client.get_metric_history(run.info.run_id, "epoch_time_s"))
    gap = at[epoch + 1] - at[epoch] if epoch + 1 in at else None
    resumed, lost_line = _resumed_at((c["root"] / "storage" / "chaos" / "progress.log").read_text(), trial_id)
    storage = c["root"] / "storage"
    tune_trials = {d.name for exp_dir in storage.glob("chaos*") for d in exp_dir.glob("run_trial_*")}
    return {
        "search_wall_s": round(wall_s, 1), "node_killed_at_s": round(kill_s, 1),
        "interrupted": {
            "trial_id": trial_id, "stage": run.data.tags.get("rs.stage"),
            "recipe": run.data.tags.get("rs.baseline") or run.data.tags.get("rs.job"),
            "killed_after_epoch": epoch, "resumed_at_epoch": resumed, "progress_line": lost_line,
            "retries": run.data.tags.get("rs.retries"), "retry_reason": run.data.tags.get("rs.retry_reason"),
            "status": run.data.tags.get("rs.status"), "mlflow_epochs": [m.step for m in hist],
            "median_epoch_s": round(epoch_s, 1),
            "kill_to_next_epoch_s": round(at[epoch + 1] - t_kill, 1) if gap is not None else None,
            "gap_between_epoch_reports_s": round(gap, 1) if gap is not None else None,
            "extra_wall_s": round(gap - epoch_s, 1) if gap is not None else None},
        "mlflow_trial_runs": len(runs), "distinct_trial_ids": len({r.data.tags.get("rs.trial_id") for r in runs}),
        "tune_trials": len(tune_trials),
        "statuses": sorted({r.data.tags.get("rs.status") for r in runs}),
        "parent": {"trials_retried": parent.data.metrics.get("trials_retried"),
                   "trial_retries": parent.data.metrics.get("trial_retries"),
                   "tags": {k: v for k, v in parent.data.tags.items() if k.startswith("rs.retry.")},
                   "verdict": parent.data.tags.get("rs.verdict")},
    }
