"""The verdict on constructed confirmation results, the intervals it rests on, and what the
sampler (a real Optuna study behind our Ray searcher) is told about each kind of trial."""

from __future__ import annotations

import math

import pytest

from recipe_search.verdict.stats import paired_interval, summary, t_quantile, welch_interval
from recipe_search.verdict import BELOW_FLOOR, BETTER, NO_LIFT, WB, WF, RecipeRuns, choose, decide

SELECT = [1, 2, 3]
REPORT = [4, 5, 6, 7, 8]
LOOKS = (3, 5)


def val_runs(name, role, val):
    return RecipeRuns(name, role, {"lr": 0.1}, {s: {"val_knn_top1": v} for s, v in zip(SELECT, val)})


def report_runs(name, role, test):
    return RecipeRuns(name, role, {"lr": 0.1}, {s: {"test_probe_top1": t, "val_knn_top1": t, "test_knn_top1": t}
                                                 for s, t in zip(REPORT, test)})


def floor_of(*vals):
    return {s: {"test_probe_top1": v} for s, v in zip(REPORT, vals)}


FLOOR = floor_of(0.30, 0.31, 0.29, 0.30, 0.31)
SEL = [val_runs("t1", "finalist", (0.5, 0.5, 0.5)), val_runs("mocov2", "baseline", (0.40, 0.41, 0.40)),
       val_runs("sinfonce-light", "baseline", (0.45, 0.46, 0.44))]


def verdict_for(winner_test, baseline_test, floor=FLOOR, selection=SEL, looks=LOOKS, n_images=0):
    sel = choose(selection, SELECT)
    report = [report_runs(sel.winner, sel.winner_role, winner_test)]
    if sel.reference and sel.winner_role == "finalist":
        report.append(report_runs(sel.reference, "baseline", baseline_test))
    return decide(sel, report, floor, REPORT, looks, n_images=n_images)


