"""The sequential rule on constructed score sequences: its boundary, Holm across comparisons,
futility, and its error rate under the null (simulated, real code path)."""

from __future__ import annotations

import random

import pytest

from recipe_search.verdict.sequential import (FUTILE, OPEN, REJECTED, Comparison, Sequential, check_looks,
                                              nominal_level)
from recipe_search.verdict import BETTER, WB, RecipeRuns, choose, decide


def test_the_boundary_spends_alpha_over_the_looks():
    assert nominal_level((3,), 0.025) == 0.025
    two, three = nominal_level((3, 5), 0.025), nominal_level((3, 5, 8), 0.025)
    assert 0.025 > two > three > 0.025 / 3  # stricter with more looks, never as strict as Bonferroni
    assert nominal_level((3, 5, 8), 0.0125) < three
    for bad in ((), (1, 3), (3, 3), (5, 3)):
        with pytest.raises(ValueError):
            check_looks(bad)


def test_a_clear_lift_is_rejected_at_the_first_look_and_stays_rejected():
    seq = Sequential((3, 5, 8))
    d = seq.test([Comparison("a", [0.5, 0.52, 0.51], [0.40, 0.41, 0.39])])
    assert d["a"].state == REJECTED and d["a"].look == 1 and d["a"].low > 0
    d = seq.test([Comparison("a", [0.5, 0.52, 0.51, 0.3, 0.3], [0.40, 0.41, 0.39, 0.4, 0.4])])
    assert d["a"].state == REJECTED  # a rejection is final: the procedure stopped there


def test_a_noisy_zero_lift_is_futile_before_the_cap():
    seq = Sequential((3, 5, 8))
    d = seq.test([Comparison("a", [0.50, 0.40, 0.45], [0.46, 0.44, 0.45])])
    assert d["a"].state == FUTILE and d["a"].low < 0 < d["a"].high


def test_holm_passes_a_rejected_comparisons_alpha_to_the_rest():
    # 'big' and 'big2' are rejected at once; 'mid' misses alpha/3 but clears alpha: it is rejected only
    # because the others' shares come back to it (step-down)
    big = Comparison("big", [0.9, 0.91, 0.9, 0.92, 0.9], [0.1, 0.1, 0.11, 0.1, 0.1])
    big2 = Comparison("big2", [0.8, 0.81, 0.8, 0.82, 0.8], [0.1, 0.1, 0.11, 0.1, 0.1])
    rng = random.Random(1)
    for _ in range(2000):  # find a 'mid' whose p lies between the 1/3 and the full nominal level
        b = [rng.gauss(0.4, 0.02) for _ in range(5)]
        mid = Comparison("mid", [x + 0.03 + rng.gauss(0, 0.02) for x in b], b)
        if nominal_level((5,), 0.025 / 3) < mid.p_value() < nominal_level((5,), 0.025):
            break
    else:
        pytest.fail("no constructed comparison in the band")
    d = Sequential((5,)).test([big, big2, mid])
    assert d["mid"].state == REJECTED and d["mid"].alpha == pytest.approx(0.025)
    if mid.p_value() >= nominal_level((5,), 0.025 / 2):  # with an unrejectable third it keeps only alpha/2
        null = Comparison("null", [0.4, 0.41, 0.39, 0.42, 0.38], [0.41, 0.40, 0.40, 0.41, 0.39])
        d = Sequential((5,)).test([Comparison("big", big.a, big.b), mid, null])
        assert d["mid"].state != REJECTED and d["null"].state != REJECTED


