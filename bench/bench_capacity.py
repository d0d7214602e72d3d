"""Benchmark: what one search driver's MLflow logging costs per trial, per tracking backend, in
one run -- the inputs of the capacity plan in docs/capacity.md.

It replays ``--trials`` proxy-budget trials (``--epochs`` per-epoch reports, the final report,
completion with its artifacts) through the real ``recipe_search.tune.trial_logger.TrialLogger`` -- the
exact MLflow calls a search makes from its driver -- with points sampled from the real search
space, and measures per backend:

* driver seconds of MLflow logging per trial, and so the trials/hour one driver can log;
* MLflow client calls per trial and ms per call;
* backend database growth per trial (SQLite file size, or ``pg_database_size``);
* artifact bytes per trial;
* the Optuna storage's cost per trial (ask, a report per epoch, tell) on SQLite and PostgreSQL.

No training happens: the metric values are synthetic, the calls and their payloads are real.

    python bench/bench_capacity.py --start-postgres          # sqlite, server+sqlite, server+pg
    python bench/bench_capacity.py --trials 50 --epochs 30   # the proxy budget's 30 epochs

Prints a table, an extrapolation per 1,000 trials, and one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import emit, services  # noqa: E402

# the client methods the Tracker calls (log_text's inner log_artifact is not counted twice)
CLIENT_CALLS = ("create_run", "update_run", "search_runs", "get_run", "get_metric_history", "log_batch",
                "log_text", "set_terminated", "create_experiment", "get_experiment_by_name")


def _count_calls(client, counter: dict) -> None:
    for name in CLIENT_CALLS:
        fn = getattr(client, name)

        @functools.wraps(fn)
        def wrapped(*a, _fn=fn, _name=name, **kw):
            counter[_name] = counter.get(_name, 0) + 1
            return _fn(*a, **kw)

        setattr(client, name, wrapped)


HTTP = {"requests": 0}


def _count_http() -> None:
    """Count the HTTP requests MLflow's REST and artifact clients send (all go through
    ``requests``) in ``HTTP["requests"]``; patched once per process."""
    import requests

    orig = requests.Session.request
    if getattr(orig, "_rs_counted", False):
        return

    def request(self, method, url, *a, **kw):
        HTTP["requests"] += 1
        return orig(self, method, url, *a, **kw)

    request._rs_counted = True
    requests.Session.request = request


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def replay(uri: str, trials: int, epochs: int, backbone: str, first: int = 0) -> dict:
    """Log ``trials`` trials of ``epochs`` epochs to ``uri`` the way a search's driver does;
    returns the wall time and the client calls and HTTP requests made."""
    import optuna

    from recipe_search import records
    from recipe_search.budget import get_budget
    from recipe_search.search import SearchSettings
    from recipe_search import plan
    from recipe_search.tracking import Tracker
    from recipe_search.tune.trial_logger import TrialLogger
    from recipe_search.tune.trial import TrialContext

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    p = plan(SearchSettings(backbone=backbone, budget="proxy", dataset="synthetic", max_epochs=epochs))
    ctx = TrialContext(backbone=backbone, space=p.space, budget_fixed=dict(get_budget("proxy").fixed),
                       image_size=p.budget.image_size, max_epochs=epochs, seed=0, data=p.data)
    tracker = Tracker(uri, "bench-capacity")
    calls: dict[str, int] = {}
    _count_calls(tracker.client, calls)
    _count_http()
    search_id = f"bench-{os.getpid()}-{first}-{time.time_ns()}"
    parent = tracker.parent_run(records.Search(search_id=search_id), name=f"search-{search_id}",
                                params={"backbone": backbone})
    logger = TrialLogger(tracker, parent_run_id=parent, search_id=search_id, ctx=ctx)
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=first))
    dists = p.space.optuna_space()
    calls.clear()
    http0 = HTTP["requests"]
    start, t0 = time.time(), time.perf_counter()
    done: list = []
    for i in range(first, first + trials):
        config = sampler.ask(dists).params
        trial = SimpleNamespace(trial_id=f"{i:05d}", config=config, last_result={}, status="RUNNING")
        logger.on_trial_start(trial, done + [trial])
        for epoch in range(1, epochs + 1):
            result = {"epoch": epoch, "loss": 8.0 - epoch / epochs, "val_knn_top1": 0.1 + 0.4 * epoch / epochs,
                      "lr": 0.1, "images_per_sec": 9000.0 + i, "epoch_time_s": 1.3, "knn_time_s": 0.1,
                      "elapsed_s": 1.4 * epoch, "smoothing": 0.1, "key_momentum": 0.99,
                      "trial_elapsed_s": 1.4 * epoch, "time_total_s": 1.4 * epoch}
            trial.last_result = result
            logger.on_trial_result(trial, result, done + [trial])
        final = {"epoch": epochs, "final": True, "val_knn_top1": 0.5, "val_probe_top1": 0.56,
                 "train_probe_top1": 0.7, "probe_l2": 1e-4, "probe_time_s": 2.0, "train_time_s": 1.4 * epochs,
                 "epochs_completed": epochs, "mean_images_per_sec": 9000.0, "trial_wall_s": 1.4 * epochs + 3,
                 "time_total_s": 1.4 * epochs + 3}
        trial.last_result = final
        logger.on_trial_result(trial, final, done + [trial])
        trial.status = "TERMINATED"
        logger.on_trial_complete(trial, done + [trial])
        done.append(trial)
    wall = time.perf_counter() - t0
    calls["http"] = HTTP["requests"] - http0
    end = time.time()
    tracker.terminate(parent)
    return {"wall_s": wall, "start": start, "end": end, "trials": trials, "calls": dict(calls)}


def _replay_star(args: tuple) -> dict:
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    return replay(*args)


def measure(uri: str, *, trials: int, epochs: int, backbone: str, drivers: int, size_of, artifacts: Path) -> dict:
    """``drivers`` concurrent processes, each replaying ``trials`` trials into ``uri``."""
    replay(uri, 1, 2, backbone, first=10**6)  # warm-up: schema, experiment, connections
    db0, art0 = size_of(), _du(artifacts)
    if drivers == 1:
        parts = [replay(uri, trials, epochs, backbone)]
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(drivers) as pool:
            parts = pool.map(_replay_star, [(uri, trials, epochs, backbone, k * trials) for k in range(drivers)])
    wall = max(p["end"] for p in parts) - min(p["start"] for p in parts)  # without process start-up
    n_trials = trials * drivers
    calls: dict[str, int] = {}
    for part in parts:
        for k, v in part["calls"].items():
            calls[k] = calls.get(k, 0) + v
    http = calls.pop("http", 0)
    n_calls = sum(calls.values())
    per_driver_s = sum(part["wall_s"] for part in parts) / n_trials
    return {"drivers": drivers, "trials": n_trials, "epochs": epochs,
            "log_s_per_trial_per_driver": per_driver_s,
            "trials_per_hour_per_driver": 3600 / per_driver_s,
            "trials_per_hour_all_drivers": 3600 * n_trials / wall,
            "calls_per_trial": n_calls / n_trials, "http_per_trial": http / n_trials,
            "http_per_s": http / wall, "ms_per_call": 1000 * per_driver_s * n_trials / n_calls,
            "calls": dict(sorted(calls.items())),
            "db_bytes_per_trial": (size_of() - db0) / n_trials,
            "artifact_bytes_per_trial": (_du(artifacts) - art0) / n_trials}


def replay_optuna(url: str, trials: int, epochs: int, backbone: str, size_of=lambda: 0) -> dict:
    """The Optuna storage side of ``trials`` trials: ask (TPE over the real space), one
    ``report`` per epoch (what Ray's OptunaSearch does per result), tell."""
    import optuna
    from optuna.storages import RDBStorage

    from recipe_search.search import SearchSettings
    from recipe_search import plan

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = plan(SearchSettings(backbone=backbone, budget="proxy", dataset="synthetic")).space.optuna_space()
    study = optuna.create_study(storage=RDBStorage(url), study_name=f"bench-{time.time_ns()}", direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10))
    db0 = size_of()
    t0 = time.perf_counter()
    for i in range(trials):
        t = study.ask(dists)
        for e in range(1, epochs + 1):
            t.report(0.1 + 0.4 * e / epochs, e)
        study.tell(t, 0.5 + 0.001 * i)
    wall = time.perf_counter() - t0
    return {"trials": trials, "epochs": epochs, "s_per_trial": wall / trials, "trials_per_hour": 3600 * trials / wall,
            "db_bytes_per_trial": (size_of() - db0) / trials}


