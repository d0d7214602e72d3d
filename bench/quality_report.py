"""docs/results.md from the raw results of ``bench/bench_quality.py`` (``... report``).

Reads ``docs/results/{seed_noise,fidelity,search_vs_random,lift}.jsonl``, computes the
figures (means, standard deviations and errors, paired t intervals, Spearman and Kendall rank
correlations with percentile-bootstrap intervals; ``bench/quality_stats.py``) and draws the
plots with matplotlib (``bench/quality_plots.py``); this module writes the tables and the page. The
reading of the figures is kept by hand in ``docs/results/reading.md`` and included verbatim.
A study with no results yet says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.quality_fidelity import fidelity_section
from bench.quality_format import _iv, _load, _ms, _pct, _wall
from bench.quality_plots import lift_plot, search_plot, seed_noise_plot
from bench.quality_stats import holm, paired_p
from recipe_search.verdict.stats import paired_interval, summary

METRICS = ("val_knn_top1", "val_probe_top1", "test_probe_top1", "test_knn_top1")
COMMANDS = {
    "seed-noise": "python bench/bench_quality.py seed-noise",
    "fidelity": "python bench/bench_quality.py fidelity",
    "search-vs-random": "python bench/bench_quality.py search-vs-random",
    "lift": "python bench/bench_quality.py lift",
    "simulation": "python bench/simulate_verdicts.py --sims 5000",
    "aa": "python bench/bench_quality.py aa --repeats 3",
    "samplers": "python bench/bench_quality.py samplers --samplers tpe,random,tpe-mv,local,gp --repeats 5",
    "transfer": "python bench/bench_quality.py transfer --backbone efficientnet_b0 --source mobilenetv3_small_100 "
                "--repeats 3",
}


# -- seed noise ----------------------------------------------------------------------------------

def seed_noise_section(rows: list[dict], out: Path) -> list[str]:
    rows = [r for r in rows if r["status"] == "completed"]
    if not rows:
        return ["No results yet."]
    names = sorted({r["name"] for r in rows}, key=lambda n: (n != "floor", n))
    by = {n: {r["seed"]: r["metrics"] for r in rows if r["name"] == n} for n in names}
    lines = [f"Budget `{rows[0]['budget']}`, backbone `{rows[0]['backbone']}`, {_wall(rows)}. "
             "Each cell: mean ± std over seeds (percent), then the standard error of the mean.", "",
             "| recipe | seeds | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for n in names:
        cells = []
        for m in METRICS:
            vals = [v[m] for v in by[n].values() if m in v]
            cells.append(f"{_ms(vals)} (SE {_pct(summary(vals).sem)})" if vals else "n/a")
        lines.append(f"| {n} | {len(by[n])} | " + " | ".join(cells) + " |")
    lines += ["", "Paired by seed (same init seed, same proxy), 95% t intervals, in points:", "",
              "| difference | val kNN | test probe | test kNN |", "|---|---|---|---|"]
    pairs = [(a, "floor") for a in names if a != "floor"]
    if "mocov2" in names and "sinfonce-light" in names:
        pairs.append(("sinfonce-light", "mocov2"))
    tests = {}
    for a, b in pairs:
        seeds = sorted(set(by[a]) & set(by[b]))
        if len(seeds) < 2:
            continue
        cells = []
        for m in ("val_knn_top1", "test_probe_top1", "test_knn_top1"):
            x, y = [by[a][s][m] for s in seeds], [by[b][s][m] for s in seeds]
            cells.append(_iv(paired_interval(x, y)))
            tests[(a, b, m)] = paired_p(x, y)
        lines.append(f"| {a} - {b} | " + " | ".join(cells) + " |")
    if tests:  # the table holds many intervals: which differences survive Holm's correction over all of them
        adj = holm(tests)
        lines += ["", f"Holm-corrected over the {len(tests)} intervals above (family-wise 5%, two-sided paired t): "
                      "the differences that survive are "
                      + (", ".join(f"{a} - {b} on {m}" for (a, b, m), p in adj.items() if p < 0.05) or "none")
                      + "; every other interval in the table is exploratory."]
    return lines + ["", seed_noise_plot(names, by, out)]


# -- search against random search ----------------------------------------------------------------

def search_section(rows: list[dict], out: Path) -> list[str]:
    if not rows:
        return ["No results yet."]
    lines = ["| repeat | method | trials | trial-epochs | promoted winner (chosen on val) | its confirmed test probe "
             "| verdict | searched finalist: confirmed val kNN / test probe | wall |",
             "|---|---|---|---|---|---|---|---|---|"]
    score, winner, found, found_id = {}, {}, {}, {}
    for r in sorted(rows, key=lambda r: (r["repeat"], r["method"])):
        v = r["verdict"]
        score[(r["repeat"], r["method"])] = v["score"]["mean"]
        winner[(r["repeat"], r["method"])] = _recipe_id(r, v["winner"])
        fin = {n: c for n, c in (r.get("confirmed") or {}).items() if c["role"] == "finalist" and c["test_probe_top1"]}
        cells = []
        for n, c in fin.items():
            found[(r["repeat"], r["method"])] = float(np.mean(c["test_probe_top1"]))
            found_id[(r["repeat"], r["method"])] = _recipe_id(r, n)
            cells.append(f"`{n}` {_ms(c['val_knn_top1'])} / {_ms(c['test_probe_top1'])}")
        lines.append(f"| {r['repeat']} | {r['method']} | {r['trials']} | {r['trial_epochs']} | {v['winner']} | "
                     f"{_pct(v['score']['mean'])} ± {_pct(v['score']['std'])} | {v['verdict']} | "
                     f"{'; '.join(cells) or 'n/a'} | {r.get('wall_s', 0) / 60:.0f} min |")
    reps = sorted({k[0] for k in score if (k[0], "tpe-asha") in score and (k[0], "random") in score})
    if reps:
        a = [score[(r, "tpe-asha")] for r in reps]
        b = [score[(r, "random")] for r in reps]
        same = [winner[(r, "tpe-asha")] == winner[(r, "random")] for r in reps]
        wins = sum(x > y and not t for x, y, t in zip(a, b, same))
        ties = sum(same)
        lines += ["", f"Over {len(reps)} repeat(s): TPE+ASHA {_ms(a)}, random search {_ms(b)}; TPE+ASHA wins "
                      f"{wins} of {len(reps)}" + (f" ({ties} tied: both promoted the same recipe, whose "
                                                  "confirmation runs the second search reused)" if ties else "")
                  + (f"; paired difference {_iv(paired_interval(a, b))} points" if len(reps) > 1 and ties < len(reps)
                     else "; the two promoted the same recipe in every repeat, so they cannot differ" if len(reps) > 1
                     else "") + "."]
        both = [r for r in reps if (r, "tpe-asha") in found and (r, "random") in found]
        if both:
            fa, fb = [found[(r, "tpe-asha")] for r in both], [found[(r, "random")] for r in both]
            shared = [found_id[(r, "tpe-asha")] == found_id[(r, "random")] for r in both]
            lines += ["", f"What the samplers found (the searched finalist's confirmed test probe, whether or not "
                          f"it was promoted): TPE+ASHA {_ms(fa)}, random search {_ms(fb)}; TPE+ASHA's is higher in "
                          f"{sum(x > y and not t for x, y, t in zip(fa, fb, shared))} of {len(both)}"
                          + (f", and in {sum(shared)} both finalists are the same recipe (one of TPE's start-up "
                             "draws, which the random search also drew)" if any(shared) else "") + "."]
        lines += asha_check(rows)
        lines += ["", search_plot(rows, out)]
        if len(reps) < 3:
            lines += ["", f"**Incomplete**: {len(reps)} of the 3 repeats the study needs; nothing is concluded "
                          "from it yet."]
    return lines


def _recipe_id(row: dict, name: str) -> str:
    """What identifies a recipe across two searches: a sampled trial's point (trial ids differ between
    searches that sample the same point), a baseline's name."""
    for t in row.get("search_trials") or []:
        if t["name"] == name and t.get("point"):
            return t["point"]
    return name


