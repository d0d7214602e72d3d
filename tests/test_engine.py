"""The training loop: resume determinism, the NaN guard, early stop, outputs, split-named metrics."""

import json

import pytest
import torch

import trainer.engine as engine
from trainer import DataSpec, ProxyData, Recipe, StopTraining, train
from trainer.engine import random_init_metrics
from trainer.errors import RecipeError
from trainer.losses import SInfoNCELoss
from trainer.probe import linear_probe

TINY = dict(backbone="mobilenetv3_small_050", image_size=32, batch_size=16, queue_size=64, epochs=3,
            proj_hidden_dim=64, proj_out_dim=32, smoothing=0.1, smoothing_k=8)
FINAL_KEYS = ("val_knn_top1", "val_probe_top1", "train_probe_top1", "test_probe_top1", "test_knn_top1")


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
    assert full.metrics["test_probe_top1"] == resumed.metrics["test_probe_top1"]
    assert full.metrics["val_knn_top1"] == resumed.metrics["val_knn_top1"] == full.history[-1]["val_knn_top1"]


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
    assert not any("probe" in key or key.startswith("test_") for key in result.metrics)
    assert result.metrics["val_knn_top1"] == seen[0]["val_knn_top1"]
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
    for key in ("epoch", "epochs", "loss", "val_knn_top1", "lr", "images_per_sec", "elapsed_s"):
        assert key in seen[0]
    assert "knn_top1" not in seen[0]
    assert 0.0 <= seen[0]["val_knn_top1"] <= 1.0 and seen[0]["images_per_sec"] > 0


def test_completed_run_writes_encoder_metrics_recipe(tmp_path, tiny_data):
    from trainer.backbone import load_encoder

    result = train(Recipe(**{**TINY, "epochs": 1}), tiny_data, out_dir=tmp_path, device="cpu")
    assert result.status == "completed"
    for name in ("encoder.pt", "metrics.json", "recipe.json", "history.json", "checkpoint.pt"):
        assert (tmp_path / name).exists(), name
    for key in FINAL_KEYS:
        assert 0.0 <= result.metrics[key] <= 1.0, key
    assert json.loads((tmp_path / "metrics.json").read_text())["test_probe_top1"] == result.metrics["test_probe_top1"]
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


class _TestSplitIsOffLimits(ProxyData):
    """A ProxyData whose test split raises when anything reads it."""

    def __getattribute__(self, name):
        if name in ("test_x", "test_y"):
            raise AssertionError(f"{name} was read")
        return super().__getattribute__(name)


