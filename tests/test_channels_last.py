"""channels_last on the CPU (trainer.device.CHANNELS_LAST, kept for speed: bench/bench_step.py,
docs/speed.md) computes the same function as the contiguous NCHW layout: from the same weights the
features, the loss and every gradient agree to float32 rounding (stated tolerances below). It is not
bit-identical, and SGD amplifies rounding differences, so a whole run with it differs from an NCHW
run like a run with another seed; that it learns the same (3 seeds of the ``cpu`` trial, paired) is
the study in docs/results/speed/channels_last_trials.json, not this test."""

import pytest
import torch

from trainer import Recipe, TrainingRun
from trainer.device import CHANNELS_LAST, channels_last
from trainer.evaluation import evaluate
from trainer.model import extract_features

TINY = dict(backbone="mobilenetv3_small_050", image_size=32, batch_size=16, queue_size=64, epochs=2,
            proj_hidden_dim=64, proj_out_dim=32, smoothing=0.1, smoothing_k=8, symmetric=True)
FEATURE_RTOL = 1e-4  # features of the same weights, relative to their scale
GRAD_RTOL = 1e-3  # all gradients after one step (one vector), relative to its norm


def _run(tiny_data, monkeypatch, on: bool) -> TrainingRun:
    monkeypatch.setitem(CHANNELS_LAST, "cpu", on)
    run = TrainingRun(Recipe(**TINY), tiny_data, torch.device("cpu"))
    assert run.channels_last is on and channels_last("cpu") is on
    return run


def test_the_cpu_trains_in_channels_last_by_default(tiny_data):
    run = TrainingRun(Recipe(**TINY), tiny_data, torch.device("cpu"))
    conv = next(m for m in run.model.encoder_q.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert run.channels_last and conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_same_weights_same_features_and_same_evaluation(tiny_data, monkeypatch):
    nchw, cl = _run(tiny_data, monkeypatch, False), _run(tiny_data, monkeypatch, True)
    for a, b in zip(nchw.model.state_dict().values(), cl.model.state_dict().values()):
        assert torch.equal(a, b)  # same seed: same initial weights, only the layout differs
    monkeypatch.setitem(CHANNELS_LAST, "cpu", False)
    fa = extract_features(nchw.model, tiny_data.val_x, torch.device("cpu"))
    ea = evaluate(nchw.model, tiny_data, torch.device("cpu"))
    monkeypatch.setitem(CHANNELS_LAST, "cpu", True)
    fb = extract_features(cl.model, tiny_data.val_x, torch.device("cpu"))
    eb = evaluate(cl.model, tiny_data, torch.device("cpu"))
    assert (fa - fb).abs().max() <= FEATURE_RTOL * fa.abs().max()
    for key in ("val_knn_top1", "test_knn_top1", "val_probe_top1", "test_probe_top1", "train_probe_top1"):
        assert ea[key] == eb[key], key  # the same predictions


def test_one_step_same_loss_and_gradients(tiny_data, monkeypatch):
    nchw, cl = _run(tiny_data, monkeypatch, False), _run(tiny_data, monkeypatch, True)
    grads = []
    for run in (nchw, cl):
        run.optimizer.step = lambda: None  # keep the gradients, do not move the weights
        loss = run.step(run.train_x[:TINY["batch_size"]], 0)
        grads.append((loss, {n: p.grad.clone() for n, p in run.model.encoder_q.named_parameters()}))
    (la, ga), (lb, gb) = grads
    assert la.item() == pytest.approx(lb.item(), rel=1e-5)
    assert ga.keys() == gb.keys()
    a = torch.cat([g.flatten() for g in ga.values()])
    b = torch.cat([g.flatten() for g in gb.values()])
    print(f"relative gradient difference {((a - b).norm() / a.norm()).item():.2e}")
    assert (a - b).norm() <= GRAD_RTOL * a.norm()
