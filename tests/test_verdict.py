"""The verdict on constructed confirmation results, the intervals it rests on, and what the
sampler (a real Optuna study behind our Ray searcher) is told about each kind of trial."""

from __future__ import annotations

import math

import pytest

from recipe_search.stats import paired_interval, summary, t_quantile, welch_interval
from recipe_search.verdict import BELOW_FLOOR, BETTER, NO_LIFT, RecipeRuns, decide

SEEDS = [1, 2, 3]


def runs(name, role, test, val=None):
    val = val if val is not None else test
    return RecipeRuns(name, role, {"lr": 0.1}, {s: {"test_probe_top1": t, "val_knn_top1": v, "test_knn_top1": t}
                                                 for s, t, v in zip(SEEDS, test, val)})


FLOOR = {s: {"test_probe_top1": v} for s, v in zip(SEEDS, (0.30, 0.31, 0.29))}
MOCO = runs("mocov2", "baseline", (0.40, 0.42, 0.41))
LIGHT = runs("sinfonce-light", "baseline", (0.44, 0.45, 0.43))


def test_t_quantiles_and_intervals_match_textbook_values():
    assert t_quantile(0.975, 2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(0.975, 10) == pytest.approx(2.228, abs=1e-3)
    from recipe_search.stats import _t_quantile_cornish_fisher

    assert _t_quantile_cornish_fisher(0.975, 10) == pytest.approx(2.228, abs=5e-3)
    iv = paired_interval([0.5, 0.6, 0.7], [0.4, 0.45, 0.65])
    d = summary([0.1, 0.15, 0.05])
    assert iv.mean == pytest.approx(0.1) and iv.high - iv.mean == pytest.approx(4.303 * d.std / math.sqrt(3), 1e-3)
    w = welch_interval([0.5, 0.52, 0.51], [0.40, 0.41, 0.39])
    assert w.low > 0 and w.mean == pytest.approx(0.11)
    assert paired_interval([0.5], [0.4]).low == -math.inf  # one seed: no interval


def test_a_clear_lift_is_better_than_baselines():
    tpe = runs("t1", "finalist", (0.50, 0.52, 0.51))
    v = decide([tpe, MOCO, LIGHT], FLOOR, SEEDS)
    assert v.verdict == BETTER and v.winner == "t1" and v.best_baseline == "sinfonce-light"
    assert v.lift["best_baseline"].low > 0 and v.lift["floor"].low > 0
    assert v.score.values == (0.50, 0.52, 0.51) and v.floor.mean == pytest.approx(0.30)
    assert v.line.startswith("verdict: better_than_baselines") and "paired t interval" in v.line


def test_overlapping_seeds_give_no_significant_lift():
    noisy = runs("t1", "finalist", (0.52, 0.40, 0.47))  # mean 0.463 > 0.44, but the interval holds 0
    v = decide([noisy, MOCO, LIGHT], FLOOR, SEEDS)
    assert v.winner == "t1" and v.lift["best_baseline"].low < 0 < v.lift["best_baseline"].mean
    assert v.verdict == NO_LIFT


def test_a_baseline_can_win_and_then_there_is_no_lift():
    weak = runs("t1", "finalist", (0.35, 0.36, 0.34))
    v = decide([weak, MOCO, LIGHT], FLOOR, SEEDS)
    assert v.winner == "sinfonce-light" and v.winner_role == "baseline" and v.verdict == NO_LIFT
    assert v.ranking == ["sinfonce-light", "mocov2", "t1"]


def test_below_the_floor_is_said_plainly():
    low = {s: {"test_probe_top1": 0.6} for s in SEEDS}
    v = decide([runs("t1", "finalist", (0.50, 0.52, 0.51)), MOCO, LIGHT], low, SEEDS)
    assert v.verdict == BELOW_FLOOR and "below the untrained floor" in v.line


def test_the_winner_is_chosen_on_validation_not_test():
    # t2 has the best test scores but the worse val scores: t1 wins, and its test figure is reported
    t1 = runs("t1", "finalist", (0.50, 0.50, 0.50), val=(0.6, 0.6, 0.6))
    t2 = runs("t2", "finalist", (0.70, 0.70, 0.70), val=(0.5, 0.5, 0.5))
    v = decide([t1, t2, MOCO, LIGHT], FLOOR, SEEDS)
    assert v.winner == "t1" and v.score.mean == pytest.approx(0.50)


def test_a_recipe_with_a_failed_seed_is_not_eligible():
    broken = runs("t1", "finalist", (0.90, 0.91, 0.92))
    del broken.runs[2]
    v = decide([broken, MOCO, LIGHT], FLOOR, SEEDS)
    assert v.winner == "sinfonce-light" and v.incomplete == ["t1"]
    assert decide([broken], FLOOR, SEEDS) is None


# -- what Optuna receives -----------------------------------------------------------------------


@pytest.fixture()
def searcher():
    pytest.importorskip("ray")
    import optuna
    from optuna.distributions import FloatDistribution

    from recipe_search.searcher import RecipeSearcher

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
