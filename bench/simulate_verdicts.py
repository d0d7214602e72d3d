"""Verdicts simulated from the measured score distributions: does the verdict cry wolf, is the
reported lift biased, and what lift can it detect? Old design against new, side by side.

The score model is fitted to ``docs/results/seed_noise.jsonl`` (5 seeds each of the floor,
``mocov2`` and ``sinfonce-light`` at the ``cpu`` budget): per recipe and seed, (val kNN, test
probe) is bivariate normal with the recipe's means and standard deviations and the within-recipe
val/test correlation pooled over the recipes; the floor is normal with its own.

* **A/A**: the searched finalist *is* ``sinfonce-light`` under another name (true lift 0), beside
  ``mocov2`` and the floor. The rate of ``better_than_baselines`` must be at most 5 %.
* **Bias**: the mean reported lift of a searched winner over the (identical) baseline. The old
  design chooses the winner on the val scores of the very runs whose test scores it reports, so
  the report leans up with the val/test correlation; the new one reports on fresh seeds.
* **Power**: the rate of ``better_than_baselines`` when the finalist is truly better by 3 or 6
  points, and the seeds the new design used.

The old design: 3 confirmation seeds for every recipe, winner on their mean val, paired t 95 %
intervals over the same seeds against the baseline with the higher test mean and the floor,
no correction. The new design: ``verdict.choose`` on 3 select seeds (val only), then
``verdict.decide`` on fresh report seeds at looks 3, 5, 8 (the ``cpu`` budget), with the test
images' noise for the whole CIFAR-10 test split (10,000 images).

    python bench/simulate_verdicts.py [--sims 2000] [--out docs/results/verdict_simulation.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipe_search.verdict.stats import paired_interval  # noqa: E402
from recipe_search.verdict import BETTER, RecipeRuns, choose, decide  # noqa: E402

LOOKS = (3, 5, 8)
SELECT_SEEDS = 3
N_TEST_IMAGES = 10_000


def fit(path: Path) -> dict:
    """Per-recipe means and stds of (val kNN, test probe) and the pooled within-recipe correlation."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r.get("status") == "completed":
            m = r["metrics"]
            by.setdefault(r["name"], []).append((m["val_knn_top1"], m["test_probe_top1"]))
    model, zv, zt = {}, [], []
    for name, pairs in by.items():
        a = np.array(pairs)
        mu, sd = a.mean(axis=0), a.std(axis=0, ddof=1)
        model[name] = {"mean": mu.tolist(), "std": sd.tolist(), "n": len(a)}
        zv += ((a[:, 0] - mu[0]) / sd[0]).tolist()
        zt += ((a[:, 1] - mu[1]) / sd[1]).tolist()
    rho = float(np.corrcoef(zv, zt)[0, 1])
    return {"recipes": model, "rho": rho}


def draw(rng, recipe: dict, rho: float, n: int, shift: float = 0.0) -> np.ndarray:
    (mv, mt), (sv, st) = recipe["mean"], recipe["std"]
    cov = [[sv * sv, rho * sv * st], [rho * sv * st, st * st]]
    out = rng.multivariate_normal([mv + shift, mt + shift], cov, size=n)
    return out


def old_design(rng, fitted: dict, lift: float) -> tuple[bool, float | None, int, int]:
    rec, rho = fitted["recipes"], fitted["rho"]
    seeds = 3
    runs = {"t1": draw(rng, rec["sinfonce-light"], rho, seeds, lift),
            "sinfonce-light": draw(rng, rec["sinfonce-light"], rho, seeds),
            "mocov2": draw(rng, rec["mocov2"], rho, seeds)}
    floor = rng.normal(rec["floor"]["mean"][1], rec["floor"]["std"][1], seeds)
    winner = max(runs, key=lambda k: runs[k][:, 0].mean())
    if winner != "t1":
        return False, None, 3 * seeds, seeds
    best = max(("sinfonce-light", "mocov2"), key=lambda k: runs[k][:, 1].mean())
    wb = paired_interval(runs["t1"][:, 1], runs[best][:, 1])
    wf = paired_interval(runs["t1"][:, 1], floor)
    reported = float(runs["t1"][:, 1].mean() - runs["sinfonce-light"][:, 1].mean())
    return wb.low > 0 and wf.low > 0, reported, 3 * seeds, seeds


