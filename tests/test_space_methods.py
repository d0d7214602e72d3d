"""Per-method parameters in a search space (``methods:``; recipe_search/space/methods.py), their
define-by-run sampling through Optuna, and the baselines a space runs (baselines.baselines_for)."""

from __future__ import annotations

import pytest

from recipe_search.baselines import BASELINES, FLOOR_BASELINE, baselines_for
from recipe_search.compose import repair
from recipe_search.errors import SpaceError
from recipe_search.space import load_space, parse_space
from trainer.methods import METHODS, Method, register_method


@pytest.fixture()
def toy():
    """A second registered method for the duration of a test (in-batch negatives, no queue)."""

    class Toy(Method):
        name = "toy"

        @classmethod
        def negatives(cls, recipe):
            return 2 * recipe.batch_size - 2, "2*batch_size-2"

    register_method(Toy)
    yield Toy
    del METHODS["toy"]


MOCO_ONLY = {"queue_size": {"type": "choice", "values": [1024, 2048]},
             "key_momentum": {"type": "uniform", "low": 0.9, "high": 0.999}}


def _space(**extra):
    data = {"lr": {"type": "loguniform", "low": 0.01, "high": 1.0},
            "method": {"type": "choice", "values": ["mocov2", "toy"]},
            "methods": {"mocov2": dict(MOCO_ONLY), "toy": {"temperature": 0.5}}}
    return parse_space({**data, **extra})


def test_a_method_block_applies_only_to_its_method(toy):
    space = _space()
    assert sorted(space.params) == ["lr", "method"] and space.method_choices() == ("mocov2", "toy")
    assert sorted(space.methods["mocov2"].params) == ["key_momentum", "queue_size"]
    assert space.fixed_for({"method": "toy"})["temperature"] == 0.5
    assert "temperature" not in space.fixed_for({"method": "mocov2"})
    assert sorted(space.optuna_space({"method": "mocov2"})) == ["key_momentum", "lr", "method", "queue_size"]
    assert space.to_dict()["methods"]["toy"] == {"temperature": 0.5}


def test_define_by_run_samples_each_method_its_own_parameters(toy):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    import pickle

    sample = pickle.loads(pickle.dumps(_space().sampler_space()))  # Ray checkpoints the searcher
    seen = {}
    for _ in range(30):
        trial = study.ask()
        assert sample(trial) is None
        seen.setdefault(trial.params["method"], set(trial.params))
        study.tell(trial, 0.5)
    assert seen["mocov2"] == {"lr", "method", "queue_size", "key_momentum"}
    assert seen["toy"] == {"lr", "method"}
    assert isinstance(parse_space({"lr": {"type": "loguniform", "low": 0.01, "high": 1.0}}).sampler_space(), dict)


def test_a_baseline_point_reads_its_method_block(toy):
    space = _space()
    moco = {"method": "mocov2", "lr": 0.1, "queue_size": 1024, "key_momentum": 0.99}
    assert space.outside(moco) == [] and space.values_in(moco) == {
        "lr": 0.1, "method": "mocov2", "queue_size": 1024, "key_momentum": 0.99}
    assert space.outside({"method": "toy", "lr": 0.1, "temperature": 0.5}) == []
    assert space.outside({"method": "toy", "lr": 0.1, "temperature": 0.2}) == [
        "temperature=0.2 but the space fixes 0.5"]
    fixed = space.with_fixed({"queue_size": 64})
    assert "queue_size" not in fixed.methods["mocov2"].params and fixed.fixed["queue_size"] == 64


@pytest.mark.parametrize("extra, message", [
    ({"methods": {"byol": {}}}, "methods.byol: unknown method; allowed: mocov2"),
    ({"methods": "x"}, "methods must map method names"),
    ({"methods": {"toy": {"queue_size": 64}}}, "methods.toy.queue_size: queue_size applies to mocov2 only, not toy"),
    ({"methods": {"toy": {"lr2": 0.1}}}, "methods.toy: unknown recipe field 'lr2'"),
    ({"methods": {"toy": {"method": "toy"}}}, "methods.toy.method cannot be set per method"),
    ({"methods": {"toy": {"temperature": {"type": "uniform", "low": 1, "high": 0.5}}}},
     "methods.toy: temperature.high must be > temperature.low"),
    ({"methods": {"mocov2": {"temperature": {"type": "uniform", "low": 0.1, "high": 0.5}},
                  "toy": {"temperature": {"type": "uniform", "low": 0.1, "high": 0.9}}}},
     "methods.toy.temperature is sampled under methods.mocov2 with another range"),
    ({"methods": {"mocov2": {}, "toy": {}}, "queue_size": {"type": "choice", "values": [1024, 2048]}},
     "queue_size applies to mocov2 only: sample it under methods.mocov2"),
])
def test_a_bad_method_block_names_the_key_and_what_is_allowed(toy, extra, message):
    with pytest.raises(SpaceError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        _space(**extra)


def test_a_block_for_a_method_the_space_never_takes_is_an_error(toy):
    with pytest.raises(SpaceError, match="methods.toy: the space's method never takes 'toy' .it takes mocov2."):
        parse_space({"methods": {"toy": {}}})


def test_default_spaces_run_the_moco_baselines_as_before():
    for name in ("default", "mobilenetv3_small_100", "resnet18"):
        space = load_space(name)
        assert not space.methods and space.method_choices() == ("mocov2",)
        assert baselines_for(space) == tuple(b for b in BASELINES if b.name in ("mocov2", "sinfonce-light"))
    assert FLOOR_BASELINE == "sinfonce-light"


def test_repair_is_the_method_s(toy):
    assert repair({"batch_size": 64, "queue_size": 32, "smoothing_k": 100, "symmetric": False}, epochs=1)[1] == [
        "queue_size raised from 32 to 64 (batch_size keys per step)", "smoothing_k clipped from 100 to queue_size 64"]
    d, notes = repair({"method": "toy", "batch_size": 16, "queue_size": 8, "smoothing_k": 64}, epochs=1)
    assert d["queue_size"] == 8 and d["smoothing_k"] == 30 and notes == ["smoothing_k clipped from 64 to 2*batch_size-2 30"]
