"""Samplers compared at equal compute: which search serves the better recipe? (issue 22, item 4)

``python bench/bench_quality.py samplers --samplers tpe,random,tpe-mv,local,gp --repeats 5``

Repeat ``r``: every method searches with the same ``--seed`` (:data:`REPEAT_SEED` + r: the same
proxy subset, the same training seed for every trial, the same confirmation seeds) and its own
``--sampler-seed`` (:func:`sampler_seed`), so the methods draw independent recipes (TPE's start-up
draws are not random search's first draws, the flaw of the old study) while the training noise and
the confirmation seeds are shared: the comparison within a repeat is paired, and a baseline's
confirmation runs are trained once per repeat and reused by the later searches of it
(``--reuse-confirmations`` within the study's one MLflow experiment). Every method runs with ASHA and
the same number of trials (the trial-epochs each spent are printed beside it); warm start is off
(the study's earlier searches would otherwise seed its later ones).

Each search's own verdict decides what it serves. The figure per repeat and method is what a user
ends up with: the served recipe, or the reference baseline when nothing is served. Its score is its
mean test probe over the repeat's common report seeds (the first ``n`` report seeds, ``n`` the fewest
any reported recipe of the repeat has, the same seeds for every method), and its regret is the best
such score among every recipe any search of the repeat reported (the reference set: the finalists
that reached the report phase and the baselines) minus its own. Against random search, per method:
wins, ties (both served the same recipe, or the same score) and losses over the repeats, a two-sided
sign test, and the mean paired difference with a t interval over the repeats.

A second figure separates the sampler from the verdict's power: each search's *candidate*, the
recipe its select phase chose on val (its winner, served or not), scored the same way. When no
search of a repeat shows a lift its verdict can detect, every method ends with the reference
baseline and the outcomes tie by construction; the candidates still differ when the samplers found
different recipes. The candidate comparison is reported beside the outcome one, never instead of it:
a candidate the verdict did not serve is what the user is *not* told to use.

Each search is a row of ``docs/results/samplers.jsonl`` as it finishes (resumable: a finished search
is not run again; an unfinished one resumes).
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

from bench.quality_format import _load

STUDY = "samplers"
REPEAT_SEED = 800
CONTROL = "random"


def sampler_seed(repeat: int, index: int) -> int:
    """Method ``index``'s sampler seed in repeat ``repeat``: distinct across methods and repeats."""
    return 5000 + 100 * repeat + index


def samplers(setup, search, results_path) -> None:
    """Run the study (see the module's docstring): ``search`` is ``bench_quality._search``."""
    from bench._common import machine

    a = setup.args
    methods = list(a.samplers)
    path = results_path(STUDY)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {r["key"] for r in _load(path.parent, STUDY)}
    for rep in range(a.repeats):
        for i, method in enumerate(methods):
            key = f"{method}-r{rep}"
            if key in done:
                continue
            seed, sseed = REPEAT_SEED + rep, sampler_seed(rep, i)
            t0 = time.monotonic()
            out = search(setup, f"q-sm-{a.budget}-{key}", "quality-samplers",
                         ["--seed", str(seed), "--sampler", method, "--sampler-seed", str(sseed),
                          "--no-warm-start"])
            out.update(key=key, method=method, repeat=rep, seed=seed, sampler_seed=sseed, budget=a.budget,
                       backbone=a.backbone, wall_s=out.pop("search_wall_s") or time.monotonic() - t0,
                       machine=machine())
            with path.open("a") as f:
                f.write(json.dumps(out) + "\n")
            print(f"[samplers] {key}: {out['trial_epochs']} trial-epochs, verdict {out['verdict'].get('verdict')}, "
                  f"served {out['verdict'].get('served') or 'nothing'}", flush=True)


# -- the figures ---------------------------------------------------------------------------------

def outcome(row: dict) -> str | None:
    """What a user of this search ends up with: the served recipe, else the reference baseline (the
    select winner itself when a baseline won on val: the verdict then has no separate reference)."""
    v = row["verdict"]
    return (v.get("served") or v.get("best_baseline")
            or (v.get("winner") if v.get("winner_role") == "baseline" else None))


def _recipe_key(row: dict, name: str) -> str:
    """A recipe's identity across the searches of a repeat: a baseline by its name, a finalist by its
    search (trial ids are per search)."""
    return name if row["confirmed"].get(name, {}).get("role") == "baseline" else f"{row['method']}:{name}"