def test_evaluate_test_false_never_reads_the_test_split(tmp_path, tiny_data):
    recipe = Recipe(**{**TINY, "epochs": 1})
    sealed = _TestSplitIsOffLimits(**{f: getattr(tiny_data, f) for f in (
        "train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}, class_names=list(tiny_data.class_names))
    with pytest.raises(AssertionError, match="test_x was read"):
        sealed.test_x
    blind = train(recipe, sealed, out_dir=tmp_path, device="cpu", evaluate_test=False)
    seeing = train(recipe, tiny_data, device="cpu")
    assert blind.status == seeing.status == "completed"
    assert not any(k.startswith("test_") for k in blind.metrics)
    assert not any(k.startswith("test_") for k in json.loads((tmp_path / "metrics.json").read_text()))
    assert {"test_probe_top1", "test_knn_top1"} <= set(seeing.metrics)
    for key in ("loss", "val_knn_top1", "val_probe_top1", "train_probe_top1", "probe_l2", "epochs_completed"):
        assert blind.metrics[key] == seeing.metrics[key], key
    floor = random_init_metrics(recipe, sealed, device="cpu", evaluate_test=False)
    assert set(floor) == {"val_knn_top1", "val_probe_top1", "train_probe_top1", "probe_l2", "probe_time_s"}
    full_floor = random_init_metrics(recipe, tiny_data, device="cpu")
    assert set(full_floor) == set(floor) | {"test_probe_top1", "test_knn_top1", "test_probe_correct"}
    assert all(full_floor[k] == floor[k] for k in floor if k != "probe_time_s")


def test_a_run_monitored_only_after_its_last_epoch_learns_and_scores_exactly_the_same(tmp_path, tiny_data):
    """monitor="last" (a confirmation run) skips the kNN monitor of every epoch but the last: the
    monitor leaves the training state alone, so the weights, losses and every final metric are the
    same to the bit; the skipped epochs report no val kNN; a bad value is a clear error."""
    recipe = Recipe(**TINY)
    every = train(recipe, tiny_data, out_dir=tmp_path / "every", device="cpu")
    last = train(recipe, tiny_data, out_dir=tmp_path / "last", device="cpu", monitor="last")
    a = torch.load(tmp_path / "every" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "last" / "checkpoint.pt", weights_only=False)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [h["loss"] for h in every.history] == [h["loss"] for h in last.history]
    assert ["val_knn_top1" in h for h in last.history] == [False, False, True]
    for key in (*FINAL_KEYS, "loss", "probe_l2", "epochs_completed"):
        assert every.metrics[key] == last.metrics[key], key
    assert sum(h["knn_time_s"] for h in last.history) < sum(h["knn_time_s"] for h in every.history)
    with pytest.raises(RecipeError, match="monitor must be one of every, last, got 'some'"):
        train(recipe, tiny_data, out_dir=tmp_path / "bad", device="cpu", monitor="some")
    assert not (tmp_path / "bad").exists()  # rejected before anything is written


def test_data_seed_fixes_the_subset_while_the_recipe_seed_varies_the_training(tiny_data, monkeypatch):
    spec = DataSpec(dataset="synthetic", classes=4, train_per_class=16, val_per_class=4, test_per_class=8)
    loaded = []
    real = engine.load_proxy

    def recording(spec, image_size, seed):
        proxy = real(spec, image_size, seed)
        loaded.append((seed, proxy.fingerprint()))
        return proxy

    monkeypatch.setattr(engine, "load_proxy", recording)
    recipe = Recipe(**{**TINY, "epochs": 1})
    a = train(recipe, spec, device="cpu", data_seed=5)
    b = train(recipe.replace(seed=1), spec, device="cpu", data_seed=5)
    assert [s for s, _ in loaded] == [5, 5] and loaded[0][1] == loaded[1][1]  # same subset
    assert a.history[0]["loss"] != b.history[0]["loss"]                       # other training
    train(recipe.replace(seed=1), spec, device="cpu")                        # default: the recipe's seed
    random_init_metrics(recipe, spec, device="cpu", data_seed=5, evaluate_test=False)
    assert [s for s, _ in loaded] == [5, 5, 1, 5] and loaded[2][1] != loaded[0][1] == loaded[3][1]


def test_linear_probe_without_a_test_split():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 8, generator=g)
    y = (x[:, 0] > 0).long()
    with_test = linear_probe((x[:30], y[:30]), (x[30:35], y[30:35]), (x[35:], y[35:]), 2)
    without = linear_probe((x[:30], y[:30]), (x[30:35], y[30:35]), None, 2)
    assert without.test_top1 is None and 0.0 <= with_test.test_top1 <= 1.0
    assert (without.val_top1, without.train_top1, without.l2) == (with_test.val_top1, with_test.train_top1,
                                                                   with_test.l2)


def test_the_probe_records_which_test_images_it_got_right(tiny_data):
    """``test_probe_correct`` (one bit per test image, packed) agrees with ``test_probe_top1``; the
    floor carries it too, and an evaluation that never reads the test split has none."""
    from trainer.per_image import KEY, decode, encode

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 8, generator=g)
    y = (x[:, 0] > 0).long()
    p = linear_probe((x[:30], y[:30]), (x[30:40], y[30:40]), (x[40:], y[40:]), 2)
    assert p.test_correct.dtype == torch.bool and p.test_correct.shape == (20,)
    assert p.test_correct.float().mean().item() == p.test_top1
    floor = random_init_metrics(Recipe(**TINY), tiny_data, device="cpu")
    bits = decode(floor[KEY])
    assert bits.size == tiny_data.test_y.numel() and bits.mean() == pytest.approx(floor["test_probe_top1"])
    assert KEY not in random_init_metrics(Recipe(**TINY), tiny_data, device="cpu", evaluate_test=False)
    assert decode(encode(torch.tensor([True] * 9))).tolist() == [True] * 9  # 9 bits: two bytes, one padded
    for bad in ("x", "3:!!", "20:oA==", "-1:"):  # not a count, not base64, fewer bits than images, negative
        with pytest.raises(ValueError, match="per-image correctness"):
            decode(bad)


def test_evaluation_uses_precise_bn_statistics_and_leaves_the_training_state_alone(tiny_data):
    """Every encoder is evaluated with BN statistics of the clean train images, whatever the
    running statistics training (or init) left; and evaluating changes no training state."""
    from trainer.evaluation import evaluate
    from trainer.model import build_model

    torch.manual_seed(0)
    model = build_model(Recipe(**TINY))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = evaluate(model, tiny_data, torch.device("cpu"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"evaluate changed {key}"
    for m in model.modules():  # what a few training steps could leave behind
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 3)
            m.running_var.uniform_(0.1, 10)
    again = evaluate(model, tiny_data, torch.device("cpu"))
    for key in ("val_knn_top1", "val_probe_top1", "test_probe_top1", "test_knn_top1"):
        assert again[key] == pytest.approx(first[key], abs=1e-6), key


def test_precise_bn_rejects_bad_sizes():
    from trainer.precise_bn import precise_bn

    net = torch.nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match="max_images"):
        with precise_bn(net, net, torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.device("cpu"), max_images=0):
            pass


def test_precise_bn_is_a_cumulative_average_over_several_batches():
    """Three batches with means 1, 2 and 6: the statistics are their plain average (3), not an
    EMA (momentum 0.1 from 0: 0.77), not the last batch's (6)."""
    from trainer.precise_bn import precise_bn

    bn = torch.nn.BatchNorm2d(1)
    bn.running_mean.fill_(-5.0)  # whatever training left behind
    images = torch.cat([torch.full((4, 1, 2, 2), v, dtype=torch.uint8) for v in (1, 2, 6)])
    seen = []

    def forward(x):
        seen.append(x.shape[0])
        return bn(x.float())  # constant within a batch

    with precise_bn(bn, forward, images, torch.device("cpu"), batch_size=4):
        assert seen == [4, 4, 4]
        assert float(bn.running_mean) == pytest.approx(3.0, abs=1e-6)
        assert int(bn.num_batches_tracked) == 3
    assert float(bn.running_mean) == pytest.approx(-5.0)  # the training state is back


def test_precise_bn_never_sees_val_or_test_images(tiny_data, monkeypatch):
    """Every image the BN statistics are estimated on is a train image (val and test are marked)."""
    import dataclasses

    import trainer.precise_bn as pbn
    from trainer.evaluation import evaluate
    from trainer.model import build_model

    marked = dataclasses.replace(tiny_data, train_x=tiny_data.train_x.clone().clamp(0, 200),
                                 val_x=torch.full_like(tiny_data.val_x, 253),
                                 test_x=torch.full_like(tiny_data.test_x, 255))
    seen = []
    real = pbn.precise_bn

    def spy(module, forward, images, device, **kw):
        def watched(chunk):
            seen.append(chunk.clone())
            return forward(chunk)
        return real(module, watched, images, device, **kw)

    import trainer.model as model_mod
    monkeypatch.setattr(model_mod, "precise_bn", spy)
    torch.manual_seed(0)
    evaluate(build_model(Recipe(**TINY)), marked, torch.device("cpu"))
    assert seen and sum(c.shape[0] for c in seen) == min(marked.train_x.shape[0], pbn.PRECISE_BN_IMAGES)
    assert all(int(c.max()) <= 200 for c in seen), "precise BN saw a val or test image"
