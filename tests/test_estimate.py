"""The plan's wall-time estimate (recipe_search/search/estimate.py): the cost model's arithmetic, and
the rates measured by a real short training on real CIFAR-10 images."""

from __future__ import annotations

import math

import pytest

from recipe_search.search.estimate import (SEARCH_START_S, START_S, Rates, estimate, expected_epochs,
                                           expected_seeds, measure, run_seconds)

SIZES = {"classes": 10, "train": 2000, "val": 1000, "test": 10000}


def test_expected_epochs_under_asha():
    # cpu budget: rungs at 2 and 6 of 8 epochs, reduction factor 3
    assert expected_epochs(8, 2, 3) == pytest.approx(2 + 4 / 3 + 2 / 9)
    # smoke budget: rungs at 1 and 2 of 3 epochs, reduction factor 2
    assert expected_epochs(3, 1, 2) == pytest.approx(1 + 1 / 2 + 1 / 4)
    assert expected_epochs(8, None, 3) == expected_epochs(8, 8, 3) == expected_epochs(8, 20, 3) == 8.0
    assert expected_epochs(8, None, 3, sampled=8, baselines=2) == 8.0


def _ray_asha_epochs(max_t: int, grace: int, rf: int, baselines: int, sampled: int, sims: int, seed: int) -> float:
    """Ray's own ASHAScheduler (the class a search runs, driven without a cluster): the baselines report
    first and are never stopped, then each sampled trial reports epoch by epoch until it is told STOP;
    scores are exchangeable and a trial keeps its score at every rung."""
    import random
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    rng, total = random.Random(seed), 0
    for s in range(sims):
        sched = ASHAScheduler(time_attr="epoch", metric="obj", mode="max", max_t=max_t, grace_period=grace,
                              reduction_factor=rf, stop_last_trials=False)
        trials = [SimpleNamespace(trial_id=f"{s}-{i}", config={}) for i in range(baselines + sampled)]
        for t in trials:
            sched.on_trial_add(None, t)
        for i, t in enumerate(trials):
            score = rng.random()
            for epoch in range(1, max_t + 1):
                action = sched.on_trial_result(None, t, {"epoch": epoch, "obj": score})
                if i >= baselines:
                    total += 1
                    if action == TrialScheduler.STOP:
                        break
    return total / (sims * sampled)


@pytest.mark.parametrize("max_t,grace,rf,baselines,sampled", [(8, 2, 3, 2, 8), (3, 1, 2, 2, 4), (30, 5, 3, 2, 12)])
def test_expected_epochs_of_a_small_search_follow_rays_own_asha(max_t, grace, rf, baselines, sampled):
    """A small search promotes more than 1/rf of its trials (the first at a rung always goes on, the
    unselected baselines are easy to beat at the later rungs): the model agrees with Ray's scheduler
    to within the Monte Carlo error of 1,000 simulated searches (SE about 1 % of the figure) and the
    model's own 2,000, and not with the large-search limit."""
    ray = _ray_asha_epochs(max_t, grace, rf, baselines, sampled, sims=1000, seed=1)
    model = expected_epochs(max_t, grace, rf, sampled=sampled, baselines=baselines)
    assert model == pytest.approx(ray, rel=0.035)
    assert model > expected_epochs(max_t, grace, rf) + 0.15


def test_the_report_phase_costs_its_expected_seeds():
    assert expected_seeds((3, 5, 8)) == 3.0  # no share: the first look
    assert expected_seeds((3, 5, 8), (0.19, 0.47, 0.34)) == pytest.approx(0.19 * 3 + 0.47 * 5 + 0.34 * 8)
    assert expected_seeds((3, 5, 8), (0.5,)) == pytest.approx(0.5 * 3 + 0.5 * 8)  # the rest at the last look
    assert expected_seeds((3, 5), (1.0,)) == 3.0


def test_a_run_costs_its_start_epochs_monitor_and_final_evaluation():
    r = Rates(images_per_sec=200.0, eval_s_per_image=0.001, probe_s_per_image=0.0005)
    epoch = 2000 / 200 + 0.001 * (2 * 2000 + 1000)  # training, then precise BN + train and val features
    assert run_seconds(r, SIZES, 8, test=False) == pytest.approx(START_S + 8 * epoch + 0.0005 * 2000)
    # a confirmation run monitors its last epoch only: seven monitors fewer
    assert run_seconds(r, SIZES, 8, test=False) - run_seconds(r, SIZES, 8, test=False, monitored=1) == pytest.approx(
        7 * 0.001 * (2 * 2000 + 1000))
    # a confirmation run also re-estimates BN and extracts the test features
    assert run_seconds(r, SIZES, 8, test=True) - run_seconds(r, SIZES, 8, test=False) == pytest.approx(
        0.001 * (2000 + 10000))


