"""Benchmark: what Ray Tune, Optuna and MLflow cost around the training itself.

Runs one real search (CPU by default) and reports

    overhead ratio = search wall time / sum of the trials' training time

where a trial's training time is the time spent inside ``trainer.train`` (data
load, pretraining epochs, kNN monitor, linear probe) as measured in the trial.
With one trial at a time the ideal ratio is 1.0 and ``ratio - 1`` is the
orchestration cost (Ray start, actor start-up, reports and checkpoints, Optuna,
MLflow logging, promotion). The tune-loop ratio leaves Ray's start-up and the
promotion out.

    python bench/bench_search.py                      # tiny budget, 6 trials, CPU
    python bench/bench_search.py --budget smoke --data ../shared/data/cifar10-jpeg.tar.gz

Results go to stdout as a table and one JSON line (``--json PATH`` also writes it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import emit  # noqa: E402
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="mobilenetv3_small_050")
    ap.add_argument("--budget", default="tiny")
    ap.add_argument("--num-samples", type=int, default=6)
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None)
    ap.add_argument("--dataset", default=None, help="default: cifar10 with --data, else synthetic")
    ap.add_argument("--max-concurrent", type=int, default=1)
    ap.add_argument("--cpus-per-trial", type=float, default=1.0)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the result JSON here")
    args = ap.parse_args(argv)

    home = tempfile.mkdtemp(prefix="rs-bench-")
    os.environ["RECIPE_SEARCH_HOME"] = home
    # the decoded-data cache stays the user's ($RECIPE_SEARCH_CACHE or ~/.cache/recipe-search):
    # decoding the tarball once is not what this benchmark measures
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    from recipe_search.search import SearchSettings, prepare_data, run_search
    from recipe_search import plan

    dataset = args.dataset or ("cifar10" if args.data else "synthetic")
    settings = SearchSettings(backbone=args.backbone, budget=args.budget, num_samples=args.num_samples,
                              max_epochs=args.max_epochs, data=args.data, dataset=dataset,
                              max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
                              num_cpus=args.num_cpus, seed=0)
    prepare_data(plan(settings))  # warm the decoded-data cache outside the measurement
    t0 = time.monotonic()
    outcome = run_search(settings, progress=False)
    wall = time.monotonic() - t0
    statuses: dict[str, int] = {}
    for t in outcome.trials:
        statuses[t.status] = statuses.get(t.status, 0) + 1
    result = {
        "backbone": args.backbone, "budget": args.budget, "trials": len(outcome.trials),
        "statuses": statuses, "max_concurrent": args.max_concurrent, "cpus_per_trial": args.cpus_per_trial,
        "wall_s": round(wall, 2), "tune_loop_s": round(outcome.tune_s, 2),
        "trials_train_s": round(outcome.trials_train_s, 2),
        "overhead_ratio": round(wall / outcome.trials_train_s, 3) if outcome.trials_train_s else None,
        "tune_loop_ratio": round(outcome.tune_s / outcome.trials_train_s, 3) if outcome.trials_train_s else None,
        "overhead_per_trial_s": round((wall * args.max_concurrent - outcome.trials_train_s)
                                      / max(1, len(outcome.trials)), 2),
        "best_search_val_knn_top1": outcome.best.objective if outcome.best else None,
        "verdict": outcome.verdict.verdict if outcome.verdict else None,
        "search_stage_s": round(outcome.search_s, 2), "confirm_stage_s": round(outcome.confirm_s, 2),
        "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(f"search of {result['trials']} trials ({statuses}), {args.max_concurrent} at a time")
    print(f"  wall time            {result['wall_s']:8.1f} s   (tune loop {result['tune_loop_s']:.1f} s)")
    print(f"  trials' training     {result['trials_train_s']:8.1f} s")
    print(f"  overhead ratio       {result['overhead_ratio']}   (tune loop only: {result['tune_loop_ratio']})")
    print(f"  overhead per trial   {result['overhead_per_trial_s']:8.2f} s")
    return emit(result, args.json)


if __name__ == "__main__":
    main()
