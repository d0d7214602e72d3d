"""The proxy-fidelity study and its section of docs/results.md (``python bench/bench_quality.py fidelity``): does a
short run's val kNN rank recipes as their long runs' test probe does, with the shared seed, with
independent long seeds, at ASHA's first rung, and with more short seeds in place of a longer run
(seeds as a fidelity, at equal trial-epochs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.quality_format import _corr, _pct, _wall
from bench.quality_plots import fidelity_plot
from bench.quality_stats import fisher_z, rank_correlations, spearman_difference


# -- the study -------------------------------------------------------------------------------------

def sampled_points(setup, n: int) -> list[dict]:
    """``n`` points drawn from the space by Optuna's RandomSampler (seeded: the same every run)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=setup.args.seed))
    space = setup.plan.space.optuna_space()
    return [study.ask(space).params for _ in range(n)]


def fidelity(setup, run_jobs) -> None:
    """Run the study (``bench_quality.py fidelity``): ``run_jobs`` is ``bench_quality.run_jobs``."""
    baselines = setup.ctx.baselines
    configs = [(b.name, "baseline", {"baseline": b.name}) for b in baselines]
    configs += [(f"random-{i:02d}", "sampled", p)
                for i, p in enumerate(sampled_points(setup, setup.args.recipes - len(baselines)))]
    short, long_ = setup.plan.max_epochs, setup.plan.max_epochs * setup.args.long_factor
    seed = setup.args.seed
    jobs = [setup.job("fidelity", f"{name}-e{short}", name, role, setup.recipe(cfg, seed, short), length="short",
                      point=cfg, rung=setup.budget.grace_period) for name, role, cfg in configs]
    jobs += [setup.job("fidelity", f"{name}-e{long_}", name, role, setup.recipe(cfg, seed, long_), length="long",
                       point=cfg, rung=setup.budget.grace_period) for name, role, cfg in configs]
    # long runs on seeds the short run did not use: the target of the independent-seed correlation
    jobs += [setup.job("fidelity", f"{name}-e{long_}-s{ls}", name, role, setup.recipe(cfg, ls, long_), length="long",
                       point=cfg, rung=setup.budget.grace_period)
             for ls in setup.args.long_seeds if ls != seed for name, role, cfg in configs]
    # seeds as a fidelity: more short runs on seeds no long run used, so that k short seeds (k x the budget's
    # epochs) can be set against one long seed (the same trial-epochs) as predictors of the long seeds' mean
    jobs += [setup.job("fidelity", f"{name}-e{short}-s{ss}", name, role, setup.recipe(cfg, ss, short), length="short",
                       point=cfg, rung=setup.budget.grace_period)
             for ss in setup.args.short_seeds if ss != seed for name, role, cfg in configs]
    run_jobs(setup, "fidelity", jobs)  # all short runs first: the long ones are 3x the cost


# -- the section -----------------------------------------------------------------------------------

def _is_extra_short(r: dict) -> bool:
    """A short run on an extra seed (``--short-seeds``; key ``<name>-e<epochs>-s<seed>``)."""
    return r.get("length") == "short" and r["key"] != f"{r['name']}-e{r['epochs']}"


