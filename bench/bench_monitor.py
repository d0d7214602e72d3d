"""Benchmark: a confirmation run with the kNN monitor every epoch against after the last epoch only.

A confirmation run (select or report phase) uses only its final val figure, so since this change it
runs the monitor once (``trainer.train(..., monitor="last")``, recipe_search/tune/trial.py). This
measures what that saves on the machine, side by side: each round trains the same recipe and seed
twice at once, one process per monitor setting, one torch thread each (two trials on two cores),
as a report-phase run (the test split read at the end); the rounds alternate which setting starts
first. It prints both wall times, their ratio per round, and checks that the final metrics agree.

    .venv/bin/python bench/bench_monitor.py --rounds 2 --json docs/results/speed/monitor-last.json

The recipe is a baseline (default ``sinfonce-light``) composed as a search composes it at ``--budget``
(default ``cpu``); the data the shared CIFAR-10 beside the repository.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def _compose(args) -> tuple[dict, dict]:
    from recipe_search.baselines import baselines_for
    from recipe_search.plan import SearchSettings, plan, prepare_data
    from recipe_search.tune.trial import TrialContext

    p = plan(SearchSettings(backbone=args.backbone, data=str(args.data), budget=args.budget, seed=args.seed))
    prepare_data(p)  # decoded once into the cache, before the timed runs
    ctx = TrialContext(backbone=args.backbone, space=p.space, budget_fixed=dict(p.budget.fixed),
                       image_size=p.budget.image_size, max_epochs=p.max_epochs, seed=args.seed, data=p.data,
                       baselines=baselines_for(p.space))
    recipe = ctx.recipe_for({"baseline": args.baseline})[0].replace(seed=args.seed + 1)
    import dataclasses

    return recipe.to_dict(), dataclasses.asdict(p.data)


def _run(recipe: dict, data: dict, data_seed: int, monitor: str, out: str, queue) -> None:
    import torch

    torch.set_num_threads(1)
    from trainer import Recipe, train
    from trainer.data import DataSpec, load_proxy

    r = Recipe.from_dict(recipe)
    proxy = load_proxy(DataSpec(**data), r.image_size, data_seed)
    t0 = time.perf_counter()
    res = train(r, proxy, out_dir=out, device="cpu", resume=False, monitor=monitor)
    queue.put((monitor, time.perf_counter() - t0, res.metrics))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="mobilenetv3_small_100")
    ap.add_argument("--budget", default="cpu")
    ap.add_argument("--baseline", default="sinfonce-light")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        ap.error(f"--data {args.data} does not exist")
    recipe, data = _compose(args)
    ctx = mp.get_context("spawn")
    rounds = []
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            order = ("every", "last") if i % 2 == 0 else ("last", "every")
            q = ctx.Queue()
            procs = [ctx.Process(target=_run, args=(recipe, data, args.seed, m, os.path.join(tmp, f"{i}-{m}"), q))
                     for m in order]
            for p in procs:
                p.start()
            got = {m: (s, metrics) for m, s, metrics in (q.get() for _ in procs)}
            for p in procs:
                p.join()
            same = all(got["every"][1][k] == got["last"][1][k] for k in
                       ("val_knn_top1", "test_probe_top1", "test_knn_top1", "loss"))
            row = {"round": i, "every_s": got["every"][0], "last_s": got["last"][0],
                   "ratio": got["every"][0] / got["last"][0], "same_metrics": same,
                   "test_probe_top1": got["last"][1]["test_probe_top1"]}
            rounds.append(row)
            print(f"round {i}: monitor every epoch {row['every_s']:.1f} s, last epoch only {row['last_s']:.1f} s, "
                  f"ratio {row['ratio']:.3f}, same final metrics: {same}", flush=True)
    out = {"bench": "monitor", "backbone": args.backbone, "budget": args.budget, "baseline": args.baseline,
           "command": "python bench/bench_monitor.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_avg_end": list(os.getloadavg()),
           "rounds": rounds, "median_ratio": statistics.median(r["ratio"] for r in rounds)}
    print(f"every / last: median ratio {out['median_ratio']:.3f} over {len(rounds)} rounds "
          f"(load at the end {out['load_avg_end'][0]:.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