def asha_check(rows: list[dict]) -> list[str]:
    """ASHA's stops in the TPE+ASHA searches, against the same recipes trained to the end by the random
    search of the same repeat (same seed and sampler stream: TPE's start-up points are its first draws)."""
    by = {(r["repeat"], r["method"]): r for r in rows if r.get("search_trials")}
    table, n, same, above = [], 0, 0, 0
    for rep in sorted({k[0] for k in by}):
        tpe, rnd = by.get((rep, "tpe-asha")), by.get((rep, "random"))
        if not (tpe and rnd):
            continue
        full = {t["point"]: t["val_knn"] for t in rnd["search_trials"] if t["point"] and t["status"] == "completed"}
        carried = max((t["val_knn"][-1] for t in tpe["search_trials"]
                       if t["point"] and t["status"] == "completed" and t["val_knn"]), default=None)
        for t in tpe["search_trials"]:
            if t["status"] != "pruned" or t["point"] not in full or not t["val_knn"]:
                continue
            curve, stop = full[t["point"]], len(t["val_knn"])
            n += 1
            same += curve[:stop] == t["val_knn"]
            beats = carried is not None and curve[-1] > carried
            above += beats
            table.append(f"| {rep} | `{t['name']}` | {stop} | {_pct(t['val_knn'][-1])} | {_pct(curve[-1])} "
                         f"(epoch {len(curve)}) | {_pct(carried)} | {'**yes**' if beats else 'no'} |")
    if not n:
        return []
    return ["", "**ASHA's stops, checked.** The two searches of a repeat share the seed, and TPE's first "
            "(start-up) points are draws from the same sampler stream as the random search's, so the random "
            "search trained to the end some recipes that ASHA stopped. Training is deterministic per recipe and "
            f"seed: in {same} of {n} cases the two curves are identical up to the stop, so the random search shows "
            "exactly where a stopped trial would have ended.", "",
            "| repeat | recipe stopped by ASHA | at epoch | val kNN there | same recipe trained to the end | "
            "TPE+ASHA's best completed searched trial | would have beaten it |", "|---|---|---|---|---|---|---|",
            *table, "", f"{above} of the {n} stopped recipes would have finished above the searched recipe TPE+ASHA "
            "carried to confirmation (single seed, val kNN)."]


