"""The prior-guided sampler (recipe_search/incumbent.py) on real Optuna studies: trials near the
incumbent, TPE's otherwise, and the registry entries that name it."""

from __future__ import annotations

import math

import optuna
import pytest

from recipe_search.errors import SearchError
from recipe_search.incumbent import IncumbentSampler
from recipe_search.samplers import SAMPLERS, get_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space(trial) -> float:
    lr = trial.suggest_float("lr", 0.01, 1.0, log=True)
    t = trial.suggest_float("temperature", 0.05, 0.5)
    k = trial.suggest_int("smoothing_k", 0, 64)
    head = trial.suggest_categorical("proj_hidden_dim", [256, 512, 1024, 2048])
    return -abs(math.log(lr / 0.1)) - abs(t - 0.2) - abs(k - 16) / 64 - (head != 1024)


def study_with(sampler, incumbent: dict | None = None):
    study = optuna.create_study(direction="maximize", sampler=sampler)
    if incumbent is not None:  # what a baseline told to the study looks like
        study.enqueue_trial(incumbent)
        study.optimize(space, n_trials=1)
    return study


def test_every_trial_near_the_incumbent_when_the_share_is_one():
    inc = {"lr": 0.1, "temperature": 0.2, "smoothing_k": 16, "proj_hidden_dim": 1024}
    study = study_with(IncumbentSampler(optuna.samplers.RandomSampler(seed=0), share=1.0, radius=0.05, seed=0), inc)
    study.optimize(space, n_trials=40)
    trials = study.trials[1:]
    assert all(0.01 <= t.params["lr"] <= 1.0 and 0.05 <= t.params["temperature"] <= 0.5 for t in trials)
    # within a few radii of the incumbent (the incumbent moves only to better points, nearby)
    assert max(abs(math.log(t.params["lr"] / 0.1)) for t in trials) < 1.5
    assert max(abs(t.params["temperature"] - 0.2) for t in trials) < 0.15
    assert all(isinstance(t.params["smoothing_k"], int) for t in trials)
    kept = sum(t.params["proj_hidden_dim"] == 1024 for t in trials)
    assert kept >= 30  # kept with probability 1 - radius (or redrawn as 1024)
    # random search over the same space strays far
    rnd = study_with(optuna.samplers.RandomSampler(seed=0), inc)
    rnd.optimize(space, n_trials=40)
    assert max(abs(math.log(t.params["lr"] / 0.1)) for t in rnd.trials[1:]) > 1.5


def test_share_zero_is_the_base_sampler_and_no_incumbent_means_the_base():
    a = study_with(IncumbentSampler(optuna.samplers.TPESampler(seed=3), share=0.0, seed=0))
    b = study_with(optuna.samplers.TPESampler(seed=3))
    a.optimize(space, n_trials=15)
    b.optimize(space, n_trials=15)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    # share 1 but nothing complete yet: the first trial is the base's
    c = study_with(IncumbentSampler(optuna.samplers.RandomSampler(seed=5), share=1.0, seed=0))
    d = study_with(optuna.samplers.RandomSampler(seed=5))
    c.optimize(space, n_trials=1)
    d.optimize(space, n_trials=1)
    assert c.trials[0].params == d.trials[0].params


def test_bad_arguments_and_the_registry():
    with pytest.raises(ValueError, match="share"):
        IncumbentSampler(optuna.samplers.RandomSampler(), share=1.5)
    with pytest.raises(ValueError, match="radius"):
        IncumbentSampler(optuna.samplers.RandomSampler(), radius=0.0)
    assert isinstance(get_sampler("local").build(0, 3, True), IncumbentSampler)
    assert get_sampler("tpe-mv").build(0, 3, False)._multivariate
    assert all(SAMPLERS[n].model_based for n in ("tpe", "tpe-mv", "local")) and not SAMPLERS["random"].model_based
    with pytest.raises(SearchError, match="tpe, tpe-mv, local, gp, random"):
        get_sampler("grid")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_registered_sampler_proposes_valid_seeded_points_of_the_space(name):
    """Each --sampler on a real Optuna study over a space of the kinds a recipe space has (log
    float, float, int, categorical): 14 valid points, seeded (the same points twice)."""
    def run():
        study = optuna.create_study(direction="maximize", sampler=SAMPLERS[name].build(3, 4, False))
        study.optimize(space, n_trials=14)
        return study

    study = run()
    for t in study.trials:
        p = t.params
        assert 0.01 <= p["lr"] <= 1.0 and 0.05 <= p["temperature"] <= 0.5 and 0 <= p["smoothing_k"] <= 64
        assert isinstance(p["smoothing_k"], int) and p["proj_hidden_dim"] in (256, 512, 1024, 2048)
    assert [t.params for t in run().trials] == [t.params for t in study.trials]
    assert math.isfinite(study.best_value)
