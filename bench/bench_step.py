"""A faster CPU training step, same results? Candidates side by side, one thread, A/B alternating.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_step.py --data ../shared/data/cifar10-jpeg.tar.gz

The step is the trainer's :meth:`trainer.TrainingRun.step` on the ``cpu``-budget trial of
bench/profile_trial.py (``sinfonce-light``, ``mobilenetv3_small_100``, 32 px, batch 64, queue 1024,
symmetric loss), one torch thread as a search's CPU trial. Each variant gets its own
``TrainingRun`` built from the same seed; every repeat times ``--steps`` steps of each variant in
turn (the order rotates each repeat), so machine noise hits all alike; the medians of the
per-step times are compared as ratios to the unchanged step (``> 1``: faster).

Variants (in-process):

* ``baseline``: the step as the trainer ran it on the CPU before channels_last (NCHW, contiguous).
* ``channels_last``: model and both views in ``torch.channels_last``: the trainer's step now (kept:
  ``trainer.device.CHANNELS_LAST``).
* ``key_inference_mode``: the key encoder under ``torch.inference_mode()`` instead of ``no_grad``
  (its output cloned back to a normal tensor for the loss).
* ``no_augmentation``: the views replaced by views computed once beforehand: an upper bound of
  what any cheaper augmentation could save (it changes what is learned; only a bound).

Variant in separate processes (``set_num_interop_threads`` can be called once per process, before
any parallel work): ``interop_1`` vs the default interop pool, alternating processes.

For each in-process variant the losses of its first steps are compared with the baseline's
(same seed): ``max_loss_diff`` 0.0 means bit-identical. Raw output: ``--json``.

``--trials 1 2 3`` instead trains the whole trial at each of those recipe seeds in both layouts
(NCHW and channels_last, ``--jobs`` at a time, the subset fixed at data seed 0) and prints the
final metrics paired by seed: does the kept speed-up learn the same? (docs/speed.md)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

from bench.profile_trial import trial_recipe  # noqa: E402


def load(args):
    from trainer import load_proxy

    recipe, budget = trial_recipe(args.backbone, args.budget, args.seed)
    spec = budget.data_spec("cifar10" if args.data else "synthetic", args.data)
    return recipe, load_proxy(spec, recipe.image_size, args.seed)


class _Fixed:
    """Views computed once (the ``no_augmentation`` bound)."""

    def __init__(self, views):
        self._views = itertools.cycle(views)

    def __call__(self, x, generator):
        return next(self._views)


def make_run(variant: str, recipe, proxy):
    """A TrainingRun with ``variant`` applied (same seed for every variant). Every variant but
    ``channels_last`` runs in the contiguous (NCHW) format, the trainer's CPU step before channels_last."""
    from trainer import TrainingRun
    from trainer.device import CHANNELS_LAST

    saved = CHANNELS_LAST["cpu"]
    CHANNELS_LAST["cpu"] = variant == "channels_last"
    try:
        run = TrainingRun(recipe, proxy, torch.device("cpu"))  # reads the format once, here
    finally:
        CHANNELS_LAST["cpu"] = saved
    if variant == "channels_last":
        assert run.channels_last
    elif variant == "key_inference_mode":
        model, key = run.model, run.model.key

        def key_inference(x, generator=None):
            with torch.inference_mode():
                k = key(x, generator)
            return k.clone()

        model.key = key_inference
    elif variant == "no_augmentation":
        x = run.train_x[:recipe.batch_size]
        g = torch.Generator().manual_seed(123)
        run.views = _Fixed([run.views(x, g) for _ in range(4)])
    elif variant != "baseline":
        raise SystemExit(f"unknown variant {variant!r}")
    return run


def batches(run, n: int):
    b = run.recipe.batch_size
    perm = torch.randperm(run.train_x.shape[0], generator=torch.Generator().manual_seed(7))
    return [run.train_x[perm[(i * b) % (len(perm) - b):][:b]] for i in range(n)]


def time_steps(run, xs, start: int) -> list[float]:
    out = []
    for i, x in enumerate(xs):
        t0 = time.perf_counter()
        run.step(x, start + i)
        out.append(time.perf_counter() - t0)
    return out