def repeat_scores(rows: list[dict]) -> dict | None:
    """One repeat's figures: per method, the outcome's score and regret on the common report seeds,
    and the reference set's best; None when a method's outcome has no report seeds."""
    reported: dict[str, dict[int, float]] = {}
    for row in rows:
        for name, c in row["confirmed"].items():
            if c.get("report_seeds"):  # the first measurement of a (recipe, seed) stands: a later search
                # on another CPU draws another value (the seed pins a run on one machine type only) and
                # must not move the figures already published
                got = reported.setdefault(_recipe_key(row, name), {})
                for seed, value in zip(c["report_seeds"], c["test_probe_top1"]):
                    got.setdefault(seed, value)
    if not reported:
        return None
    common = sorted(set.intersection(*(set(v) for v in reported.values())))
    if not common:
        return None
    score = {k: float(np.mean([v[s] for s in common])) for k, v in reported.items()}
    best = max(score, key=score.get)
    out = {"seeds": common, "best": best, "best_score": score[best], "methods": {}}
    for row in rows:
        name = outcome(row)
        key = _recipe_key(row, name) if name else None
        if key not in score:
            return None
        winner = row["verdict"].get("winner") or name
        cand = _recipe_key(row, winner)
        out["methods"][row["method"]] = {"outcome": key, "score": score[key], "regret": score[best] - score[key],
                                         "candidate": cand, "candidate_score": score.get(cand),
                                         "verdict": row["verdict"].get("verdict"),
                                         "trial_epochs": row["trial_epochs"], "wall_s": row.get("wall_s")}
    return out


