"""bench/quality_samplers.py: the sampler comparison's design (independent sampler seeds, shared
training seeds) and its figures (what each search ends with, its regret on common report seeds,
wins/ties/losses against random search); the seeds-as-fidelity statistic; and, in the slow suite, a
real two-sampler repeat at the tiny budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.quality_samplers import compare, repeat_scores, sampler_seed, samplers_section
from bench.quality_stats import spearman_difference

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def _row(method: str, rep: int, served: str | None, confirmed: dict, verdict: str = "no_significant_lift") -> dict:
    return {"key": f"{method}-r{rep}", "method": method, "repeat": rep, "seed": 800 + rep, "sampler_seed": 1,
            "trial_epochs": 30, "wall_s": 60.0, "confirmed": confirmed,
            "verdict": {"verdict": verdict, "served": served, "best_baseline": "sinfonce-light"}}


def _c(role: str, seeds: list[int], tests: list[float]) -> dict:
    return {"role": role, "report_seeds": seeds, "test_probe_top1": tests}


def test_every_method_and_repeat_has_its_own_sampler_seed():
    seeds = [sampler_seed(r, i) for r in range(10) for i in range(4)]
    assert len(set(seeds)) == len(seeds)


def test_scores_and_regret_are_read_on_the_seeds_every_reported_recipe_has():
    base = _c("baseline", [4, 5, 6], [0.20, 0.22, 0.24])
    tpe = _row("tpe", 0, "a1", {"a1": _c("finalist", [4, 5, 6, 7, 8], [0.30, 0.28, 0.26, 0.9, 0.9]),
                                "sinfonce-light": base})
    rnd = _row("random", 0, None, {"b1": _c("finalist", [4, 5, 6], [0.25, 0.25, 0.25]), "sinfonce-light": base})
    s = repeat_scores([tpe, rnd])
    assert s["seeds"] == [4, 5, 6]  # seeds 7 and 8 (only a1 has them) are left out
    assert s["best"] == "tpe:a1" and s["best_score"] == pytest.approx(0.28)
    # random served nothing: it ends with the reference baseline, whose score the two searches share
    assert s["methods"]["random"]["outcome"] == "sinfonce-light"
    assert s["methods"]["random"]["regret"] == pytest.approx(0.28 - 0.22)
    assert s["methods"]["tpe"]["regret"] == 0.0


def test_a_baseline_that_won_on_val_is_what_its_search_ends_with():
    """When a baseline wins the select phase, the report runs only it (no separate reference
    baseline: best_baseline is None) and nothing may be served: the user ends with that baseline."""
    tpe = _row("tpe", 0, None, {"mocov2": _c("baseline", [4, 5], [0.30, 0.32]),
                                "sinfonce-light": _c("baseline", [], [])})
    tpe["verdict"].update(winner="mocov2", winner_role="baseline", best_baseline=None)
    rnd = _row("random", 0, None, {"b1": _c("finalist", [4, 5], [0.20, 0.22]),
                                   "sinfonce-light": _c("baseline", [4, 5], [0.24, 0.26])})
    rnd["verdict"].update(winner="b1", winner_role="finalist")
    s = repeat_scores([tpe, rnd])
    assert s["methods"]["tpe"]["outcome"] == "mocov2" and s["methods"]["tpe"]["regret"] == 0.0
    assert s["methods"]["random"]["outcome"] == "sinfonce-light"
    assert s["methods"]["random"]["regret"] == pytest.approx(0.31 - 0.25)


def test_wins_ties_and_losses_against_random_with_a_sign_test():
    def rep(t: float, r: float, same: bool = False) -> dict:
        return {"methods": {"tpe": {"outcome": "x" if same else "t", "score": t},
                            "random": {"outcome": "x" if same else "r", "score": r}}}

    c = compare([rep(0.3, 0.2), rep(0.3, 0.2), rep(0.3, 0.2), rep(0.3, 0.2), rep(0.25, 0.25, same=True)], "tpe")
    assert (c["wins"], c["ties"], c["losses"], c["n"]) == (4, 1, 0, 5)
    assert c["sign_p"] == pytest.approx(0.125)  # 4 of 4 untied: 2 * 0.5**4
    assert c["mean"] == pytest.approx(0.08) and c["ci"][0] < 0.08 < c["ci"][1]
    assert compare([rep(0.1, 0.2)], "tpe")["losses"] == 1


def test_candidates_separate_what_a_sampler_found_from_what_the_verdict_served():
    """Both searches serve the baseline (no detectable lift), so their outcomes tie; their select
    winners were other recipes, scored on the same common report seeds: tpe's candidate won."""
    base = _c("baseline", [4, 5, 6], [0.20, 0.22, 0.24])
    tpe = _row("tpe", 0, None, {"a1": _c("finalist", [4, 5, 6], [0.26, 0.26, 0.26]), "sinfonce-light": base})
    rnd = _row("random", 0, None, {"b1": _c("finalist", [4, 5, 6], [0.21, 0.21, 0.21]), "sinfonce-light": base})
    tpe["verdict"].update(winner="a1", winner_role="finalist", mde=0.18)
    rnd["verdict"].update(winner="b1", winner_role="baseline", mde=0.05)  # its mde is a lift over the floor
    s = repeat_scores([tpe, rnd])
    assert s["methods"]["tpe"]["candidate"] == "tpe:a1"
    assert s["methods"]["random"]["candidate_score"] == pytest.approx(0.21)
    assert compare([s], "tpe")["ties"] == 1  # what the user ends with: the same baseline
    c = compare([s], "tpe", what="candidate")
    assert (c["wins"], c["ties"], c["losses"]) == (1, 0, 0) and c["mean"] == pytest.approx(0.05)
    text = "\n".join(samplers_section([tpe, rnd]))
    assert "| sinfonce-light | 22.0 | 4.0 | tpe:a1 | 26.0 |" in text
    assert "| tpe | 4.0 | 0 of 1 | 18.0 | 0 / 1 / 0 of 1 | 1.00 | n/a | 1 / 0 / 0 of 1 | 1.00 | n/a |" in text
    assert "| random | 4.0 | 0 of 1 | n/a | (the control) |" in text


