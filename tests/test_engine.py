"""The training loop: resume determinism, the NaN guard, early stop, outputs."""

import json

import pytest
import torch

from trainer import Recipe, StopTraining, train
from trainer.losses import SInfoNCELoss

TINY = dict(backbone="mobilenetv3_small_050", image_size=32, batch_size=16, queue_size=64, epochs=3,
            proj_hidden_dim=64, proj_out_dim=32, smoothing=0.1, smoothing_k=8)



def test_a_resumed_run_reaches_the_same_state_as_an_uninterrupted_one(tmp_path, tiny_data):
    recipe = Recipe(**TINY)
    full = train(recipe, tiny_data, out_dir=tmp_path / "full", device="cpu")
    part = train(recipe, tiny_data, out_dir=tmp_path / "part", device="cpu", stop_after=1)
    assert part.status == "stopped" and part.metrics["epochs_completed"] == 1
    resumed = train(recipe, tiny_data, out_dir=tmp_path / "part", device="cpu")
    assert full.status == resumed.status == "completed"
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]
    assert full.metrics["probe_top1"] == resumed.metrics["probe_top1"]


def test_same_seed_same_run_other_seed_other_run(tiny_data):
    recipe = Recipe(**{**TINY, "epochs": 1})
    a = train(recipe, tiny_data, device="cpu")
    b = train(recipe, tiny_data, device="cpu")
    c = train(recipe.replace(seed=1), tiny_data, device="cpu")
    assert a.history[0]["loss"] == b.history[0]["loss"] != c.history[0]["loss"]


def test_nan_loss_ends_the_run_as_diverged(tmp_path, tiny_data, monkeypatch):
    real_forward = SInfoNCELoss.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        calls["n"] += 1
        loss = real_forward(self, *args, **kwargs)
        return loss * float("nan") if calls["n"] > 8 else loss  # 4 steps x 2 directions = epoch 1

    monkeypatch.setattr(SInfoNCELoss, "forward", forward)
    seen = []
    result = train(Recipe(**TINY), tiny_data, out_dir=tmp_path, device="cpu", on_epoch=seen.append)
    assert result.status == "diverged"
    assert "non-finite loss" in result.error and "epoch 2" in result.error
    assert [r["epoch"] for r in seen] == [1]
    assert "probe_top1" not in result.metrics
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "diverged"
    assert not (tmp_path / "encoder.pt").exists()


def test_callback_reports_every_epoch_and_can_stop(tmp_path, tiny_data):
    seen = []

    def on_epoch(report):
        seen.append(report)
        assert (tmp_path / "checkpoint.pt").exists()
        if report["epoch"] == 2:
            raise StopTraining("pruned by test")

    result = train(Recipe(**TINY), tiny_data, out_dir=tmp_path, device="cpu", on_epoch=on_epoch)
    assert result.status == "stopped" and result.error == "pruned by test"
    assert [r["epoch"] for r in seen] == [1, 2]
    for key in ("epoch", "epochs", "loss", "knn_top1", "lr", "images_per_sec", "elapsed_s"):
        assert key in seen[0]
    assert 0.0 <= seen[0]["knn_top1"] <= 1.0 and seen[0]["images_per_sec"] > 0


def test_completed_run_writes_encoder_metrics_recipe(tmp_path, tiny_data):
    from trainer.backbone import load_encoder

    result = train(Recipe(**{**TINY, "epochs": 1}), tiny_data, out_dir=tmp_path, device="cpu")
    assert result.status == "completed"
    for name in ("encoder.pt", "metrics.json", "recipe.json", "history.json", "checkpoint.pt"):
        assert (tmp_path / name).exists(), name
    assert 0.0 <= result.metrics["probe_top1"] <= 1.0
    assert Recipe.from_json((tmp_path / "recipe.json").read_text()) == Recipe(**{**TINY, "epochs": 1})
    encoder, payload = load_encoder(str(tmp_path / "encoder.pt"))
    assert payload["backbone"] == "mobilenetv3_small_050"
    assert not any(k.startswith("head") for k in payload["state_dict"])  # heads are dropped
    out = encoder.eval()(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, payload["feature_dim"])


def test_batch_larger_than_the_proxy_is_a_clear_error(tiny_data):
    from trainer import RecipeError

    with pytest.raises(RecipeError, match="batch_size must be <= the proxy train set size"):
        train(Recipe(**{**TINY, "batch_size": 128, "queue_size": 256}), tiny_data, device="cpu")


def test_a_gpu_asked_for_and_absent_is_a_clear_error(tiny_data):
    from trainer import DeviceError

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="no CUDA GPU is available"):
        train(Recipe(**TINY), tiny_data, device="cuda")
