"""Benchmark: a whole search's wall time as a user runs it, before and after the CPU speed-up, and
how close the plan's estimate came.

Runs ``recipe-search run`` (the real command, its own ``$RECIPE_SEARCH_HOME`` each) once per layout,
in the order given, on the same backbone, budget, data and seed:

* ``channels_last``: the trainer as it is (docs/speed.md section 2);
* ``nchw``: the same code with every process training in the CPU layout from before that change
  (``bench/layouts/nchw/sitecustomize.py`` on ``PYTHONPATH``: the CLI and each Ray worker).

For each run it reads the search's parent run back from MLflow: the plan's estimate (expected and
at most), the measured wall time of the search and of its stages, and the trial-epochs trained
(ASHA and the sequential verdict make two runs of one seed train different amounts when their
trajectories part, so the seconds per trial-epoch are printed beside the wall time). Then the
ratios between the layouts, measured in this one invocation.

    python bench/bench_search_wall.py --budget smoke                # ~10 min on 2 idle cores
    python bench/bench_search_wall.py --budget cpu --json docs/results/speed/search_wall-cpu.json

The cores should be idle: the figures are wall times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import emit  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
LAYOUTS = {"channels_last": None, "nchw": ROOT / "bench" / "layouts" / "nchw"}


def command(args, layout: str) -> list[str]:
    return [sys.executable, "-m", "recipe_search", "run", "--backbone", args.backbone, "--budget", args.budget,
            "--data", str(args.data), "--seed", str(args.seed), "--num-cpus", str(args.num_cpus), "--no-progress",
            *args.extra]


def run_one(args, layout: str, home: Path) -> dict:
    env = dict(os.environ, RECIPE_SEARCH_HOME=str(home))
    env.pop("MLFLOW_TRACKING_URI", None)
    if LAYOUTS[layout] is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(LAYOUTS[layout]), *filter(None, [env.get("PYTHONPATH")])])
    log = home / "run.log"
    print(f"[{layout}] {' '.join(command(args, layout)[1:])}  (log: {log})", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(command(args, layout), env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"[{layout}] recipe-search run exited {rc}; see {log}:\n" + log.read_text()[-3000:])
    return {"layout": layout, "command_wall_s": wall, **read_back(home)}


def read_back(home: Path) -> dict:
    """The search's parent run and its trial runs, from the run's own MLflow store."""
    from mlflow.tracking import MlflowClient

    from recipe_search import records

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("recipe-search")
    parent = client.search_runs([exp.experiment_id], filter_string=records.filter(kind="search"))[0]
    rec = records.Search.from_run(parent)
    search_id = rec.search_id
    runs = client.search_runs([exp.experiment_id], filter_string=records.filter(kind="trial", search_id=search_id),
                              max_results=5000)
    m = parent.data.metrics
    epochs = [r.data.metrics.get("epochs_completed", 0.0) for r in runs]
    row = {"search_id": search_id, "runs": len(runs), "trial_epochs": float(sum(epochs)),
           "trials_train_s": m.get("trials_train_s"), "search_stage_s": m.get("search_stage_s"),
           "confirm_stage_s": m.get("confirm_stage_s"), "search_wall_s": m.get("search_wall_s"),
           "estimate_s": m.get("estimate_s"), "estimate_max_s": m.get("estimate_max_s"),
           "estimate_images_per_sec": m.get("estimate_images_per_sec"),
           "report_seeds": m.get("report_seeds"),
           "verdict": rec.verdict, "served": rec.served}
    if row["search_wall_s"] and row["estimate_s"]:
        row["wall_over_estimate"] = row["search_wall_s"] / row["estimate_s"]
    if row["search_wall_s"] and row["trial_epochs"]:
        row["s_per_trial_epoch"] = row["search_wall_s"] / row["trial_epochs"]
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="mobilenetv3_small_100")
    ap.add_argument("--budget", default="smoke")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--layouts", nargs="+", default=["channels_last", "nchw"], choices=sorted(LAYOUTS))
    ap.add_argument("--json", default=None, help="also write the result JSON here")
    ap.add_argument("--work", default=None, help="keep each run's $RECIPE_SEARCH_HOME under this folder "
                    "(default: a temporary one, removed after a successful bench)")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more `recipe-search run` options")
    args = ap.parse_args(argv)
    args.extra = [a for a in args.extra if a != "--"]
    if not Path(args.data).exists():
        raise SystemExit(f"--data {args.data}: no such file or directory (the CIFAR-10 tarball or folder)")
    rows = []
    tmp = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="rs-wall-"))
    for layout in args.layouts:
        home = tmp / layout
        home.mkdir(parents=True, exist_ok=True)
        rows.append(run_one(args, layout, home))
        r = rows[-1]
        print(f"[{layout}] wall {r['search_wall_s']:.0f} s (command {r['command_wall_s']:.0f} s), estimate "
              f"~{r['estimate_s'] or float('nan'):.0f} s (at most {r['estimate_max_s'] or float('nan'):.0f} s), "
              f"{r['trial_epochs']:.0f} trial-epochs in {r['runs']} runs; {r['verdict']}", flush=True)
    if not args.work:
        shutil.rmtree(tmp, ignore_errors=True)
    out = {"bench": "search_wall", "backbone": args.backbone, "budget": args.budget, "seed": args.seed,
           "num_cpus": args.num_cpus, "load_avg_end": os.getloadavg(), "rows": rows}
    by = {r["layout"]: r for r in rows}
    if {"channels_last", "nchw"} <= set(by):
        a, b = by["nchw"], by["channels_last"]
        out["wall_ratio"] = a["search_wall_s"] / b["search_wall_s"]
        out["per_trial_epoch_ratio"] = a.get("s_per_trial_epoch", float("nan")) / b.get("s_per_trial_epoch", float("nan"))
        print(f"nchw / channels_last: wall {out['wall_ratio']:.2f}x, per trial-epoch {out['per_trial_epoch_ratio']:.2f}x")
    for r in rows:
        if r.get("wall_over_estimate"):
            print(f"{r['layout']}: measured / estimated wall {r['wall_over_estimate']:.2f}")
    emit(out, args.json)
    return out


if __name__ == "__main__":
    main()