def lift_section(rows: list[dict], out: Path) -> list[str]:
    if not rows:
        return ["No results yet."]
    r = rows[-1]
    v = r["verdict"]
    lines = [f"Search `{r['search_id']}` ({r['trials']} trials, {r['trial_epochs']} trial-epochs, "
             f"{r['wall_s'] / 60:.0f} min wall): **{v['verdict']}**.", "", f"> {v['line']}", "",
             f"| confirmed on seeds {', '.join(map(str, v['seeds']))} | test probe mean ± std |", "|---|---|",
             f"| winner `{v['winner']}` ({v.get('winner_role', '')}) | {_pct(v['score']['mean'])} ± {_pct(v['score']['std'])} |"]
    for name, b in v.get("baselines", {}).items():
        lines.append(f"| baseline `{name}` | {_pct(b['mean'])} ± {_pct(b['std'])} |")
    lines += [f"| untrained floor | {_pct(v['floor']['mean'])} ± {_pct(v['floor']['std'])} |", ""]
    if v.get("comparisons"):  # the two-phase verdict: declared comparisons, Holm + sequential
        lines += [f"Chosen on val over select seeds {', '.join(map(str, v['select_seeds']))}; reported on "
                  f"{len(v['seeds'])} fresh report seeds (looks at {', '.join(map(str, v['looks']))}, stopped: "
                  f"{v['stop']}); served: **{v['served'] or 'nothing'}**; smallest detectable lift "
                  f"{100 * v['mde']:+.1f} points.", "",
                  "| declared comparison | mean | 95% interval (adjusted) | state | detectable lift |",
                  "|---|---|---|---|---|"]
        for name, d in v["comparisons"].items():
            lines.append(f"| {name} | {100 * d['mean']:+.1f} | [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] | "
                         f"{d['state']} | {100 * d['mde']:+.1f} |")
    else:  # the old verdict (3 seeds that chose and reported, uncorrected)
        lines += ["| lift of the winner over | mean | 95% interval |", "|---|---|---|"]
        for name, iv in v["lift"].items():
            lines.append(f"| {name} | {100 * iv['mean']:+.1f} | [{100 * iv['low']:+.1f}, {100 * iv['high']:+.1f}] |")
    old = [o for o in rows[:-1] if not o["verdict"].get("comparisons")]
    if old and v.get("comparisons"):
        o = old[-1]
        lines += ["", f"The same study under the old verdict (3 seeds that chose and reported, uncorrected; search "
                      f"`{o['search_id']}`): **{o['verdict']['verdict']}** in {o['wall_s'] / 60:.0f} min wall, against "
                      f"{r['wall_s'] / 60:.0f} min here."]
    return lines + ["", lift_plot(v, out)]


