import json

import pytest

from trainer import Recipe, RecipeError


def test_defaults_are_valid_and_round_trip():
    r = Recipe()
    assert Recipe.from_json(r.to_json()) == r
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_round_trip_of_non_default_values():
    r = Recipe(backbone="efficientnet_b0", optimizer="lars", lr=0.3, smoothing=0.1, smoothing_k=16,
               smoothing_ramp="cos", momentum_ramp=True, symmetric=False, batch_size=128, queue_size=1024)
    assert Recipe.from_json(r.to_json()) == r


def test_scaled_lr_is_linear_in_batch_size():
    assert Recipe(lr=0.03, batch_size=512, queue_size=4096).scaled_lr == pytest.approx(0.06)
    assert Recipe(lr=0.03, batch_size=128).scaled_lr == pytest.approx(0.015)


def test_int_given_for_float_and_whole_float_for_int_are_accepted():
    r = Recipe.from_dict({"lr": 1, "epochs": 3.0})
    assert r.lr == 1.0 and isinstance(r.lr, float) and r.epochs == 3 and isinstance(r.epochs, int)


@pytest.mark.parametrize("field,value,needle", [
    ("temperature", 0.0, "temperature must be in [0.005, 10]"),
    ("lr", 0.0, "lr must be in (0, 10]"),
    ("smoothing", 1.0, "smoothing must be in [0, 1)"),
    ("momentum", 1.0, "momentum must be in [0, 1)"),
    ("optimizer", "adam", "optimizer must be one of sgd, lars, adamw"),
    ("smoothing_ramp", "linear", "smoothing_ramp must be one of none, warm, cos"),
    ("batch_size", 4, "batch_size must be in [8, 16384]"),
    ("epochs", "ten", "epochs must be of type int"),
    ("symmetric", 1, "symmetric must be of type bool"),
    ("lr", float("nan"), "lr must be a finite number"),
])
def test_out_of_range_values_name_the_field_and_range(field, value, needle):
    with pytest.raises(RecipeError) as e:
        Recipe.from_dict({field: value})
    assert needle in str(e.value)


def test_cross_field_rules():
    with pytest.raises(RecipeError, match="queue_size must be >= batch_size"):
        Recipe(batch_size=256, queue_size=256)
    with pytest.raises(RecipeError, match="warmup_epochs must be < epochs"):
        Recipe(epochs=5, warmup_epochs=5)
    with pytest.raises(RecipeError, match="smoothing_k must be in"):
        Recipe(batch_size=8, queue_size=64, smoothing_k=65)


def test_unknown_backbone_lists_close_matches():
    with pytest.raises(RecipeError) as e:
        Recipe(backbone="mobilenetv3_large_10")
    assert "mobilenetv3_large_100" in str(e.value)


def test_unknown_field_suggests_the_right_one():
    with pytest.raises(RecipeError, match="did you mean 'temperature'"):
        Recipe.from_dict({"temprature": 0.2})


def test_malformed_json_and_non_object(tmp_path):
    with pytest.raises(RecipeError, match="not valid JSON"):
        Recipe.from_json("{lr: 1")
    with pytest.raises(RecipeError, match="must be a JSON object"):
        Recipe.from_json("[1, 2]")
    bad = tmp_path / "r.json"
    bad.write_text('{"lr": -1}')
    with pytest.raises(RecipeError, match=r"r.json: lr must be in"):
        Recipe.load(str(bad))
    with pytest.raises(RecipeError, match="cannot read recipe file"):
        Recipe.load(str(tmp_path / "missing.json"))
