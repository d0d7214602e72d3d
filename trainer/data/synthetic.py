"""``dataset="synthetic"``: a deterministic, learnable toy set generated from the seed (no files)."""

from __future__ import annotations

import math

import torch

from ..errors import DataError
from .spec import DataSpec, Split, seeded_generator

SYNTHETIC_CLASSES = 10       # synthetic classes when DataSpec.classes == 0
SYNTHETIC_TRAIN = 100        # synthetic train images per class when train_per_class == 0
SYNTHETIC_TEST = 50          # synthetic test images per class when test_per_class == 0


def describe_synthetic(spec: DataSpec) -> str:
    return f"synthetic: generated texture patterns ({spec.classes or SYNTHETIC_CLASSES} classes, no files)"


def _synthetic_class(c: int, n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` images of class ``c``: a class-specific pattern kind, orientation, frequency and colour pair,
    with per-image jitter in pose, phase, colour and pixel noise."""
    kind = c % 4
    theta0 = ((c * 0.6180339887) % 1.0) * (math.pi / 2)   # [0, pi/2): distinct under horizontal flips
    freq0 = 1.5 + ((c * 0.4142135624) % 1.0) * 3.0        # cycles per half image
    palette = torch.Generator().manual_seed(7919 + c)
    fg = torch.rand(3, generator=palette) * 0.7 + 0.3
    bg = (fg + 0.5) % 1.0 * 0.6
    coords = torch.linspace(-1.0, 1.0, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    theta = theta0 + 0.08 * torch.randn(n, 1, 1, generator=gen)
    freq = freq0 * (1 + 0.1 * torch.randn(n, 1, 1, generator=gen))
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=gen)
    cx, cy = (torch.rand(2, n, 1, 1, generator=gen) - 0.5) * 0.6
    u = (xx - cx) * torch.cos(theta) + (yy - cy) * torch.sin(theta)
    v = -(xx - cx) * torch.sin(theta) + (yy - cy) * torch.cos(theta)
    w = 2 * math.pi * freq / 2
    if kind == 0:      # grating
        p = torch.sin(w * u + phase)
    elif kind == 1:    # checkerboard
        p = torch.tanh(4 * torch.sin(w * u + phase) * torch.sin(w * v + phase))
    elif kind == 2:    # rings
        p = torch.sin(w * torch.sqrt(u * u + v * v) * 1.5 + phase)
    else:              # dots
        p = torch.tanh(3 * (torch.cos(w * u + phase) * torch.cos(w * v + phase) - 0.3))
    m = ((p + 1) / 2).unsqueeze(1)                                  # [n, 1, S, S]
    jitter = 1 + 0.1 * torch.randn(n, 3, 1, 1, generator=gen)
    img = (bg.view(1, 3, 1, 1) * (1 - m) + fg.view(1, 3, 1, 1) * m) * jitter
    img = img + 0.06 * torch.randn(n, 3, size, size, generator=gen)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def synthetic_splits(spec: DataSpec, size: int, seed: int) -> tuple[Split, Split]:
    n_classes = spec.classes or SYNTHETIC_CLASSES
    if n_classes > 1000:
        raise DataError(f"classes must be in [0, 1000] for the synthetic dataset, got {n_classes}")
    classes = [f"pattern{c:03d}" for c in range(n_classes)]
    counts = {"train": (spec.train_per_class or SYNTHETIC_TRAIN) + spec.val_per_class,
              "test": spec.test_per_class or SYNTHETIC_TEST}
    splits = []
    for split, n in counts.items():
        xs = [_synthetic_class(c, n, size, seeded_generator(seed, "synthetic", split, c)) for c in range(n_classes)]
        y = torch.arange(n_classes).repeat_interleave(n)
        splits.append(Split(x=torch.cat(xs), y=y, classes=classes))
    return splits[0], splits[1]