def test_the_image_noise_is_paired_when_the_runs_say_which_images_they_got_right():
    """Two encoders that err on the same hard images: the difference of their accuracies varies
    far less over test images than the independence bound says; a side without per-image
    correctness (an older run) falls back to the bound; and the paired part is measured, not
    assumed (identical predictions: no image noise at all)."""
    import numpy as np

    rng = np.random.default_rng(0)
    n, seeds = 10_000, 3
    hard = rng.random(n) < 0.6  # images both get wrong
    a_bits = [~hard & (rng.random(n) < 0.9) for _ in range(seeds)]
    b_bits = [~hard & (rng.random(n) < 0.8) for _ in range(seeds)]
    a, b = [float(x.mean()) for x in a_bits], [float(x.mean()) for x in b_bits]
    paired = Comparison("p", a, b, n, a_bits, b_bits)
    bound = Comparison("b", a, b, n)
    older = Comparison("o", a, b, n, a_bits, None)
    assert (paired.image_method, bound.image_method, older.image_method) == ("paired", "bound", "bound")
    assert Comparison("z", a, b, 0, a_bits, b_bits).image_method == "none"
    assert Comparison("w", a, b, n, a_bits, [x[:-1] for x in b_bits]).image_method == "bound"  # other images
    d = np.mean([x.astype(float) - y.astype(float) for x, y in zip(a_bits, b_bits)], axis=0)
    assert paired.image_var == pytest.approx(d.var(ddof=1) / n)
    assert older.image_var == bound.image_var
    assert paired.image_var < 0.6 * bound.image_var  # the shared hard images cancel
    assert Comparison("s", a, a, n, a_bits, a_bits).image_var == 0.0
    decision = Sequential((3,)).test([paired])["p"]
    assert decision.image_method == "paired" and decision.image_se == pytest.approx(paired.image_var ** 0.5)
    assert decision.to_dict()["image_method"] == "paired"
    assert decision.image_se_bound == pytest.approx(bound.image_var ** 0.5)
    assert decision.image_se_bound > decision.image_se


def test_the_family_wise_error_under_the_null_is_at_most_alpha():
    """1,000 A/A sequences through the real procedure (looks 3, 5, 8; winner and baseline the same
    recipe; both clearly above the floor): 'better_than_baselines' in at most 2.5 % + MC error."""
    rng = random.Random(0)
    better = 0
    n_sim = 1000
    for _ in range(n_sim):
        seeds = list(range(10, 18))
        a = [rng.gauss(0.24, 0.03) for _ in seeds]
        b = [rng.gauss(0.24, 0.03) for _ in seeds]
        floor = {s: {"test_probe_top1": rng.gauss(0.17, 0.01)} for s in seeds}
        sel = choose([RecipeRuns("t1", "finalist", {}, {1: {"val_knn_top1": 0.3}, 2: {"val_knn_top1": 0.3}}),
                      RecipeRuns("base", "baseline", {}, {1: {"val_knn_top1": 0.2}, 2: {"val_knn_top1": 0.2}})],
                     [1, 2])
        report = [RecipeRuns("t1", "finalist", {}, {s: {"test_probe_top1": x} for s, x in zip(seeds, a)}),
                  RecipeRuns("base", "baseline", {}, {s: {"test_probe_top1": x} for s, x in zip(seeds, b)})]
        v = decide(sel, report, floor, seeds, (3, 5, 8), n_images=10000)
        better += v.verdict == BETTER
        assert v.decided and v.comparisons[WB].state in (OPEN, REJECTED, FUTILE)
    se = (0.025 * 0.975 / n_sim) ** 0.5
    assert better / n_sim <= 0.025 + 3 * se, better


def test_seeds_to_show_a_lift_turn_the_detectable_lift_around():
    """The fewest fresh seeds whose detectable lift (one look, the comparison's level, its spread) is
    at most the lift measured: a larger lift or a smaller spread needs fewer; the images' part does
    not shrink with seeds, so a lift inside it is never shown; no positive lift, nothing to show."""
    from recipe_search.verdict.sequential import POWER, SHOW_CAP, seeds_to_show, t_crit

    b = [0.40, 0.43, 0.38]
    noisy = Comparison("n", [x + d for x, d in zip(b, (0.06, -0.02, 0.04))], b)
    d = Sequential((3, 5, 8)).test([noisy])["n"]
    assert d.state == FUTILE and d.mean > 0
    n = seeds_to_show(d)
    se = lambda k: (d.seed_se ** 2 * d.n / k + d.image_se ** 2) ** 0.5  # noqa: E731
    assert (t_crit(d.alpha, n - 1) + t_crit(1 - POWER, n - 1)) * se(n) <= d.mean  # enough at n
    assert (t_crit(d.alpha, n - 2) + t_crit(1 - POWER, n - 2)) * se(n - 1) > d.mean  # not at n - 1
    bigger = Sequential((3, 5, 8)).test([Comparison("n", [x + 0.03 for x in noisy.a], b)])["n"]
    assert seeds_to_show(bigger) < n
    images = Sequential((3, 5, 8)).test([Comparison("i", noisy.a, b, n_images=200)])["i"]
    assert images.image_se > 0.02 and seeds_to_show(images) is None  # the images' noise alone hides it
    assert seeds_to_show(images, cap=SHOW_CAP) is None
    worse = Sequential((3, 5, 8)).test([Comparison("w", [x - 0.05 for x in noisy.a], b)])["w"]
    assert worse.mean < 0 and seeds_to_show(worse) is None