def fidelity_section(rows: list[dict], out: Path) -> list[str]:
    rows = [r for r in rows if r["status"] == "completed"]
    extra = [r for r in rows if _is_extra_short(r)]
    rows = [r for r in rows if not _is_extra_short(r)]
    short = {r["name"]: r for r in rows if r.get("length") == "short"}
    # the long run on the short run's seed (the original design), and those on other seeds (independent)
    long_ = {r["name"]: r for r in rows if r.get("length") == "long"
             and (r["name"] not in short or r.get("seed") == short[r["name"]].get("seed"))}
    indep: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("length") == "long" and r["name"] in short and r.get("seed") != short[r["name"]].get("seed"):
            indep.setdefault(r["name"], []).append(r)
    both = sorted(set(short) & set(long_))
    lines = [f"{len(short)} short and {len(long_)} long runs completed ({_wall(rows)})."]
    if not short:
        return lines
    e_short = short[next(iter(short))]["epochs"]
    e_long = long_[both[0]]["epochs"] if both else 3 * e_short
    rung = short[next(iter(short))].get("rung", 2)  # ASHA's first rung (the budget's grace_period)
    lines += ["", f"| recipe | short ({e_short} ep) val kNN | at epoch {rung} (ASHA rung) | long ({e_long} ep) "
                  "val kNN | long test probe | long test kNN |", "|---|---|---|---|---|---|"]

    def rung_val(r):
        h = [x for x in r["history"] if x["epoch"] == rung]
        return h[0]["val_knn_top1"] if h else float("nan")

    for n in sorted(short, key=lambda n: -short[n]["metrics"]["val_knn_top1"]):
        lg = long_.get(n, {}).get("metrics", {})
        lines.append(f"| {n} | {_pct(short[n]['metrics']['val_knn_top1'])} | {_pct(rung_val(short[n]))} | "
                     f"{_pct(lg.get('val_knn_top1', float('nan')))} | {_pct(lg.get('test_probe_top1', float('nan')))} | "
                     f"{_pct(lg.get('test_knn_top1', float('nan')))} |")
    if len(both) < 4:
        return lines + ["", f"Rank correlations need at least 4 recipes with both runs; {len(both)} so far."]
    sv = [short[n]["metrics"]["val_knn_top1"] for n in both]
    rv = [rung_val(short[n]) for n in both]
    main = rank_correlations(sv, [long_[n]['metrics']['test_probe_top1'] for n in both])
    lo, hi = fisher_z(main["spearman"], len(both))
    shared = all(short[n].get("seed") == long_[n].get("seed") for n in both)
    lines += ["", f"Rank correlation over the {len(both)} recipes with both runs (95% bootstrap intervals):", "",
              f"* short val kNN vs long **test probe**: {_corr(main)}; Fisher-z 95% interval of the Spearman "
              f"[{lo:+.2f}, {hi:+.2f}]"
              + (" (the short and the long run of a recipe share their seed, the same initialisation and "
                 "augmentation stream, which can inflate the correlation"
                 + ("; the independent seeds below remove that)" if indep else "; independent seeds are the study's next run)")
                 if shared else ""),
              f"* short val kNN vs long **test kNN**: {_corr(rank_correlations(sv, [long_[n]['metrics']['test_knn_top1'] for n in both]))}",
              f"* val kNN at ASHA's first rung (epoch {rung}) vs long test probe: "
              f"{_corr(rank_correlations(rv, [long_[n]['metrics']['test_probe_top1'] for n in both]))}",
              f"* val kNN at the rung vs long test kNN: {_corr(rank_correlations(rv, [long_[n]['metrics']['test_knn_top1'] for n in both]))}"]
    lines += _independent(short, indep, rung_val)
    lines += _seeds_as_fidelity(short, long_, indep, extra)
    lines += ["", *_asha_keeps(both, short, long_, rung_val)]
    return lines + ["", fidelity_plot(both, sv, rv, long_, (e_short, rung, e_long), out)]


def _independent(short: dict, indep: dict, rung_val) -> list[str]:
    """The correlation against long runs on seeds the short run did not use (mean over them)."""
    names = sorted(n for n in short if indep.get(n))
    if not names:
        return []
    seeds = sorted({r["seed"] for n in names for r in indep[n]})
    per = {n: len(indep[n]) for n in names}
    if len(names) < 4:
        return ["", f"Independent seeds: {len(names)} recipes have long runs on other seeds so far (need 4)."]
    target = [float(np.mean([r["metrics"]["test_probe_top1"] for r in indep[n]])) for n in names]
    sv = [short[n]["metrics"]["val_knn_top1"] for n in names]
    main = rank_correlations(sv, target)
    lo, hi = fisher_z(main["spearman"], len(names))
    rung = rank_correlations([rung_val(short[n]) for n in names], target)
    agree = []
    if len(seeds) >= 2 and all(len(indep[n]) >= 2 for n in names):  # the long target against itself
        by_seed = {sd: {r["name"]: r["metrics"]["test_probe_top1"] for n in names for r in indep[n] if r["seed"] == sd}
                   for sd in seeds[:2]}
        a, b = ([by_seed[sd][n] for n in names] for sd in seeds[:2])
        agree = [f"* long test probe, seed {seeds[0]} vs seed {seeds[1]} (how well the long target agrees with "
                 f"itself: the ceiling of any predictor of one long run): {_corr(rank_correlations(a, b))}"]
    best = sorted(names, key=lambda n: -target[names.index(n)])
    k = max(1, round(len(names) / 3))
    at_rung = sorted(names, key=lambda n: -rung_val(short[n]))
    keeps = [f"* ASHA's first cut (top {k} of {len(names)} at the rung) keeps {len(set(best[:k]) & set(at_rung[:k]))} "
             f"of the {k} best by this target ({', '.join(best[:k])})"]
    return ["", f"**With independent seeds** (the long runs on seeds {', '.join(map(str, seeds))}, none of them the "
                f"short run's; target = their mean test probe; {min(per.values())}-{max(per.values())} long seeds per "
                f"recipe, {len(names)} recipes):", "",
            f"* short val kNN vs long test probe: {_corr(main)}; Fisher-z 95% interval of the Spearman "
            f"[{lo:+.2f}, {hi:+.2f}]",
            f"* val kNN at ASHA's first rung vs long test probe: {_corr(rung)}", *agree, *keeps]


