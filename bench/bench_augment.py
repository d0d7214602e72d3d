"""Throughput of trainer.augment.MoCoViews against kornia (or a per-image torchvision loop).

Usage::

    .venv/bin/python bench/bench_augment.py [--device cpu|cuda] [--batch 256] [--size 32 64]

For each image size S the input is a random uint8 batch [B, 3, S, S] (like the
uint8 proxy cache at the recipe's image size). Every pipeline turns it into
float32 views [B, 3, S, S] with the same MoCo-v2 settings (crop scale 0.2..1,
flip 0.5, jitter 0.4 with p 0.8, grayscale 0.2, blur 0.5 with sigma scaled by
S/224, solarize --solarize-p). Repetitions of the pipelines are interleaved
(A B A B ...) so machine noise hits all of them alike; the median time per
batch is reported as images/s.

Baselines: kornia.augmentation.AugmentationSequential when kornia is
importable, else torchvision.transforms.v2 applied image by image in a Python
loop (the naive baseline). ``--baseline both`` runs both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench._common import torch_device  # noqa: E402
from trainer.augment import MoCoViews  # noqa: E402
from trainer.recipe import Recipe  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_ours(recipe: Recipe, device: torch.device):
    views = MoCoViews(recipe)
    gen = torch.Generator(device=device).manual_seed(0)
    return lambda x: views(x, gen), views


def make_kornia(recipe: Recipe, views: MoCoViews):
    import kornia.augmentation as K

    s = recipe.jitter_strength
    aug = K.AugmentationSequential(
        K.RandomResizedCrop((recipe.image_size, recipe.image_size), scale=(recipe.crop_min_scale, 1.0)),
        K.RandomHorizontalFlip(p=recipe.flip_p),
        K.ColorJitter(s, s, s, s / 4, p=recipe.jitter_p),
        K.RandomGrayscale(p=recipe.gray_p),
        K.RandomGaussianBlur(views.blur_kernel_size, views.blur_sigma, p=recipe.blur_p),
        K.RandomSolarize(thresholds=0.0, additions=0.0, p=recipe.solarize_p),  # threshold 0.5
    )

    def run(x):
        return aug(x.float().div_(255))

    return run


def make_torchvision_loop(recipe: Recipe, views: MoCoViews):
    import torchvision.transforms.v2 as T

    s = recipe.jitter_strength
    k = views.blur_kernel_size
    tf = T.Compose([
        T.RandomResizedCrop(recipe.image_size, scale=(recipe.crop_min_scale, 1.0), antialias=True),
        T.RandomHorizontalFlip(recipe.flip_p),
        T.RandomApply([T.ColorJitter(s, s, s, s / 4)], p=recipe.jitter_p),
        T.RandomGrayscale(recipe.gray_p),
        T.RandomApply([T.GaussianBlur(k, views.blur_sigma)], p=recipe.blur_p),
        T.RandomSolarize(128, p=recipe.solarize_p),  # uint8 threshold 128 == 0.5
        T.ToDtype(torch.float32, scale=True),
    ])

    def run(x):
        return torch.stack([tf(img) for img in x])

    return run


def bench_size(size: int, args, device: torch.device) -> dict[str, float]:
    recipe = Recipe(image_size=size, solarize_p=args.solarize_p)
    ours, views = make_ours(recipe, device)
    pipes = {"ours": ours}
    baselines = []
    if args.baseline in ("auto", "kornia", "both"):
        try:
            pipes["kornia"] = make_kornia(recipe, views)
            baselines.append("kornia")
        except ImportError:
            if args.baseline == "kornia":
                raise SystemExit("kornia is not installed (pip install kornia)")
            print("kornia is not importable: comparing with a per-image torchvision.transforms.v2 loop")
    if args.baseline in ("torchvision", "both") or (args.baseline == "auto" and not baselines):
        pipes["torchvision-loop"] = make_torchvision_loop(recipe, views)
        baselines.append("torchvision-loop")

    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8, generator=gen).to(device)

    for fn in pipes.values():  # warm-up (allocator, cudnn, lazy imports)
        for _ in range(args.warmup):
            fn(x)
    _sync(device)

    times: dict[str, list[float]] = {name: [] for name in pipes}
    for _ in range(args.reps):
        for name, fn in pipes.items():  # interleaved
            _sync(device)
            t0 = time.perf_counter()
            y = fn(x)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
            assert y.shape == (args.batch, 3, size, size), (name, y.shape)

    ips = {name: args.batch / statistics.median(ts) for name, ts in times.items()}
    print(f"\nsize {size}  batch {args.batch}  device {device}  reps {args.reps}  {views!r}")
    for name, v in ips.items():
        ms = 1000 * statistics.median(times[name])
        print(f"  {name:18s} {v:12,.0f} img/s   {ms:9.2f} ms/batch")
    for b in baselines:
        print(f"  ratio ours/{b}: {ips['ours'] / ips[b]:.2f}x")
    return ips


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, nargs="+", default=[32, 64])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--solarize-p", type=float, default=0.2, help="solarize probability (MoCo-v2: 0)")
    p.add_argument("--baseline", default="auto", choices=["auto", "kornia", "torchvision", "both"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave default)")
    args = p.parse_args(argv)

    device, name = torch_device(args.device, args.threads)
    print(f"torch {torch.__version__} on {name}")
    for size in args.size:
        bench_size(size, args, device)


if __name__ == "__main__":
    main()
