"""Trainer benchmarks, each measured side by side in one run.

1. Step throughput (images/s) per backbone and image size.
2. Pipeline overhead: the full step (on-device augmentation included) divided by
   the same step on pre-augmented device tensors. Goal on a GPU: <= 1.10.
3. The share of a short run's time spent in the kNN monitor and the linear probe.

    .venv/bin/python bench/bench_trainer.py                      # CPU, small batch
    .venv/bin/python bench/bench_trainer.py --device cuda --batch 256 --steps 30

Full and pre-augmented steps are interleaved (A B A B ...) and the median of each
is reported, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import DataSpec, Recipe, load_proxy, train  # noqa: E402
from trainer.device import resolve_device  # noqa: E402
from trainer import TrainingRun  # noqa: E402

BACKBONES = ("mobilenetv3_large_100", "efficientnet_b0", "resnet18")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class _PreAugmented:
    """Stands in for MoCoViews: returns views computed once, already on the device."""

    def __init__(self, views: list[torch.Tensor]):
        self._views = itertools.cycle(views)

    def __call__(self, x, generator):
        return next(self._views)


def step_benchmark(backbone: str, size: int, batch: int, steps: int, device: torch.device,
                   compile: bool) -> dict:
    recipe = Recipe(backbone=backbone, image_size=size, batch_size=batch, queue_size=max(4096, 2 * batch),
                    epochs=1, blur_p=0.5)
    proxy = load_proxy(DataSpec(dataset="synthetic", classes=4, train_per_class=batch, val_per_class=0,
                                test_per_class=1), size, seed=0)
    run = TrainingRun(recipe, proxy, device, compile=compile)
    x = run.train_x[:batch]
    real_views = run.views
    pre = _PreAugmented([real_views(x, run.aug_gen) for _ in range(4)])
    for i in range(3):  # warm-up both paths (cudnn autotune, compile)
        run.step(x, i)
        run.views = pre
        run.step(x, i)
        run.views = real_views
    full, preaug = [], []
    for i in range(steps):
        for views, out in ((real_views, full), (pre, preaug)):
            run.views = views
            _sync(device)
            t0 = time.perf_counter()
            run.step(x, i)
            _sync(device)
            out.append(time.perf_counter() - t0)
    run.views = real_views
    f, p = statistics.median(full), statistics.median(preaug)
    return {"backbone": backbone, "size": size, "batch": batch, "full_ms": 1e3 * f, "preaug_ms": 1e3 * p,
            "images_per_sec": batch / f, "overhead": f / p}


def eval_share(device: torch.device, batch: int) -> dict:
    recipe = Recipe(backbone="mobilenetv3_small_100", image_size=32, batch_size=batch,
                    queue_size=max(1024, 2 * batch), epochs=2)
    spec = DataSpec(dataset="synthetic", classes=10, train_per_class=max(50, batch // 5), val_per_class=10,
                    test_per_class=20)
    t0 = time.perf_counter()
    res = train(recipe, spec, device=str(device))
    total = time.perf_counter() - t0
    m = res.metrics
    return {"total_s": total, "train_s": m["train_time_s"], "knn_s": m["knn_time_s"], "probe_s": m["probe_time_s"],
            "knn_share": m["knn_time_s"] / total, "probe_share": m["probe_time_s"] / total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=None, help="default: 256 on CUDA, 32 on the CPU")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per path (default 30 CUDA, 5 CPU)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (256 if cuda else 32)
    steps = args.steps or (30 if cuda else 5)
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; batch {batch}; {steps} timed steps per path; "
          f"{'bf16 autocast' if cuda else 'fp32'}, channels_last")
    print(f"{'backbone':24} {'px':>4} {'img/s':>9} {'full ms':>9} {'pre-aug ms':>11} {'overhead':>9}")
    for backbone, size in itertools.product(args.backbones, args.sizes):
        r = step_benchmark(backbone, size, batch, steps, device, args.compile)
        print(f"{backbone:24} {size:>4} {r['images_per_sec']:>9.1f} {r['full_ms']:>9.1f} {r['preaug_ms']:>11.1f} "
              f"{r['overhead']:>9.3f}", flush=True)
    s = eval_share(device, batch)
    print(f"\nevaluation share of a 2-epoch mobilenetv3_small_100 run ({s['total_s']:.1f} s): "
          f"kNN {100 * s['knn_share']:.1f}% ({s['knn_s']:.2f} s), probe {100 * s['probe_share']:.1f}% "
          f"({s['probe_s']:.2f} s), training {s['train_s']:.2f} s")


if __name__ == "__main__":
    main()