def _asha_keeps(names: list[str], short: dict, long_: dict, rung_val) -> list[str]:
    """Would ASHA's first cut keep the recipes that are best after long training? Its rung
    promotes the top 1/reduction_factor by val kNN; compare that set with the top recipes by
    the long runs' test probe (and the same cut made at the short run's end)."""
    from recipe_search.budget import BUDGETS

    budget = short[names[0]].get("budget", "cpu")
    rf = BUDGETS[budget].reduction_factor if budget in BUDGETS else 3
    k = max(1, round(len(names) / rf))
    best = sorted(names, key=lambda n: -long_[n]["metrics"]["test_probe_top1"])
    at_rung = sorted(names, key=lambda n: -rung_val(short[n]))
    at_end = sorted(names, key=lambda n: -short[n]["metrics"]["val_knn_top1"])
    top = set(best[:k])
    return [f"ASHA's first cut (reduction factor {rf}: the top {k} of {len(names)} by val kNN at the rung go on) "
            f"keeps **{len(top & set(at_rung[:k]))} of the {k}** recipes that are best by long-run test probe "
            f"({', '.join(best[:k])}; a random cut keeps {k * k / len(names):.1f} on average); the same cut on the short runs' final val kNN keeps "
            f"{len(top & set(at_end[:k]))} of {k}. The long-run best, `{best[0]}`, ranks "
            f"{at_rung.index(best[0]) + 1} of {len(names)} at the rung and {at_end.index(best[0]) + 1} at the "
            "short run's end (baselines are never stopped by the search's ASHA, `asha.BaselineSafeASHA`)."]


def _seeds_as_fidelity(short: dict, long_: dict, indep: dict, extra: list[dict]) -> list[str]:
    """k short seeds against one long seed at equal trial-epochs (k = long / short epochs), as
    predictors of the independent long seeds' mean test probe: the target's seeds are used by
    neither predictor (the one long seed is the short run's seed, which the target excludes)."""
    if not extra:
        return ["", "**Seeds as a fidelity**: not run yet (`--short-seeds 3,4`: k short seeds against one long "
                    "seed at equal trial-epochs)."]
    more: dict[str, dict[int, dict]] = {}
    for r in extra:
        more.setdefault(r["name"], {})[r["seed"]] = r
    names = sorted(n for n in short if n in long_ and indep.get(n) and n in more)
    if len(names) < 4:
        return ["", f"**Seeds as a fidelity**: {len(names)} recipes have their extra short seeds so far (need 4)."]
    e_short, e_long = short[names[0]]["epochs"], long_[names[0]]["epochs"]
    k = e_long // e_short
    seeds = sorted(set.intersection(*(set(more[n]) for n in names)))[:k - 1]
    if len(seeds) < k - 1:
        return ["", f"**Seeds as a fidelity**: {len(seeds) + 1} of the {k} short seeds done for every recipe."]
    target = [float(np.mean([r["metrics"]["test_probe_top1"] for r in indep[n]])) for n in names]

    def short_mean(n: str, j: int) -> float:  # the mean val kNN of the first j short seeds (the study's seed first)
        vals = [short[n]["metrics"]["val_knn_top1"]] + [more[n][s]["metrics"]["val_knn_top1"] for s in seeds]
        return float(np.mean(vals[:j]))

    one_long = [long_[n]["metrics"]["val_knn_top1"] for n in names]
    preds = {j: [short_mean(n, j) for n in names] for j in range(1, k + 1)}
    cost = sum(r.get("wall_s", 0) for r in extra)
    lines = ["", f"**Seeds as a fidelity** (equal trial-epochs: {k} short runs of {e_short} epochs on seeds "
                 f"{short[names[0]]['seed']}, {', '.join(map(str, seeds))} against one {e_long}-epoch run on seed "
                 f"{long_[names[0]]['seed']}; target = the mean test probe of the long runs on the other seeds; "
                 f"{len(names)} recipes; the extra short runs took {cost / 60:.0f} CPU-thread-minutes):", "",
             "| predictor of the long target | trial-epochs per recipe | rank correlation (95% bootstrap) |",
             "|---|---:|---|"]
    for j in range(1, k + 1):
        lines.append(f"| mean val kNN of {j} short seed{'s' if j > 1 else ''} | {j * e_short} | "
                     f"{_corr(rank_correlations(preds[j], target))} |")
    lines.append(f"| val kNN of 1 long seed | {e_long} | {_corr(rank_correlations(one_long, target))} |")
    diff = spearman_difference(preds[k], one_long, target)
    lo, hi = diff["ci"]
    lines += ["", f"{k} short seeds minus 1 long seed, Spearman: {diff['difference']:+.2f} [{lo:+.2f}, {hi:+.2f}] "
                  "(paired bootstrap over the recipes)."]
    return lines
