"""bench/quality_report.py: the statistics behind docs/results.md, and that the committed
docs/results.md is what ``bench/bench_quality.py report`` makes from the committed raw results."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.quality_report import search_section, write_report
from bench.quality_stats import rank_correlations

ROOT = Path(__file__).resolve().parents[1]


def test_rank_correlations_of_a_monotone_and_a_reversed_ranking():
    x = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    same = rank_correlations(x, [v ** 3 for v in x])  # monotone, not linear: ranks agree exactly
    assert same["spearman"] == pytest.approx(1.0) and same["kendall"] == pytest.approx(1.0)
    assert same["spearman_ci"] == pytest.approx((1.0, 1.0))
    rev = rank_correlations(x, [-v for v in x])
    assert rev["spearman"] == pytest.approx(-1.0) and rev["kendall_ci"][1] == pytest.approx(-1.0)
    assert same["n"] == rev["n"] == len(x)


def test_rank_correlation_interval_covers_the_estimate_and_widens_with_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    weak = rank_correlations(x, x + rng.normal(scale=2.0, size=12))
    strong = rank_correlations(x, x + rng.normal(scale=0.2, size=12))
    for c in (weak, strong):
        for k in ("spearman", "kendall"):
            lo, hi = c[f"{k}_ci"]
            assert -1.0 <= lo <= c[k] <= hi <= 1.0
    width = lambda c: c["spearman_ci"][1] - c["spearman_ci"][0]  # noqa: E731
    assert width(weak) > width(strong)
    y = x + rng.normal(size=12)
    assert rank_correlations(x, y, seed=1) == rank_correlations(x, y, seed=1)  # seeded: the report is repeatable


def _row(repeat, method, score, winner, finalist_test):
    return {"repeat": repeat, "method": method, "trials": 10 if method == "tpe-asha" else 6, "trial_epochs": 48,
            "wall_s": 1800, "verdict": {"score": {"mean": score, "std": 0.02, "values": [score - 0.02, score + 0.02]},
                                        "floor": {"mean": 0.15, "std": 0.01, "values": [0.14, 0.16]},
                                        "winner": winner, "verdict": "no_significant_lift"},
            "confirmed": {f"{method}-{repeat}": {"role": "finalist", "val_knn_top1": [0.2, 0.21, 0.19],
                                                 "test_probe_top1": finalist_test}}}


def test_search_section_counts_wins_ties_and_says_when_incomplete(tmp_path):
    rows = [_row(0, "tpe-asha", 0.25, "a", [0.25, 0.26, 0.24]), _row(0, "random", 0.22, "b", [0.20, 0.21, 0.22]),
            _row(1, "tpe-asha", 0.21, "base", [0.30, 0.30, 0.30]), _row(1, "random", 0.21, "base", [0.10, 0.1, 0.1])]
    text = "\n".join(search_section(rows, tmp_path))
    assert "Over 2 repeat(s)" in text and "TPE+ASHA wins 1 of 2 (1 tied" in text
    assert "paired difference +1.5" in text  # (3 + 0) / 2 points
    assert "TPE+ASHA's is higher in 2 of 2" in text
    assert "**Incomplete**: 2 of the 3 repeats" in text
    rows += [_row(2, "tpe-asha", 0.20, "c", [0.2, 0.2, 0.2]), _row(2, "random", 0.24, "d", [0.3, 0.3, 0.3])]
    text = "\n".join(search_section(rows, tmp_path))
    assert "TPE+ASHA wins 1 of 3" in text and "higher in 2 of 3" in text and "Incomplete" not in text
    assert (tmp_path / "search_vs_random.png").stat().st_size > 0 and "search_vs_random.png)" in text
    # a repeat with only one of the two searches finished is listed but not compared
    text = "\n".join(search_section(rows + [_row(3, "tpe-asha", 0.3, "e", [0.3, 0.3, 0.3])], tmp_path))
    assert "| 3 | tpe-asha |" in text and "Over 3 repeat(s)" in text


def test_committed_results_md_is_regenerated_from_the_committed_raw_results(tmp_path):
    """Editing docs/results/*.jsonl or reading.md without ``bench/bench_quality.py report`` fails here."""
    results = tmp_path / "results"
    shutil.copytree(ROOT / "docs" / "results", results)
    write_report(results, tmp_path / "results.md")
    assert (tmp_path / "results.md").read_text() == (ROOT / "docs" / "results.md").read_text(), (
        "docs/results.md is stale: run `python bench/bench_quality.py report`")


def test_asha_check_uses_the_random_search_as_the_counterfactual_of_a_stopped_trial(tmp_path):
    def trial(name, point, status, curve):
        return {"name": name, "point": point, "status": status, "val_knn": curve}

    tpe = {**_row(0, "tpe-asha", 0.25, "a", [0.25]), "search_trials": [
        trial("mocov2", None, "completed", [0.1, 0.12, 0.13]),
        trial("t1", '{"lr": 1}', "pruned", [0.10]),            # would have ended at 0.30: above the carried 0.20
        trial("t2", '{"lr": 2}', "pruned", [0.15]),            # would have ended at 0.10
        trial("t3", '{"lr": 3}', "completed", [0.12, 0.16, 0.20]),
        trial("t4", '{"lr": 4}', "pruned", [0.05])]}            # not trained by the random search
    rnd = {**_row(0, "random", 0.22, "b", [0.22]), "search_trials": [
        trial("r1", '{"lr": 1}', "completed", [0.10, 0.2, 0.30]),
        trial("r2", '{"lr": 2}', "completed", [0.14, 0.12, 0.10])]}  # differs before the stop: not deterministic
    text = "\n".join(search_section([tpe, rnd], tmp_path))
    assert "in 1 of 2 cases the two curves are identical up to the stop" in text
    assert "| 0 | `t1` | 1 | 10.0 | 30.0 (epoch 3) | 20.0 | **yes** |" in text
    assert "| 0 | `t2` | 1 | 15.0 | 10.0 (epoch 3) | 20.0 | no |" in text and "`t4`" not in text
    assert "1 of the 2 stopped recipes would have finished above" in text


def test_the_same_sampled_recipe_under_two_trial_ids_is_a_tie(tmp_path):
    """Trial ids differ between searches; a searched winner is identified by its sampled point."""
    point = '{"lr": 0.05}'
    tpe = {**_row(0, "tpe-asha", 0.25, "t9", [0.25, 0.25]), "search_trials": [
        {"name": "t9", "point": point, "status": "completed", "val_knn": [0.2]}]}
    rnd = {**_row(0, "random", 0.25, "r4", [0.25, 0.25]), "search_trials": [
        {"name": "r4", "point": point, "status": "completed", "val_knn": [0.2]}]}
    tpe["confirmed"] = {"t9": tpe["confirmed"].pop("tpe-asha-0")}
    rnd["confirmed"] = {"r4": rnd["confirmed"].pop("random-0")}
    text = "\n".join(search_section([tpe, rnd], tmp_path))
    assert "TPE+ASHA wins 0 of 1 (1 tied" in text
    assert "in 1 both finalists are the same recipe" in text
    other = {**rnd, "search_trials": [{"name": "r4", "point": '{"lr": 0.1}', "status": "completed", "val_knn": [0.2]}]}
    assert "tied" not in "\n".join(search_section([tpe, other], tmp_path))