def compare(repeats: list[dict], method: str, control: str = CONTROL, what: str = "outcome") -> dict:
    """``method`` against ``control`` over the repeats both ran: wins, ties, losses, the two-sided sign
    test's p and the mean paired difference of scores with a 95% t interval; ``what`` is ``outcome``
    (what each search ends with) or ``candidate`` (its select winner)."""
    field = "score" if what == "outcome" else "candidate_score"
    from scipy.stats import binomtest, t

    diffs, ties = [], 0
    for r in repeats:
        m, c = r["methods"].get(method), r["methods"].get(control)
        if m is None or c is None or m.get(field) is None or c.get(field) is None:
            continue
        d = m[field] - c[field]
        if m[what] == c[what] or d == 0:
            ties += 1
            d = 0.0
        diffs.append(d)
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    n = len(diffs)
    mean = float(np.mean(diffs)) if diffs else float("nan")
    half = float(t.ppf(0.975, n - 1) * np.std(diffs, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"n": n, "wins": wins, "ties": ties, "losses": losses, "sign_p": float(p), "mean": mean,
            "ci": (mean - half, mean + half)}


def to_show(row: dict) -> str:
    """The fresh report seeds the search's finalist-against-baseline lift would take to show at its
    spread (recipe_search.verdict.sequential.seeds_to_show): "shown" when it was, "-" when the
    search's winner was a baseline or its lift not positive."""
    from recipe_search.verdict.sequential import REJECTED, SHOW_CAP, seeds_to_show

    d = (row["verdict"].get("comparisons") or {}).get("winner-vs-baseline")
    if not d:
        return "-"
    if d.get("state") == REJECTED:
        return "shown"
    if not (d.get("mean") or 0) > 0:
        return "-"
    n = seeds_to_show(d)
    return f"{f'> {SHOW_CAP}' if n is None else n} (+{100 * d['mean']:.1f} at {d['n']})"


def _versus(c: dict) -> tuple[str, str, str]:
    lo, hi = c["ci"]
    return (f"{c['wins']} / {c['ties']} / {c['losses']} of {c['n']}", f"{c['sign_p']:.2f}",
            f"{100 * c['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" if c["n"] > 1 else "n/a")


def _against_default(scored: list[dict], methods: list[str]) -> list[str]:
    """Each other model-based sampler against the default one, over the repeats both ran: the figure
    that decides whether the default changes."""
    from recipe_search.samplers import DEFAULT

    others = [m for m in methods if m not in (DEFAULT, CONTROL)]
    if DEFAULT not in methods or not others:
        return []
    out = ["", f"Against the default sampler (`{DEFAULT}`), over the repeats both ran:", "",
           f"| method | against {DEFAULT}: wins / ties / losses | sign test p | mean difference [95% t interval] | "
           f"candidates against {DEFAULT}: wins / ties / losses | sign test p | mean difference [95% t interval] |",
           "| --- | --- | ---: | --- | --- | ---: | --- |"]
    for m in others:
        vs = _versus(compare(scored, m, DEFAULT)) + _versus(compare(scored, m, DEFAULT, what="candidate"))
        out.append(f"| {m} | " + " | ".join(vs) + " |")
    return out


def samplers_section(rows: list[dict]) -> list[str]:
    """docs/results.md's section: per repeat and method, what it served, its score and regret; then
    each method against random search."""
    if not rows:
        return ["Not run yet."]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by_rep: dict[int, list[dict]] = {}
    for r in rows:
        by_rep.setdefault(r["repeat"], []).append(r)
    out = ["| repeat | method | sampler seed | trial-epochs | verdict | ends with | test probe (common report seeds) "
           "| regret | candidate (select winner) | its test probe | its lift over the better baseline: seeds to show |",
           "| ---: | --- | ---: | ---: | --- | --- | ---: | ---: | --- | ---: | ---: |"]
    scored, complete = [], 0  # every repeat with the methods it ran; how many ran every method
    for rep in sorted(by_rep):
        got = by_rep[rep]
        scores = repeat_scores(got) if len({r["method"] for r in got}) > 1 else None
        for r in got:
            m = (scores or {}).get("methods", {}).get(r["method"])
            score, regret = ("n/a", "n/a") if not m else (f"{100 * m['score']:.1f}", f"{100 * m['regret']:.1f}")
            winner = r["verdict"].get("winner")
            cand = m["candidate"] if m else _recipe_key(r, winner) if winner else "n/a"
            cscore = f"{100 * m['candidate_score']:.1f}" if m and m.get("candidate_score") is not None else "n/a"
            out.append(f"| {rep} | {r['method']} | {r.get('sampler_seed')} | {r['trial_epochs']} | "
                       f"{r['verdict'].get('verdict')} | {m['outcome'] if m else outcome(r)} | {score} | {regret} | "
                       f"{cand} | {cscore} | {to_show(r)} |")
        if scores:
            scored.append(scores)
            complete += {r["method"] for r in got} == set(methods)
    wall = sum(r.get("wall_s") or 0 for r in rows)
    machines = sorted({r.get("machine") or "not recorded" for r in rows})
    out += ["", f"Measured on: {'; '.join(machines)}."]
    out += ["", f"{len(rows)} searches in {len(by_rep)} repeats ({complete} with every method), {wall / 3600:.1f} h "
                "of search wall time (each search with its confirmation; a search resumed after its process was killed "
                "counts only the sessions that ended cleanly). Regret: the best score among every recipe "
                "a search of the repeat reported, minus the outcome's, on the report seeds every one of them has "
                "(a repeat's reference set is what its methods reported: a repeat with more methods has a larger "
                "one). Each method is compared with random search over the repeats both ran."]
    better = {m: sum(1 for r in rows if r["method"] == m and r["verdict"].get("verdict") == "better_than_baselines")
              for m in methods}
    mdes = {m: [r["verdict"]["mde"] for r in rows if r["method"] == m and r["verdict"].get("mde") is not None
                and r["verdict"].get("winner_role") == "finalist"] for m in methods}  # its lift over the baseline
    out += ["", "| method | mean regret | served a recipe shown better than the baselines | smallest detectable "
                "lift (mean) | against random: wins / ties / losses | sign test p | mean difference [95% t interval] "
                "| candidates against random: wins / ties / losses | sign test p | mean difference [95% t interval] |",
            "| --- | ---: | ---: | ---: | --- | ---: | --- | --- | ---: | --- |"]
    for m in methods:
        regrets = [r["methods"][m]["regret"] for r in scored if m in r["methods"]]
        mean_regret = f"{100 * float(np.mean(regrets)):.1f}" if regrets else "n/a"
        mde = f"{100 * float(np.mean(mdes[m])):.1f}" if mdes[m] else "n/a"
        if m == CONTROL or CONTROL not in methods:
            vs = ("(the control)", "", "", "(the control)", "", "")
        else:
            vs = _versus(compare(scored, m)) + _versus(compare(scored, m, what="candidate"))
        out.append(f"| {m} | {mean_regret} | {better[m]} of {sum(1 for r in rows if r['method'] == m)} | {mde} | "
                   + " | ".join(vs) + " |")
    out += _against_default(scored, methods)
    out += ["", "Candidate: the recipe a search's select phase chose on val, served or not (a baseline when "
                "none of its finalists beat them on val). Smallest detectable lift: the lift over the better "
                "baseline that a verdict's test had 80% power to detect at the seeds it ran, averaged over the "
                "searches whose winner was a finalist (n/a: no search of the method got that far). Seeds to show: "
                "for a finalist whose lift over the better baseline was not shown, the fresh report seeds a "
                "one-look test at its level would need for 80% power if the lift it measured (on the seeds it "
                "ran) and its seed and image spread held (`seeds_to_show` in recipe_search/verdict/sequential.py).",
            "", "Goal (issue 22): the default beats random search in at least 4 of 5 repeats, and serves a recipe "
                "shown better than the better baseline in at least one."]
    return out