def simulation_section(results: Path) -> list[str]:
    """The verdict simulated from the measured score distributions (bench/simulate_verdicts.py)."""
    path = results / "verdict_simulation.json"
    if not path.exists():
        return ["No results yet."]
    sim = json.loads(path.read_text())
    m = sim["model"]
    fitted = ", ".join(f"`{k}` val {_pct(v['mean'][0])} ± {_pct(v['std'][0])} / test {_pct(v['mean'][1])} ± "
                       f"{_pct(v['std'][1])}" for k, v in m["recipes"].items())
    lines = [f"Score model fitted to the seed-noise study (per seed, val kNN / test probe, mean ± std): {fitted}; "
             f"val/test correlation within a recipe {m['rho']:+.2f}. {sim['results'][next(iter(sim['results']))]['sims']} "
             f"simulated searches per row; the searched finalist is `sinfonce-light` itself plus the true lift. "
             f"Old design: 3 confirmation seeds that both choose and report, uncorrected paired t. New design "
             f"(`verdict.py`): choose on {sim['select_seeds']} select seeds (val only), report on fresh seeds at "
             f"looks {', '.join(map(str, sim['looks']))}, group-sequential Holm, test-image noise of "
             f"{sim['test_images']:,} images.", "",
             "| design | true lift | rate of `better_than_baselines` [95% CI] | mean reported lift when a searched "
             "recipe wins | runs trained (mean) |", "|---|---|---|---|---|"]
    for r in sim["results"].values():
        lo, hi = r["better_rate_ci"]
        rep = "-" if r["mean_reported_lift"] is None else (
            f"{100 * r['mean_reported_lift']:+.2f} (SE {100 * r['reported_lift_se']:.2f})")
        lines.append(f"| {r['design']} | {100 * r['true_lift']:+.0f} | {100 * r['better_rate']:.2f}% "
                     f"[{100 * lo:.2f}, {100 * hi:.2f}] | {rep} | {r['mean_runs']:.1f} |")
    return lines