def report(results: dict[str, dict]) -> str:
    lines = [f"{'backend':<22} {'s/trial/driver':>14} {'trials/h/driver':>15} {'trials/h all':>12} "
             f"{'calls/trial':>11} {'HTTP/trial':>10} {'HTTP/s':>7} {'DB MB/1k':>9} {'artif. MB/1k':>12}"]
    for name, r in results.items():
        lines.append(f"{name:<22} {r['log_s_per_trial_per_driver']:>14.2f} {r['trials_per_hour_per_driver']:>15.0f} "
                     f"{r['trials_per_hour_all_drivers']:>12.0f} {r['calls_per_trial']:>11.1f} "
                     f"{r['http_per_trial']:>10.1f} {r['http_per_s']:>7.1f} "
                     f"{r['db_bytes_per_trial'] * 1000 / 2**20:>9.1f} "
                     f"{r['artifact_bytes_per_trial'] * 1000 / 2**20:>12.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="trials per driver")
    ap.add_argument("--epochs", type=int, default=30, help="per-epoch reports per trial (proxy budget: 30)")
    ap.add_argument("--drivers", type=int, default=4,
                    help="also measure this many concurrent drivers against each server (0: skip)")
    ap.add_argument("--server-workers", type=int, default=1, help="mlflow server --workers")
    ap.add_argument("--backbone", default="mobilenetv3_large_100")
    ap.add_argument("--start-postgres", action="store_true", help="also measure a server over a throwaway PostgreSQL")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from recipe_search.config import artifact_root_for

    svc = services()
    root = Path(tempfile.mkdtemp(prefix="rsbc", dir="/tmp"))
    kw = dict(trials=args.trials, epochs=args.epochs, backbone=args.backbone)
    results: dict[str, dict] = {}
    optuna_results: dict[str, dict] = {}
    pg = None
    try:
        optuna_results["sqlite"] = replay_optuna(f"sqlite:///{root / 'optuna.db'}",
                                                 size_of=lambda: (root / "optuna.db").stat().st_size, **kw)
        db = root / "embedded" / "mlflow.db"
        db.parent.mkdir(parents=True)
        uri = f"sqlite:///{db}"
        results["sqlite"] = measure(uri, drivers=1, size_of=lambda: db.stat().st_size if db.exists() else 0,
                                    artifacts=Path(urlparse(artifact_root_for(uri)).path), **kw)
        backends = [("server+sqlite", f"sqlite:///{root / 'server.db'}",
                     lambda: (root / "server.db").stat().st_size)]
        if args.start_postgres:
            os.chmod(root, 0o711)
            pg = svc.start_postgres(root / "pg")
            pg.createdb("mlflow_cap")

            def pg_size() -> int:
                return int(pg.psql("mlflow_cap", "select pg_database_size('mlflow_cap')")[0][0])

            backends.append(("server+pg", pg.url("mlflow_cap"), pg_size))
            pg.createdb("optuna_cap")
            optuna_results["postgresql"] = replay_optuna(
                pg.url("optuna_cap"), size_of=lambda: int(pg.psql("optuna_cap", "select pg_database_size('optuna_cap')")[0][0]),
                **kw)
        for name, backend, size_of in backends:
            sroot = root / name.replace("+", "-")
            server = svc.start_mlflow(backend, sroot, workers=args.server_workers)
            try:
                for drivers in sorted({1, args.drivers} - {0}):
                    label = name if drivers == 1 else f"{name} x{drivers} drivers"
                    results[label] = measure(server.url, drivers=drivers, size_of=size_of,
                                             artifacts=sroot / "artifacts", **kw)
            finally:
                server.stop()
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.trials} trials x {args.epochs} epochs per driver, logged through TrialLogger; "
          f"mlflow server --workers {args.server_workers}; {os.cpu_count()} CPUs:")
    print(report(results))
    if optuna_results:
        print("Optuna storage per trial (ask + a report per epoch + tell):")
        for name, r in optuna_results.items():
            print(f"  {name:<14} {r['s_per_trial'] * 1000:8.1f} ms/trial  {r['trials_per_hour']:10.0f} trials/h  "
                  f"{r['db_bytes_per_trial'] * 1000 / 2**20:8.1f} MB/1k trials")
    results = {**results, **{f"optuna:{k}": v for k, v in optuna_results.items()}}
    return emit(results, args.json)


if __name__ == "__main__":
    main()