def test_the_estimate_counts_baselines_in_full_and_the_report_phase_between_its_looks():
    r = Rates(images_per_sec=200.0, eval_s_per_image=0.001)
    kw = dict(rates=r, sizes=SIZES, num_samples=10, baselines=2, max_epochs=8, select_jobs=9, report_looks=(3, 5, 8),
              device="cpu", cpus_per_trial=1, gpus_per_trial=0, grace_period=2, reduction_factor=3)
    one, two = estimate(concurrency=1, **kw), estimate(concurrency=2, **kw)
    full = run_seconds(r, SIZES, 8, test=False)
    sampled = run_seconds(r, SIZES, expected_epochs(8, 2, 3, sampled=8, baselines=2), test=False)
    assert one.search_s == pytest.approx(2 * full + 8 * sampled)
    assert one.search_max_s == pytest.approx(10 * full)
    assert two.search_s == pytest.approx(one.search_s / 2)
    assert one.confirm_s < one.confirm_max_s  # the first look against the last
    assert one.total_s == pytest.approx(one.search_s + one.confirm_s + SEARCH_START_S)
    assert "at most" in one.lines[2] and "confirmation <= 25 runs" in one.lines[0]
    m = one.metrics()
    assert m["estimate_s"] == one.total_s and m["estimate_max_s"] == one.total_max_s
    # the budget's share of verdicts decided at each look: 5.6 expected seeds instead of the first look's 3
    shared = estimate(concurrency=1, report_stop_share=(0.19, 0.47, 0.34), **kw)
    per_seed = (one.confirm_max_s - one.confirm_s) / (8 - 3)
    assert shared.confirm_s - one.confirm_s == pytest.approx((expected_seeds((3, 5, 8), (0.19, 0.47, 0.34)) - 3)
                                                             * per_seed)
    assert shared.search_s == one.search_s and shared.confirm_max_s == one.confirm_max_s
    # the warm start's points run to the end like the baselines, and reach every rung: the rest are fewer
    warm = estimate(concurrency=1, kept=3, **kw)
    rest = run_seconds(r, SIZES, expected_epochs(8, 2, 3, sampled=5, baselines=5), test=False)
    assert warm.search_s == pytest.approx(5 * full + 5 * rest) and warm.search_max_s == one.search_max_s
    assert warm.confirm_s == one.confirm_s


def test_one_sided_baselines_cost_at_their_own_rate():
    r = Rates(images_per_sec=200.0, eval_s_per_image=0.001, one_sided_images_per_sec=400.0, cold_s=0.5)
    both = run_seconds(r, SIZES, 8, test=False)
    assert both - run_seconds(r, SIZES, 8, test=False, symmetric=False) == pytest.approx(8 * (2000 / 200 - 2000 / 400))
    assert both == pytest.approx(START_S + 0.5 + 8 * (2000 / 200 + 0.001 * 5000))  # the cold start counts once
    kw = dict(rates=r, sizes=SIZES, num_samples=10, baselines=2, max_epochs=8, select_jobs=9, report_looks=(3, 5, 8),
              device="cpu", cpus_per_trial=1, gpus_per_trial=0, grace_period=2, reduction_factor=3, concurrency=1,
              select_seeds=3)
    none, one = estimate(**kw), estimate(one_sided_baselines=1, **kw)
    saved = both - run_seconds(r, SIZES, 8, test=False, symmetric=False)
    assert none.search_s - one.search_s == pytest.approx(saved)  # one baseline in the search
    assert none.search_max_s - one.search_max_s == pytest.approx(saved)
    # three select seeds of it, and half the reference's cost at each report look
    assert none.confirm_s - one.confirm_s == pytest.approx(3 * saved + 3 * saved / 2)
    assert Rates(100.0, 0.001).rate(False) == 100.0  # not measured: the symmetric rate


def test_measure_reads_real_rates_from_a_short_training(cifar10_tarball, cifar_cache_dir):
    from trainer import DataSpec, load_proxy

    from recipe_search.baselines import by_name
    from recipe_search.compose import compose

    spec = DataSpec(dataset="cifar10", root=str(cifar10_tarball), classes=4, train_per_class=16, val_per_class=16,
                    test_per_class=1, cache_dir=str(cifar_cache_dir))
    proxy = load_proxy(spec, 32, seed=0)
    recipe = compose(dict(by_name("sinfonce-light").values), backbone="mobilenetv3_small_050", image_size=32,
                     epochs=1, seed=0)[0]
    r = measure(recipe.replace(batch_size=16), proxy, "cpu", threads=1, batches=2)
    assert r.images_per_sec > 0 and math.isfinite(r.images_per_sec)
    # sinfonce-light's loss is symmetric: its one-sided variant, one pass per pair, trains faster
    assert r.one_sided_images_per_sec > r.images_per_sec
    assert r.rate(False) == r.one_sided_images_per_sec and r.rate(True) == r.images_per_sec
    assert r.cold_s >= 0
    assert 0 < r.eval_s_per_image < 1 / r.images_per_sec  # a forward pass costs less than a training image
    assert r.probe_s_per_image >= 0