def test_t_quantiles_and_intervals_match_textbook_values():
    assert t_quantile(0.975, 2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(0.975, 10) == pytest.approx(2.228, abs=1e-3)
    from recipe_search.verdict.stats import _t_quantile_cornish_fisher

    assert _t_quantile_cornish_fisher(0.975, 10) == pytest.approx(2.228, abs=5e-3)
    iv = paired_interval([0.5, 0.6, 0.7], [0.4, 0.45, 0.65])
    d = summary([0.1, 0.15, 0.05])
    assert iv.mean == pytest.approx(0.1) and iv.high - iv.mean == pytest.approx(4.303 * d.std / math.sqrt(3), 1e-3)
    w = welch_interval([0.5, 0.52, 0.51], [0.40, 0.41, 0.39])
    assert w.low > 0 and w.mean == pytest.approx(0.11)
    assert paired_interval([0.5], [0.4]).low == -math.inf  # one seed: no interval


def test_the_winner_is_chosen_on_validation_and_reported_on_other_seeds():
    sel = choose(SEL, SELECT)
    assert (sel.winner, sel.reference, sel.report_names) == ("t1", "sinfonce-light", ["t1", "sinfonce-light"])
    v = verdict_for((0.50, 0.52, 0.51, 0.5, 0.5), (0.40, 0.41, 0.39, 0.4, 0.4))
    assert v.verdict == BETTER and v.served == "t1" and v.stop == "decided"
    assert set(v.seeds).isdisjoint(v.selection.seeds) and v.seeds == REPORT[:3]  # decided at the first look
    assert v.lift["best_baseline"].low > 0 and v.lift["floor"].low > 0
    assert v.line.startswith("verdict: better_than_baselines") and "served: t1" in v.line


def test_the_report_seeds_never_overlap_the_select_seeds_or_the_search_seed():
    from recipe_search.verdict.confirm import confirmation_seeds, report_seeds

    for search_seed in (0, 7, 100):
        sel, rep = confirmation_seeds(search_seed, 3), report_seeds(search_seed, 3, 12)
        assert not set(sel) & set(rep) and search_seed not in sel + rep and len(set(rep)) == 12


def test_selection_never_reads_a_test_metric():
    # t2 has the best test scores and the worse val scores: t1 wins
    sel = choose([val_runs("t1", "finalist", (0.6, 0.6, 0.6)), val_runs("t2", "finalist", (0.5, 0.5, 0.5)),
                  val_runs("mocov2", "baseline", (0.4, 0.4, 0.4))], SELECT)
    assert sel.winner == "t1"
    with pytest.raises(KeyError):  # select runs carry no test metric, and choose() never asks for one
        sel_runs = val_runs("x", "finalist", (0.1, 0.1, 0.1))
        sel_runs.values("test_probe_top1", SELECT)


def test_noisy_lift_over_the_baseline_serves_the_baseline_beside_the_candidate():
    v = verdict_for((0.52, 0.40, 0.47, 0.50, 0.43), (0.44, 0.45, 0.43, 0.44, 0.45))
    assert v.verdict == NO_LIFT and v.lift["best_baseline"].low < 0
    assert v.lift["baseline_floor"].low > 0
    assert (v.served, v.served_role) == ("sinfonce-light", "baseline")


def test_nothing_is_served_when_nothing_clears_the_floor():
    v = verdict_for((0.33, 0.28, 0.32, 0.29, 0.33), (0.31, 0.29, 0.30, 0.32, 0.28))
    assert v.verdict == NO_LIFT and v.served is None and "served: nothing" in v.line


def test_a_baseline_winner_is_served_only_when_it_clears_the_floor():
    weak = [val_runs("t1", "finalist", (0.3, 0.3, 0.3))] + SEL[1:]
    v = verdict_for((0.44, 0.45, 0.43, 0.44, 0.45), None, selection=weak)
    assert v.winner == "sinfonce-light" and v.winner_role == "baseline" and v.verdict == NO_LIFT
    assert v.served == "sinfonce-light" and list(v.comparisons) == [WF]
    v = verdict_for((0.33, 0.28, 0.32, 0.29, 0.33), None, selection=weak)
    assert v.served is None


def test_below_the_floor_is_said_plainly_and_serves_nothing():
    v = verdict_for((0.50, 0.52, 0.51, 0.5, 0.5), (0.40, 0.41, 0.39, 0.4, 0.4), floor=floor_of(*[0.6] * 5))
    assert v.verdict == BELOW_FLOOR and v.served is None and "below the untrained floor" in v.line


def test_a_recipe_with_a_failed_select_seed_is_not_eligible():
    broken = val_runs("t1", "finalist", (0.90, 0.91, 0.92))
    del broken.runs[2]
    sel = choose([broken] + SEL[1:], SELECT)
    assert sel.winner == "sinfonce-light" and sel.incomplete == ["t1"]
    assert choose([broken], SELECT) is None


def test_a_missing_report_seed_leaves_the_verdict_at_the_last_complete_look():
    sel = choose(SEL, SELECT)
    win = report_runs("t1", "finalist", (0.50, 0.40, 0.47, 0.52, 0.43))
    ref = report_runs("sinfonce-light", "baseline", (0.44, 0.45, 0.43, 0.44, 0.45))
    del win.runs[REPORT[3]]
    v = decide(sel, [win, ref], FLOOR, REPORT, LOOKS)
    assert v.seeds == REPORT[:3] and v.stop in ("more_seeds", "futile", "decided")
    del win.runs[REPORT[0]]
    assert decide(sel, [win, ref], FLOOR, REPORT, LOOKS) is None


def test_image_noise_widens_the_interval():
    a = verdict_for((0.50, 0.52, 0.51, 0.5, 0.5), (0.40, 0.41, 0.39, 0.4, 0.4))
    b = verdict_for((0.50, 0.52, 0.51, 0.5, 0.5), (0.40, 0.41, 0.39, 0.4, 0.4), n_images=100)
    wa, wb = a.comparisons[WB], b.comparisons[WB]
    assert wb.image_se > 0 == wa.image_se and (wb.high - wb.low) > (wa.high - wa.low)
    assert b.comparisons[WB].image_se == pytest.approx(math.sqrt((0.506 * 0.494 + 0.4 * 0.6) / 100), rel=0.02)


def test_the_verdict_pairs_the_image_noise_of_runs_that_recorded_their_images():
    """Winner, baseline and floor with per-image correctness at every report seed: every declared
    comparison's image noise is paired (narrower than the bound); the floor without it leaves the
    two floor comparisons on the bound and the winner-vs-baseline one paired."""
    import numpy as np
    import torch

    from trainer.per_image import KEY, encode

    rng = np.random.default_rng(1)
    hard = rng.random(100) < 0.5
    bits = lambda p: [~hard & (rng.random(100) < p) for _ in REPORT]  # noqa: E731
    win_b, ref_b, flo_b = bits(0.99), bits(0.8), bits(0.6)
    sel = choose(SEL, SELECT)
    win, ref = (report_runs("t1", "finalist", [float(x.mean()) for x in win_b]),
                report_runs("sinfonce-light", "baseline", [float(x.mean()) for x in ref_b]))
    win.correct, ref.correct = dict(zip(REPORT, win_b)), dict(zip(REPORT, ref_b))
    floor = {s: {"test_probe_top1": float(x.mean()), KEY: encode(torch.from_numpy(x))} for s, x in zip(REPORT, flo_b)}
    paired = decide(sel, [win, ref], floor, REPORT, LOOKS, n_images=100)
    assert {d.image_method for d in paired.comparisons.values()} == {"paired"}
    plain = {s: {"test_probe_top1": v["test_probe_top1"]} for s, v in floor.items()}
    mixed = decide(sel, [win, ref], plain, REPORT, LOOKS, n_images=100)
    assert {k: d.image_method for k, d in mixed.comparisons.items()} == {
        WB: "paired", WF: "bound", "baseline-vs-floor": "bound"}
    assert mixed.comparisons[WF].image_se > paired.comparisons[WF].image_se


# -- what Optuna receives -----------------------------------------------------------------------


@pytest.fixture()
def searcher():
    pytest.importorskip("ray")
    import optuna
    from optuna.distributions import FloatDistribution

    from recipe_search.tune.searcher import RecipeSearcher

    space = {"lr": FloatDistribution(0.01, 1.0, log=True)}
    s = RecipeSearcher(space=space, metric="objective", mode="max",
                       sampler=optuna.samplers.RandomSampler(seed=0),
                       baselines=[("mocov2", None), ("sinfonce-light", {"lr": 0.06})])
    return s


def _by_number(searcher):
    return {t.number: t for t in searcher._ot_study.trials}


def test_the_sampler_sees_every_trial_on_one_objective(searcher):
    from optuna.trial import TrialState

    # the baselines come first, as themselves, not as sampled points
    assert searcher.suggest("b1") == {"baseline": "mocov2"}
    assert searcher.suggest("b2") == {"baseline": "sinfonce-light"}
    for tid in ("done", "stopped", "diverged", "failed"):
        assert "lr" in searcher.suggest(tid)
    for epoch, v in ((1, 0.30), (2, 0.35)):
        for tid in ("done", "stopped", "b1", "b2"):
            searcher.on_trial_result(tid, {"objective": v, "epoch": epoch, "training_iteration": epoch})
    searcher.on_trial_result("done", {"objective": 0.41, "final": 1.0, "epoch": 2, "training_iteration": 3})
    searcher.on_trial_complete("done", {"objective": 0.41, "final": 1.0})
    searcher.on_trial_complete("stopped", {"objective": 0.35, "epoch": 2})  # ASHA stopped it: no final report
    searcher.on_trial_complete("diverged", {"objective": 0.0, "final": 1.0, "diverged": 1.0})
    searcher.on_trial_complete("failed", None, error=True)
    searcher.on_trial_complete("b1", {"objective": 0.38, "final": 1.0})  # mocov2: outside the space
    searcher.on_trial_complete("b2", {"objective": 0.40, "final": 1.0})

    trials = searcher._ot_study.trials
    seen = {(t.state, t.value, tuple(sorted(t.intermediate_values.values()))) for t in trials}
    assert (TrialState.COMPLETE, 0.41, (0.30, 0.35)) in seen             # finished: its final val score
    # stopped: PRUNED with its curve (Optuna keeps the last intermediate value as its value)
    assert (TrialState.PRUNED, 0.35, (0.30, 0.35)) in seen
    assert (TrialState.COMPLETE, 0.0, ()) in seen                        # diverged: the worst value
    assert (TrialState.FAIL, None, ()) in seen                           # failed
    told = [t for t in trials if t.params == {"lr": 0.06}]               # sinfonce-light at its own lr
    assert len(told) == 1 and told[0].state == TrialState.COMPLETE and told[0].value == 0.40
    assert len(trials) == 5  # mocov2 (a plain head outside this space) was never told


def test_a_finalist_above_the_floor_without_a_reference_baseline_is_no_lift_and_nothing_is_served():
    """Every baseline failed on the select seeds (no val figure): the finalist is reported against
    the floor alone; clearly above it, the verdict still cannot claim a lift over baselines that
    never finished, and serves nothing."""
    failed = [RecipeRuns("mocov2", "baseline", {"lr": 0.1}, {}),
              RecipeRuns("sinfonce-light", "baseline", {"lr": 0.1}, {})]
    v = verdict_for((0.60, 0.62, 0.61, 0.60, 0.62), None, selection=[SEL[0], *failed])
    assert v.selection.reference is None and v.winner == "t1"
    assert v.lift["floor"].low > 0 and WB not in v.comparisons
    assert (v.verdict, v.served) == (NO_LIFT, None)


def test_a_lift_not_shown_says_how_many_fresh_seeds_showing_it_would_take():
    """The verdict line of a confirmation that ended without showing a positive lift says what
    showing it would take (seeds_to_show); a shown lift, or a negative one, says nothing of it."""
    from recipe_search.verdict.sequential import seeds_to_show

    v = verdict_for((0.50, 0.44, 0.47, 0.52, 0.43), (0.44, 0.45, 0.43, 0.44, 0.45))
    c = v.comparisons[WB]
    assert v.stop != "more_seeds" and c.state != "rejected" and c.mean > 0
    n = seeds_to_show(c)
    assert n is not None and n > len(v.seeds)
    assert f"its measured {c.mean:+.3f} would take about {n} fresh report seeds to show (80 % power)" in v.line
    assert v.to_dict()["comparisons"][WB]["seeds_to_show"] == n  # in verdict.json, the provenance and the API
    shown = verdict_for((0.50, 0.52, 0.51, 0.5, 0.5), (0.40, 0.41, 0.39, 0.4, 0.4))
    assert shown.comparisons[WB].state == "rejected" and shown.to_show() is None and "would take" not in shown.line
    worse = verdict_for((0.40, 0.41, 0.39, 0.40, 0.42), (0.44, 0.45, 0.43, 0.44, 0.45))
    assert worse.to_show() is None
