"""What only a GPU can check: the trainer on CUDA (bf16 autocast, channels_last, on-device
augmentation and data), run by ``pytest -m cuda`` (bench/gpu_check.sh runs it on the first GPU).

Every test here carries the ``cuda`` marker and is skipped without CUDA; tests elsewhere that are
parametrised on the ``cuda`` device get the marker too (tests/conftest.py).
"""

import math

import pytest
import torch

from trainer import DataSpec, Recipe, TrainingRun, load_proxy, train
from trainer.augment import MoCoViews

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TINY = dict(backbone="mobilenetv3_small_050", image_size=32, batch_size=32, queue_size=128, epochs=2,
            proj_hidden_dim=64, proj_out_dim=32, smoothing=0.1, smoothing_k=8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    spec = DataSpec(dataset="synthetic", classes=4, train_per_class=32, val_per_class=8, test_per_class=8,
                    cache_dir=str(tmp_path_factory.mktemp("cache")))
    return load_proxy(spec, 32, seed=0)


def test_a_run_on_the_gpu_completes_with_finite_metrics(data):
    res = train(Recipe(**TINY), data, device="cuda")
    assert res.status == "completed", res.error
    for key in ("loss", "val_knn_top1", "val_probe_top1", "test_probe_top1", "test_knn_top1"):
        assert math.isfinite(res.metrics[key]), (key, res.metrics)
    assert 0.0 <= res.metrics["test_probe_top1"] <= 1.0
    assert len(res.history) == TINY["epochs"]


def test_the_step_runs_in_bf16_on_channels_last_and_keeps_fp32_weights(data):
    run = TrainingRun(Recipe(**TINY), data, torch.device("cuda"))
    x = run.train_x[:TINY["batch_size"]]
    assert x.is_cuda and x.dtype == torch.uint8
    seen = []
    conv = next(m for m in run.model.encoder_q.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    hook = conv.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    loss = run.step(x, 0)
    hook.remove()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert seen and seen[0][1] == torch.bfloat16  # autocast ran the convolutions in bf16
    assert all(p.dtype == torch.float32 for p in run.model.parameters())
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_views_on_the_gpu_are_in_range_and_follow_the_generator():
    views = MoCoViews(Recipe(image_size=32))
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, device="cuda")
    a = views(x, torch.Generator(device="cuda").manual_seed(0))
    b = views(x, torch.Generator(device="cuda").manual_seed(0))
    assert a.is_cuda and a.shape == (64, 3, 32, 32) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # same generator state, same views