def in_process(args, recipe, proxy) -> dict:
    variants = ["baseline", *args.variants]
    runs = {v: make_run(v, recipe, proxy) for v in variants}
    xs = batches(runs["baseline"], args.steps)
    # same results: the first steps' losses of each variant against the baseline's (fresh runs)
    check = {}
    ref_run = make_run("baseline", recipe, proxy)
    ref = [ref_run.step(x, i).item() for i, x in enumerate(xs[:args.check_steps])]
    for v in args.variants:
        r = make_run(v, recipe, proxy)
        got = [r.step(x, i).item() for i, x in enumerate(xs[:args.check_steps])]
        check[v] = {"losses": got, "max_loss_diff": max(abs(a - b) for a, b in zip(got, ref))}
    for run in runs.values():  # warm-up
        time_steps(run, xs[:2], 0)
    times = {v: [] for v in variants}
    for rep in range(args.repeats):
        order = variants[rep % len(variants):] + variants[:rep % len(variants)]
        for v in order:
            times[v] += time_steps(runs[v], xs, 2 + rep * args.steps)
    base = statistics.median(times["baseline"])
    rows = {}
    for v in variants:
        med = statistics.median(times[v])
        rows[v] = {"median_step_ms": round(1e3 * med, 2), "speedup_vs_baseline": round(base / med, 3),
                   "images_per_sec": round(recipe.batch_size / med, 1), "steps_timed": len(times[v]),
                   **({k: check[v][k] for k in ("max_loss_diff",)} if v in check else {})}
    return {"baseline_losses": ref, "variants": rows}


def child(args, recipe, proxy) -> None:
    """One process of the interop comparison: prints its per-step times as JSON."""
    run = make_run("baseline", recipe, proxy)  # NCHW, as the in-process baseline
    xs = batches(run, args.steps)
    time_steps(run, xs[:2], 0)
    t = time_steps(run, xs, 2)
    print(json.dumps({"interop": torch.get_num_interop_threads(), "times": t}))


def interop(args) -> dict:
    base_cmd = [sys.executable, __file__, "--child", "--steps", str(args.steps), "--seed", str(args.seed)]
    if args.data:
        base_cmd += ["--data", args.data]
    times = {"default": [], "interop_1": []}
    default_n = None
    for rep in range(args.interop_repeats):
        pairs = [("default", []), ("interop_1", ["--interop", "1"])]
        for name, extra in (pairs if rep % 2 == 0 else pairs[::-1]):
            p = subprocess.run(base_cmd + extra, capture_output=True, text=True, check=True)
            res = json.loads(p.stdout.strip().splitlines()[-1])
            times[name] += res["times"]
            if name == "default":
                default_n = res["interop"]
    d, o = statistics.median(times["default"]), statistics.median(times["interop_1"])
    return {"default_interop_threads": default_n, "default_median_step_ms": round(1e3 * d, 2),
            "interop_1_median_step_ms": round(1e3 * o, 2), "speedup_vs_baseline": round(d / o, 3),
            "processes_each": args.interop_repeats, "steps_timed_each": len(times["default"])}


def _trial(job: tuple) -> dict:
    """One full ``train()`` of the trial recipe at ``seed`` with channels_last on or off, on 1 thread."""
    data, backbone, budget, seed, cl = job
    torch.set_num_threads(1)
    from trainer import load_proxy, train
    from trainer.device import CHANNELS_LAST

    CHANNELS_LAST["cpu"] = cl
    recipe, b = trial_recipe(backbone, budget, 0)
    proxy = load_proxy(b.data_spec("cifar10" if data else "synthetic", data), recipe.image_size, 0)
    t0 = time.perf_counter()
    res = train(recipe.replace(seed=seed), proxy, device="cpu")
    keys = ("val_knn_top1", "val_probe_top1", "test_probe_top1", "test_knn_top1", "loss", "train_time_s",
            "knn_time_s", "probe_time_s")
    return {"seed": seed, "channels_last": cl, "status": res.status, "wall_s": round(time.perf_counter() - t0, 2),
            **{k: res.metrics.get(k) for k in keys}, "val_knn_curve": [h["val_knn_top1"] for h in res.history]}