def test_the_section_says_not_run_and_marks_an_incomplete_repeat():
    assert samplers_section([]) == ["Not run yet."]
    base = _c("baseline", [4, 5, 6], [0.2, 0.2, 0.2])
    rows = [_row("tpe", 0, "a", {"a": _c("finalist", [4, 5, 6], [0.3, 0.3, 0.3]), "sinfonce-light": base},
                 verdict="better_than_baselines"),
            _row("random", 0, "sinfonce-light", {"sinfonce-light": base}),
            _row("tpe", 1, "sinfonce-light", {"sinfonce-light": base})]  # repeat 1: random has not run yet
    text = "\n".join(samplers_section(rows))
    assert "| 0 | tpe | 1 | 30 | better_than_baselines | tpe:a | 30.0 | 0.0 |" in text
    assert "| 1 | tpe | 1 | 30 | no_significant_lift | sinfonce-light | n/a | n/a |" in text
    assert "1 / 0 / 0 of 1" in text and "1 of 2" in text  # against random; better_than_baselines once
    assert "Measured on: not recorded." in text
    rows[0]["machine"] = "2 cores (Some CPU)"
    assert "Measured on: 2 cores (Some CPU); not recorded." in "\n".join(samplers_section(rows))


def test_spearman_difference_of_two_predictors_of_one_target():
    y = list(range(12))
    same = spearman_difference(y, y, y)
    assert same["difference"] == 0.0 and same["ci"] == (0.0, 0.0)
    shuffled = [3, 7, 1, 10, 0, 5, 11, 2, 8, 4, 9, 6]
    d = spearman_difference(y, shuffled, y)
    assert d["difference"] > 0.5 and d["ci"][0] > 0