def new_design(rng, fitted: dict, lift: float) -> tuple[bool, float | None, int, int]:
    rec, rho = fitted["recipes"], fitted["rho"]
    sel_seeds = list(range(1, SELECT_SEEDS + 1))
    names = {"t1": ("finalist", rec["sinfonce-light"], lift), "sinfonce-light": ("baseline", rec["sinfonce-light"], 0.0),
             "mocov2": ("baseline", rec["mocov2"], 0.0)}
    select = [RecipeRuns(n, role, {}, {s: {"val_knn_top1": float(v)} for s, v in
                                        zip(sel_seeds, draw(rng, r, rho, SELECT_SEEDS, shift)[:, 0])})
              for n, (role, r, shift) in names.items()]
    sel = choose(select, sel_seeds)
    rseeds = list(range(10, 10 + LOOKS[-1]))
    report = []
    for n in sel.report_names:
        role, r, shift = names[n]
        report.append(RecipeRuns(n, role, {}, {s: {"test_probe_top1": float(t)} for s, t in
                                               zip(rseeds, draw(rng, r, rho, LOOKS[-1], shift)[:, 1])}))
    floor = {s: {"test_probe_top1": float(x)} for s, x in
             zip(rseeds, rng.normal(rec["floor"]["mean"][1], rec["floor"]["std"][1], LOOKS[-1]))}
    v = decide(sel, report, floor, rseeds, LOOKS, n_images=N_TEST_IMAGES)
    used = 3 * SELECT_SEEDS + len(sel.report_names) * len(v.seeds)
    if sel.winner != "t1":
        return False, None, used, len(v.seeds)
    return v.verdict == BETTER, v.lift["best_baseline"].mean if "best_baseline" in v.lift else None, used, len(v.seeds)


def run(fitted: dict, sims: int, seed: int) -> dict:
    out = {}
    for lift in (0.0, 0.03, 0.06):
        for name, fn in (("old", old_design), ("new", new_design)):
            rng = np.random.default_rng(seed)
            better, reported, runs, stops = 0, [], [], []
            for _ in range(sims):
                b, rep, used, seeds = fn(rng, fitted, lift)
                better += b
                runs.append(used)
                stops.append(seeds)
                if rep is not None:
                    reported.append(rep)
            rate = better / sims
            se = math.sqrt(rate * (1 - rate) / sims)
            out[f"{name}@{lift:+.2f}"] = {
                "design": name, "true_lift": lift, "sims": sims, "better_rate": rate,
                "better_rate_ci": [max(0.0, rate - 1.96 * se), rate + 1.96 * se],
                "winner_is_finalist": len(reported) / sims,
                "mean_reported_lift": float(np.mean(reported)) if reported else None,
                "reported_lift_se": float(np.std(reported, ddof=1) / math.sqrt(len(reported))) if len(reported) > 1
                else None, "mean_runs": float(np.mean(runs)),
                # the share of verdicts decided at each look (the report seeds they used): the plan's estimate
                # of a confirmation's cost (recipe_search/search/estimate.py, REPORT_STOP_SHARE) is read from these
                "report_seeds": float(np.mean(stops)),
                "stop_share": {str(k): float(np.mean(np.array(stops) == k)) for k in sorted(set(stops))}}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sims", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=ROOT / "docs/results/seed_noise.jsonl")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/verdict_simulation.json")
    a = ap.parse_args(argv)
    if a.sims < 1:
        ap.error("--sims must be >= 1")
    t0 = time.perf_counter()
    fitted = fit(a.results)
    res = run(fitted, a.sims, a.seed)
    doc = {"command": f"python bench/simulate_verdicts.py --sims {a.sims} --seed {a.seed}", "model": fitted,
           "looks": list(LOOKS), "select_seeds": SELECT_SEEDS, "test_images": N_TEST_IMAGES, "results": res,
           "wall_s": round(time.perf_counter() - t0, 1)}
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"model: val/test correlation within a recipe {fitted['rho']:+.2f}")
    print(f"{'design':8} {'true lift':>9} {'better rate [95% CI]':>24} {'mean reported lift':>19} {'runs':>6}"
          f" {'report seeds':>12}  stopped at look (seeds: share)")
    for r in res.values():
        lo, hi = r["better_rate_ci"]
        rep = "-" if r["mean_reported_lift"] is None else f"{100 * r['mean_reported_lift']:+.2f}"
        print(f"{r['design']:8} {100 * r['true_lift']:+9.1f} {100 * r['better_rate']:7.2f}% "
              f"[{100 * lo:5.2f}, {100 * hi:5.2f}]% {rep:>19} {r['mean_runs']:6.1f} {r['report_seeds']:12.2f}  "
              + ", ".join(f"{k}: {v:.2f}" for k, v in r["stop_share"].items()))
    print(f"wrote {a.out} in {doc['wall_s']}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