def aa_section(results: Path) -> list[str]:
    """The real A/A confirmations (bench/quality_aa.py), replayed from their rows with the product's rules."""
    from bench.quality_aa import DESIGN, TWIN, search_seed, verdicts

    rows, path = _load(results, "aa"), results / DESIGN
    if not rows or not path.exists():
        return ["No results yet."]
    d = json.loads(path.read_text())
    states = verdicts(rows, d["repeats"], d["n_select"], tuple(d["looks"]), d["n_images"])
    lines = [f"`{d['backbone']}` at the `{d['budget']}` budget: `sinfonce-light` against itself renamed "
             f"(`{TWIN}`, the searched finalist, trained on seed + {d['twin_seed_offset']:,}), select on "
             f"{d['n_select']} seeds (val kNN), report looks {', '.join(map(str, d['looks']))} on "
             f"{d['n_images']:,} test images; {_wall(rows)}.", "",
             "| repeat (search seed) | winner on val (twin / baseline val kNN) | report seeds | twin test probe | "
             "baseline test probe | untrained floor | lift over the baseline [95%] | stop | verdict | served |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    done = [st for st in states if st["verdict"] is not None and st["verdict"].decided]
    for st in states:
        sel, v = st["selection"], st["verdict"]
        if sel is None or v is None:
            lines.append(f"| {st['repeat']} ({search_seed(st['repeat'])}) | running | | | | | | | | |")
            continue
        val = f"{_pct(sel.val[TWIN].mean)} / {_pct(sel.val['sinfonce-light'].mean)}"
        twin = _ms(v.score.values) if v.winner == TWIN else "-"
        base = _ms(v.baselines[v.best_baseline].values) if v.best_baseline else _ms(v.score.values)
        lift = _iv(v.lift["best_baseline"]) if "best_baseline" in v.lift else "- (the baseline won on val)"
        lines.append(f"| {st['repeat']} ({search_seed(st['repeat'])}) | `{v.winner}` ({val}) | {len(v.seeds)} | "
                     f"{twin} | {base} | {_ms(v.floor.values)} | {lift} | {v.stop if v.decided else 'running'} | `{v.verdict}` | "
                     f"{v.served or 'nothing'} |")
    better = sum(st["verdict"].verdict == "better_than_baselines" for st in done)
    lines += ["", f"**`better_than_baselines` in {better} of {len(done)} decided A/A confirmations** "
                  f"({len(states) - len(done)} still running)."]
    return lines


def write_report(results: Path, target: Path) -> None:
    import platform

    machine = results / "machine.json"
    info = json.loads(machine.read_text()) if machine.exists() else {}
    reading = results / "reading.md"
    doc = ["# Evidence: does the search find better recipes?", "",
           "Generated by `python bench/bench_quality.py report` from the raw results in `docs/results/`; "
           "do not edit by hand (the reading below lives in `docs/results/reading.md`).", "",
           f"Machine: {info.get('machine', platform.platform())}. Every figure is top-1 accuracy in percent "
           "on the shared CIFAR-10, with every encoder evaluated after re-estimating its BN statistics on "
           "the clean train images (precise BN, `trainer/precise_bn.py`).", ""]
    if reading.exists():
        doc += [reading.read_text().strip(), ""]
    doc += ["## 1. Seed noise", "", f"`{COMMANDS['seed-noise']}`", ""]
    doc += seed_noise_section(_load(results, "seed-noise"), results)
    doc += ["", "## 2. Proxy fidelity", "", f"`{COMMANDS['fidelity']}`", ""]
    doc += fidelity_section(_load(results, "fidelity"), results)
    doc += ["", "## 3. TPE+ASHA against random search at equal compute", "", f"`{COMMANDS['search-vs-random']}`", ""]
    doc += search_section(_load(results, "search-vs-random"), results)
    doc += ["", "## 4. Lift of a `cpu` search's winner", "", f"`{COMMANDS['lift']}`", ""]
    doc += lift_section(_load(results, "lift"), results)
    doc += ["", "## 5. The verdict under the null and its power (simulated)", "", f"`{COMMANDS['simulation']}`", ""]
    doc += simulation_section(results)
    doc += ["", "## 6. The verdict under the null, for real (A/A)", "", f"`{COMMANDS['aa']}`", ""]
    doc += aa_section(results)
    from bench.quality_transfer import transfer_section

    doc += ["", "## 7. Warm start across backbones: cold against warm-started searches", "",
            f"`{COMMANDS['transfer']}`", ""]
    doc += transfer_section(_load(results, "transfer"))
    from bench.quality_samplers import samplers_section

    doc += ["", "## 8. Samplers at equal compute: what each search ends with, paired repeats", "",
            f"`{COMMANDS['samplers']}`", ""]
    doc += samplers_section(_load(results, "samplers"))
    from bench.quality_race import race_section

    doc += ["", "## 9. Racing the select phase (`--race`), replayed on the recorded select phases", "",
            "`python bench/bench_quality.py report` (from section 8's rows, seed by seed)", ""]
    doc += race_section(_load(results, "samplers"))
    target.write_text("\n".join(doc) + "\n")
    print(f"wrote {target}")