def trials(args) -> dict:
    """Full trials, NCHW vs channels_last, paired by seed (the subset fixed by data seed 0)."""
    import multiprocessing as mp

    jobs = [(args.data, args.backbone, args.budget, s, cl) for s in args.trials for cl in (False, True)]
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        rows = pool.map(_trial, jobs, chunksize=1)
    out = {"rows": rows, "paired": {}}
    for key in ("val_knn_top1", "val_probe_top1", "test_probe_top1", "test_knn_top1", "wall_s", "train_time_s"):
        a = [r[key] for r in rows if not r["channels_last"]]
        b = [r[key] for r in rows if r["channels_last"]]
        diffs = [y - x for x, y in zip(a, b)]
        out["paired"][key] = {"nchw_mean": statistics.mean(a), "nchw_std": statistics.stdev(a),
                              "channels_last_mean": statistics.mean(b), "channels_last_std": statistics.stdev(b),
                              "mean_diff": statistics.mean(diffs), "diffs": diffs}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None)
    ap.add_argument("--backbone", default="mobilenetv3_small_100")
    ap.add_argument("--budget", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=4, help="steps per variant per repeat")
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--check-steps", type=int, default=3)
    ap.add_argument("--variants", nargs="*", default=["channels_last", "key_inference_mode", "no_augmentation"])
    ap.add_argument("--interop-repeats", type=int, default=3, help="processes per arm (0: skip)")
    ap.add_argument("--trials", type=int, nargs="*", default=None, metavar="SEED",
                    help="instead: full trials at these seeds, NCHW vs channels_last (same results?)")
    ap.add_argument("--jobs", type=int, default=2, help="with --trials: trainings at a time")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--interop", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.interop:
        torch.set_num_interop_threads(args.interop)
    torch.set_num_threads(1)
    recipe, proxy = load(args)
    if args.child:
        child(args, recipe, proxy)
        return {}
    if args.trials:
        t0 = time.perf_counter()
        res = {"command": "OMP_NUM_THREADS=1 .venv/bin/python bench/bench_step.py " + " ".join(argv or sys.argv[1:]),
               "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
               "recipe": recipe.to_dict(), **trials(args)}
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"{'seed':>4} {'format':14} {'val kNN':>8} {'val probe':>9} {'test probe':>10} {'test kNN':>8} "
              f"{'train s':>8} {'wall s':>7}")
        for r in res["rows"]:
            print(f"{r['seed']:>4} {'channels_last' if r['channels_last'] else 'NCHW':14} {r['val_knn_top1']:>8.3f} "
                  f"{r['val_probe_top1']:>9.3f} {r['test_probe_top1']:>10.3f} {r['test_knn_top1']:>8.3f} "
                  f"{r['train_time_s']:>8.1f} {r['wall_s']:>7.1f}")
        for key, p in res["paired"].items():
            print(f"{key:16} NCHW {p['nchw_mean']:.3f} ± {p['nchw_std']:.3f}   channels_last "
                  f"{p['channels_last_mean']:.3f} ± {p['channels_last_std']:.3f}   paired diff {p['mean_diff']:+.3f}")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        return res
    t0 = time.perf_counter()
    res = {"command": "OMP_NUM_THREADS=1 .venv/bin/python bench/bench_step.py " + " ".join(argv or sys.argv[1:]),
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "load_avg_1m_start": round(os.getloadavg()[0], 2), "recipe": recipe.to_dict(),
           "steps_per_repeat": args.steps, "repeats": args.repeats, **in_process(args, recipe, proxy)}
    if args.interop_repeats:
        res["variants"]["interop_1"] = interop(args)
    res["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"step of {recipe.backbone}, {recipe.image_size} px, batch {recipe.batch_size}, 1 thread "
          f"(load {res['load_avg_1m_start']} -> {res['load_avg_1m_end']})")
    print(f"{'variant':22} {'median ms':>10} {'speed-up':>9} {'max |loss diff|':>16}")
    for v, r in res["variants"].items():
        ms = r.get("median_step_ms", r.get("interop_1_median_step_ms"))
        diff = r.get("max_loss_diff", "-")
        print(f"{v:22} {ms:>10.1f} {r['speedup_vs_baseline']:>9.3f} {diff!s:>16}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
