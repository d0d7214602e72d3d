"""Search spaces: YAML validation with path-named errors, Optuna conversion, baselines, composition."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from recipe_search.baselines import BASELINES, MOCO_V2, SINFONCE_LIGHT  # noqa: E402
from recipe_search.budget import BUDGETS  # noqa: E402
from recipe_search.compose import compose  # noqa: E402
from recipe_search.errors import SpaceError  # noqa: E402
from recipe_search.space import load_space, parse_space, spaces_dir  # noqa: E402
from trainer.errors import RecipeError  # noqa: E402
from trainer.recipe import Recipe  # noqa: E402


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- the shipped spaces ------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(spaces_dir().glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_spaces_load_and_convert(path):
    space = load_space(path)
    dists = space.optuna_space()
    assert dists and set(dists) <= set(Recipe.field_names())
    # every baseline is expressible as a point, and a sampled point composes into a recipe
    for b in BASELINES:
        point = space.point(b.values)
        own = space.optuna_space(b.values)  # with the baseline's method's parameters (methods: block)
        assert set(point) == set(own) >= set(space.params)
        for name, value in point.items():
            assert own[name]._contains(own[name].to_internal_repr(value))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask(dists)
        recipe, _ = compose(trial.params, backbone="resnet18", image_size=32, epochs=5, seed=0,
                            fixed=space.fixed)
        assert isinstance(recipe, Recipe)
        study.tell(trial, 0.0)


def test_default_space_covers_the_recipe():
    space = load_space("default")
    for name in ("lr", "weight_decay", "temperature", "smoothing", "smoothing_k", "batch_size",
                 "proj_hidden_dim", "proj_out_dim", "crop_min_scale", "jitter_strength", "blur_p"):
        assert name in space.params, name
    lr = space.params["lr"].distribution()
    assert lr.log and lr.low > 0


def test_backbone_override_extends_default():
    space = load_space(backbone="efficientnet_b0")
    assert [Path(s).name for s in space.sources] == ["default.yaml", "efficientnet_b0.yaml"]
    assert space.params["weight_decay"].high == 1e-4       # overridden
    assert "temperature" in space.params                    # inherited
    assert load_space(backbone="mobilenetv3_large_100").name == "mobilenetv3_large_100"
    assert load_space(backbone="some_backbone_without_file").name == "default"


def test_budget_fixes_fields():
    space = load_space("default").with_fixed(BUDGETS["smoke"].fixed)
    assert "batch_size" not in space.params and space.fixed["batch_size"] == 64


# -- malformed spaces -------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("lr: {type: loguniform, low: 0, high: 1}", "lr.low must be > 0"),
    ("lr: {type: loguniform, low: -1, high: 1}", "lr.low must be > 0"),
    ("lr: {type: uniform, low: 0.5, high: 0.1}", "lr.high must be > lr.low"),
    ("lr: {type: uniform, low: 0.1, high: 20}", "lr.high must be in (0, 10]"),
    ("lr: {type: loguniform, low: abc, high: 1}", "lr.low must be of type float (a number)"),
    ("lr: {type: loguniform, high: 1}", "lr.low is missing"),
    ("lr: {low: 0.1, high: 1}", "lr.type is missing"),
    ("lr: {type: gaussian, low: 0.1, high: 1}", "lr.type must be one of loguniform, uniform, int, choice"),
    ("lr: {type: uniform, low: 0.1, high: 1, step: 2}", "lr.step is not a key of a uniform parameter"),
    ("batch_size: {type: choice, values: []}", "batch_size.values must be a non-empty list"),
    ("batch_size: {type: choice, values: 128}", "batch_size.values must be a non-empty list"),
    ("batch_size: {type: choice, values: [128, 1.5]}", "batch_size.values[1] must be of type int (an integer)"),
    ("batch_size: {type: choice, values: [128, 128]}", "batch_size.values has duplicates"),
    ("batch_size: {type: uniform, low: 64, high: 256}", "batch_size is an integer field"),
    ("temperature: {type: int, low: 1, high: 2}", "temperature is a float field"),
    ("smoothing_k: {type: int, low: -1, high: 8}", "smoothing_k.low must be in [0, 1048576]"),
    ("optimizer: {type: choice, values: [sgd, adam]}", "optimizer.values[1] must be one of sgd, lars, adamw"),
    ("symmetric: {type: uniform, low: 0, high: 1}", "symmetric is a bool field"),
    ("symmetric: 3", "symmetric must be of type bool (true or false)"),
    ("momentum: 1.0", "momentum must be in [0, 1)"),
    ("learning_rate: {type: loguniform, low: 0.01, high: 1}", "unknown recipe field 'learning_rate'"),
    ("tempreature: 0.2", "did you mean 'temperature'"),
    ("epochs: 10", "epochs cannot be set in a search space"),
    ("backbone: resnet18", "backbone cannot be set in a search space"),
    ("- lr\n- wd\n", "a search space must be a mapping"),
    ("lr: {type: loguniform, low: 0.01, high: 1\n", "not valid YAML"),
    ("extends: no_such_space\n", "extends: space 'no_such_space' not found"),
])
def test_malformed_space_errors_name_the_path(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    msg = str(info.value)
    assert message in msg, msg
    assert msg.startswith(str(path.name)) or str(path) in msg or path.name in msg
    assert "\n" not in msg.strip()


def test_yaml_error_reports_line(tmp_path):
    path = write(tmp_path, "lr: 0.1\nweight_decay: {type: loguniform, low: 1.0e-6, high: 1e-3\n")
    with pytest.raises(SpaceError, match=r"not valid YAML: .* at line \d+ column \d+"):
        load_space(path)


def test_extends_cycle_and_relative_extends(tmp_path):
    write(tmp_path, "extends: b.yaml\nlr: 0.1\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    with pytest.raises(SpaceError, match="extends forms a cycle"):
        load_space(tmp_path / "a.yaml")
    write(tmp_path, "temperature: {type: uniform, low: 0.1, high: 0.3}\nlr: 0.05\n", "base.yaml")
    child = write(tmp_path, "extends: base\nlr: {type: loguniform, low: 0.01, high: 0.1}\n", "child.yaml")
    space = load_space(child)
    assert set(space.params) == {"temperature", "lr"} and "lr" not in space.fixed


def test_missing_space_file_lists_known_spaces():
    with pytest.raises(SpaceError, match="not found; known spaces in .*default"):
        load_space("no-such-space.yaml")


def test_yaml_exponent_without_dot_is_accepted(tmp_path):
    # YAML 1.1 reads 1e-4 as a string; a space should not trip over it
    space = load_space(write(tmp_path, "weight_decay: {type: loguniform, low: 1e-6, high: 1e-3}\n"))
    assert space.params["weight_decay"].low == 1e-6


def test_space_without_sampled_params_is_fine_to_load_but_fixed_values_validate(tmp_path):
    space = parse_space({"lr": 0.1, "symmetric": False})
    assert not space.params and space.fixed == {"lr": 0.1, "symmetric": False}


# -- baselines as points, composition ----------------------------------------------------------


def test_baselines_are_the_documented_recipes():
    m = MOCO_V2.values
    assert (m["lr"], m["temperature"], m["weight_decay"], m["proj_hidden_dim"]) == (0.03, 0.2, 1e-4, 2048)
    assert (m["crop_min_scale"], m["jitter_strength"], m["gray_p"], m["blur_p"]) == (0.2, 0.4, 0.2, 0.5)
    assert m["smoothing"] == 0.0
    assert SINFONCE_LIGHT.values["smoothing"] > 0 and SINFONCE_LIGHT.values["smoothing_k"] > 0
    for b in BASELINES:  # complete, valid recipes
        recipe, notes = compose(b.values, backbone="resnet18", image_size=32, epochs=10, seed=0)
        assert notes == []
        assert recipe.scaled_lr == pytest.approx(b.values["lr"] * b.values["batch_size"] / 256)


def test_point_projects_into_the_space():
    space = parse_space({"lr": {"type": "loguniform", "low": 0.1, "high": 1.0},
                         "batch_size": {"type": "choice", "values": [64, 512]},
                         "smoothing_ramp": {"type": "choice", "values": ["warm", "cos"]}})
    point = space.point({"lr": 0.03, "batch_size": 256, "smoothing_ramp": "none"})
    assert point == {"lr": 0.1, "batch_size": 64, "smoothing_ramp": "warm"}


def test_compose_repairs_derived_constraints_and_reports_them():
    recipe, notes = compose({"batch_size": 256, "queue_size": 128, "smoothing_k": 4096, "warmup_epochs": 5.0},
                            backbone="resnet18", image_size=32, epochs=3, seed=1)
    assert recipe.queue_size == 512 and recipe.smoothing_k == 512 and recipe.warmup_epochs == 2.0
    assert len(notes) == 3 and all(isinstance(n, str) for n in notes)
    recipe, _ = compose({}, backbone="resnet18", image_size=32, epochs=3, seed=1,
                        fixed={"lr": 0.5}, budget_fixed={"batch_size": 16})
    assert recipe.lr == 0.5 and recipe.batch_size == 16 and recipe.epochs == 3


def test_compose_rejects_what_it_cannot_repair():
    with pytest.raises(RecipeError, match="backbone 'resnet_18' is not a timm model; close matches"):
        compose({}, backbone="resnet_18", image_size=32, epochs=3, seed=0)
    with pytest.raises(RecipeError, match="temperature must be in"):
        compose({"temperature": 0.0}, backbone="resnet18", image_size=32, epochs=3, seed=0)


def test_budgets_are_consistent():
    for b in BUDGETS.values():
        assert b.grace_period <= b.max_epochs and b.num_samples >= len(BASELINES)
        if "batch_size" in b.fixed:  # the proxy set must hold a batch
            assert b.fixed["batch_size"] <= b.classes * b.train_per_class
        assert math.isfinite(b.gpus_per_trial)


def test_distill_section_can_be_fixed_but_not_sampled(tmp_path):
    space = load_space(write(tmp_path, "distill: {teacher_backbone: resnet18, weight: 0.5}\n"))
    assert space.fixed["distill"]["teacher_backbone"] == "resnet18" and "distill" not in space.params
    recipe, _ = compose({}, backbone="resnet18", image_size=32, epochs=2, seed=0, fixed=space.fixed)
    assert recipe.distill is not None and recipe.distill.weight == 0.5
    with pytest.raises(SpaceError, match="distill needs exactly one of teacher_checkpoint"):
        load_space(write(tmp_path, "distill: {weight: 0.5}\n"))


TEACHER = "distill: {teacher_backbone: resnet18, teacher_recipe: {epochs: 1}}\n"


def test_distill_weight_and_views_can_be_sampled_with_a_fixed_teacher(tmp_path):
    space = load_space(write(tmp_path, TEACHER + "distill.weight: {type: loguniform, low: 0.1, high: 10.0}\n"
                                                 "distill.views: {type: choice, values: [both, first]}\n"))
    dists = space.optuna_space()
    assert set(dists) == {"distill.weight", "distill.views"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    point = study.ask(dists).params
    recipe, _ = compose(point, backbone="mobilenetv3_small_050", image_size=32, epochs=2, seed=0,
                        fixed=space.fixed)
    assert recipe.distill.teacher_backbone == "resnet18" and recipe.distill.teacher_recipe == {"epochs": 1}
    assert recipe.distill.weight == point["distill.weight"] and recipe.distill.views == point["distill.views"]
    # the baselines stay teacher-free (the published recipes), the sampled settings dropped
    for b in BASELINES:
        assert set(space.point(b.values)) == {"distill.weight", "distill.views"}
        base, _ = compose(b.values, backbone="mobilenetv3_small_050", image_size=32, epochs=2, seed=0,
                          fixed=space.fixed)
        assert base.distill is None
    # fixed, like any field
    fixed = load_space(write(tmp_path, TEACHER + "distill.weight: 4.0\n", "fixed.yaml"))
    recipe, _ = compose({}, backbone="mobilenetv3_small_050", image_size=32, epochs=2, seed=0, fixed=fixed.fixed)
    assert recipe.distill.weight == 4.0


@pytest.mark.parametrize("text, fragment", [
    ("distill.weight: {type: uniform, low: 0.1, high: 2.0}\n", "distill.weight needs a teacher"),
    (TEACHER + "distill.teacher_backbone: {type: choice, values: [resnet18]}\n",
     "distill.teacher_backbone cannot be set in a search space; of the distill section only "
     "distill.weight, distill.views may be"),
    (TEACHER + "distill.weight: {type: uniform, low: -1.0, high: 2.0}\n", "distill.weight.low must be in"),
    (TEACHER + "distill.weight: {type: int, low: 1, high: 2}\n", "distill.weight is a float field"),
    (TEACHER + "distill.views: {type: choice, values: [both, last]}\n", "distill.views.values[1] must be one of"),
])
def test_bad_distill_parameters_name_the_key(tmp_path, text, fragment):
    with pytest.raises(SpaceError) as e:
        load_space(write(tmp_path, text))
    assert fragment in str(e.value), str(e.value)


def test_a_child_space_that_drops_the_teacher_drops_its_settings(tmp_path):
    write(tmp_path, TEACHER + "distill.weight: {type: loguniform, low: 0.1, high: 10.0}\n"
                              "lr: {type: loguniform, low: 0.01, high: 1.0}\n", "base.yaml")
    child = load_space(write(tmp_path, "extends: base.yaml\ndistill: null\n", "child.yaml"))
    assert set(child.params) == {"lr"} and child.fixed["distill"] is None