@pytest.mark.slow
@pytest.mark.skipif(not DATA.exists(), reason="the shared CIFAR-10 is not beside the repository")
def test_a_real_repeat_draws_other_recipes_on_the_same_training_seeds(tmp_path):
    """Two real searches (tpe, random) of one repeat at the tiny budget: the same --seed, their own
    --sampler-seed, other sampled recipes, and the second reuses the first's baseline confirmation runs."""
    env = {**os.environ, "RECIPE_SEARCH_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "bench/bench_quality.py", "samplers", "--budget", "tiny", "--repeats", "1",
           "--samplers", "tpe,random", "--data", str(DATA), "--out", str(tmp_path / "results")]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=1800)
    rows = [json.loads(x) for x in (tmp_path / "results" / "samplers.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["tpe", "random"]
    assert rows[0]["seed"] == rows[1]["seed"] and rows[0]["sampler_seed"] != rows[1]["sampler_seed"]
    points = [{t["point"] for t in r["search_trials"] if t["point"]} for r in rows]
    assert points[0] and points[1] and not points[0] & points[1]  # independent draws
    for r in rows:
        assert all(c["select_seeds"] == rows[0]["confirmed"]["mocov2"]["select_seeds"]
                   for c in r["confirmed"].values() if c["select_seeds"])
    s = repeat_scores(rows)
    assert s is not None and set(s["methods"]) == {"tpe", "random"}
    # run again: nothing left to do, the rows stay as they are
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=600)
    assert len((tmp_path / "results" / "samplers.jsonl").read_text().splitlines()) == 2


def test_a_sampler_run_in_one_repeat_only_leaves_the_others_compared():
    """tpe-mv joined in repeat 0 only: tpe against random is still read over both repeats, and
    tpe-mv against random over the one repeat both ran."""
    def rep(r: int, extra: bool) -> list[dict]:
        base = _c("baseline", [4, 5], [0.20, 0.22])
        rows = [_row("tpe", r, "a", {"a": _c("finalist", [4, 5], [0.30, 0.30]), "sinfonce-light": base},
                     verdict="better_than_baselines"),
                _row("random", r, None, {"b": _c("finalist", [], []), "sinfonce-light": base})]
        if extra:
            rows.append(_row("tpe-mv", r, None, {"c": _c("finalist", [], []), "sinfonce-light": base}))
        return rows

    text = "\n".join(samplers_section(rep(0, True) + rep(1, False)))
    assert "5 searches in 2 repeats (1 with every method)" in text
    assert "| tpe | 0.0 | 2 of 2 | n/a | 2 / 0 / 0 of 2 |" in text
    assert "| tpe-mv | 9.0 | 0 of 1 | n/a | 0 / 1 / 0 of 1 |" in text
    # and against the default sampler (tpe), over the one repeat both ran: tpe served its finalist, shown
    # better than the baselines (30.0), tpe-mv the baseline it tied with random on (21.0)
    assert "Against the default sampler (`tpe`), over the repeats both ran:" in text
    assert "| tpe-mv | 0 / 0 / 1 of 1 | 1.00 | n/a |" in text
    assert "Against the default" not in "\n".join(samplers_section(rep(0, False)))  # no candidate: no table


def test_the_first_measurement_of_a_recipe_and_seed_stands():
    """Two searches of a repeat report the same baseline on the same seed (one reused, or trained
    again on another machine with other last digits): the first row's value is the one used."""
    tpe = _row("tpe", 0, None, {"sinfonce-light": _c("baseline", [4, 5], [0.20, 0.22])})
    rnd = _row("random", 0, None, {"sinfonce-light": _c("baseline", [4, 5], [0.21, 0.23])})
    s = repeat_scores([tpe, rnd])
    assert s["methods"]["random"]["score"] == s["methods"]["tpe"]["score"] == pytest.approx(0.21)


def test_a_finalists_unshown_lift_says_how_many_fresh_seeds_it_would_take():
    from bench.quality_samplers import to_show
    from recipe_search.verdict.sequential import seeds_to_show

    d = {"mean": 0.027, "n": 3, "seed_se": 0.012, "image_se": 0.003, "alpha": 0.0125, "state": "futile"}
    row = {"verdict": {"comparisons": {"winner-vs-baseline": d}}}
    n = seeds_to_show(d)
    assert 3 < n < 200 and to_show(row) == f"{n} (+2.7 at 3)"
    assert to_show({"verdict": {"comparisons": {"winner-vs-baseline": {**d, "state": "rejected"}}}}) == "shown"
    assert to_show({"verdict": {"comparisons": {"winner-vs-baseline": {**d, "mean": -0.01}}}}) == "-"
    assert to_show({"verdict": {"comparisons": {"winner-vs-floor": d}}}) == "-"  # a baseline won: no such lift
    assert to_show({"verdict": {"comparisons": {"winner-vs-baseline": {**d, "image_se": 0.03}}}}) == \
        "> 200 (+2.7 at 3)"  # inside the images' noise: never shown
