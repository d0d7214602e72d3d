"""Benchmark: how fast trial metrics can be written to MLflow, per tracking backend, in one run.

For each backend it creates a run and measures

* ``log_metric``: one metric per call (what a naive per-step logger does), calls/s;
* ``log_batch``: ``--batch`` metrics per call (what ``recipe_search.tracking.Tracker.log_metrics``
  does with a per-epoch report), calls/s and metrics/s.

Backends (all measured side by side in this process, same client code):

* ``sqlite``      -- the embedded default, ``sqlite:///<tmp>/mlflow.db`` (no server);
* ``server+sqlite`` -- an ``mlflow server`` over SQLite (HTTP + the same DB);
* ``server+pg``   -- an ``mlflow server`` over PostgreSQL (the multi-machine setup).

    python bench/bench_tracking.py --postgres postgresql://user@127.0.0.1:5432/db
    python bench/bench_tracking.py --start-postgres      # a throwaway cluster (initdb; root: runs as postgres)
    python bench/bench_tracking.py --uri mine=http://mlflow:5000   # any tracking URI(s) instead

Prints a table and one JSON line; ratios are relative to ``sqlite``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import emit, services  # noqa: E402


def measure(uri: str, n_single: int = 200, n_batch: int = 40, batch: int = 50) -> dict:
    """Write rates to ``uri`` (a new experiment and run are created there)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(f"bench-tracking-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(exp_id).info.run_id
    client.log_metric(run_id, "warmup", 0.0, step=0)  # connection/pool set-up out of the timing

    t0 = time.perf_counter()
    for i in range(n_single):
        client.log_metric(run_id, "val_knn_top1", i / n_single, step=i)
    single_s = time.perf_counter() - t0

    names = [f"m{j}" for j in range(batch)]
    t0 = time.perf_counter()
    for i in range(n_batch):
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(i), now, i) for k in names])
    batch_s = time.perf_counter() - t0
    client.set_terminated(run_id)

    stored = len(client.get_metric_history(run_id, "val_knn_top1"))
    assert stored == n_single, f"{uri}: {stored} of {n_single} metric points stored"
    return {"log_metric_per_s": n_single / single_s, "log_metric_ms": 1000 * single_s / n_single,
            "log_batch_per_s": n_batch / batch_s, "batch_metrics_per_s": n_batch * batch / batch_s,
            "log_batch_ms": 1000 * batch_s / n_batch, "batch": batch, "n_single": n_single, "n_batch": n_batch}


def report(results: dict[str, dict], base: str = "sqlite") -> str:
    lines = [f"{'backend':<15} {'log_metric/s':>12} {'ms/call':>8} {'log_batch/s':>11} {'metrics/s':>10} "
             f"{'ms/batch':>8} {'x ' + base + ' (single, batch)':>26}"]
    ref = results.get(base)
    for name, r in results.items():
        rel = ""
        if ref:
            rel = f"{r['log_metric_per_s'] / ref['log_metric_per_s']:.2f}, " \
                  f"{r['batch_metrics_per_s'] / ref['batch_metrics_per_s']:.2f}"
        lines.append(f"{name:<15} {r['log_metric_per_s']:>12.1f} {r['log_metric_ms']:>8.2f} "
                     f"{r['log_batch_per_s']:>11.1f} {r['batch_metrics_per_s']:>10.0f} {r['log_batch_ms']:>8.2f} "
                     f"{rel:>26}")
    return "\n".join(lines)


def run_backends(postgres_url: str | None, root: Path, tracker=None, **kw) -> dict[str, dict]:
    """sqlite, server+sqlite and (with ``postgres_url``) server+pg, measured one after the other."""
    svc = services()
    results: dict[str, dict] = {}
    results["sqlite"] = measure(f"sqlite:///{root / 'embedded.db'}", **kw)
    backends = [("server+sqlite", f"sqlite:///{root / 'server.db'}")]
    if postgres_url:
        backends.append(("server+pg", postgres_url))
    for name, backend in backends:
        server = svc.start_mlflow(backend, root / name.replace("+", "-"), tracker=tracker)
        try:
            results[name] = measure(server.url, **kw)
        finally:
            server.stop()
    return results


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--postgres", help="SQLAlchemy URL of an empty PostgreSQL database for the server+pg backend")
    ap.add_argument("--start-postgres", action="store_true", help="start a throwaway PostgreSQL cluster")
    ap.add_argument("--uri", action="append", default=[], metavar="NAME=URI",
                    help="measure these tracking URIs instead of the default backends")
    ap.add_argument("--n-single", type=int, default=200)
    ap.add_argument("--n-batch", type=int, default=40)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    kw = dict(n_single=args.n_single, n_batch=args.n_batch, batch=args.batch)
    root = Path(tempfile.mkdtemp(prefix="rsbt", dir="/tmp"))
    pg = None
    try:
        if args.uri:
            results = {name: measure(uri, **kw) for name, uri in (u.split("=", 1) for u in args.uri)}
        else:
            url = args.postgres
            if args.start_postgres:
                os.chmod(root, 0o711)
                pg = services().start_postgres(root / "pg")
                pg.createdb("mlflow_bench")
                url = pg.url("mlflow_bench")
            results = run_backends(url, root, **kw)
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(report(results))
    return emit(results, args.json)


if __name__ == "__main__":
    main()
