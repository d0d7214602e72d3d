"""The two reference recipes every search evaluates first, so it can report its lift.

* ``mocov2`` -- the ResNet-50 MoCo-v2 recipe (Chen et al. 2020): base lr 0.03
  (scaled by batch_size/256), temperature 0.2, weight decay 1e-4, a 2048-wide
  projection MLP, the MoCo-v2 augmentation (crop 0.2-1, colour jitter 0.4 with
  p 0.8, grayscale 0.2, blur 0.5, flip) and the one-directional loss. The queue
  (65536) and key momentum (0.999) are sized for ImageNet; on a CIFAR-size proxy
  they are the values of MoCo's own CIFAR-10 adaptation (4096, 0.99).
* ``sinfonce-light`` -- a recipe for lightweight backbones: SInfoNCE (label
  smoothing 0.1 over the 16 nearest queue keys, warmed up), a symmetric loss, low
  weight decay (5e-5), a narrower head (1024), a ramped key momentum and no blur
  (blur destroys 32 px images).

Budgets may then fix the batch and queue sizes of the proxy (see ``budget.py``);
both recipes go through the same composition as sampled trials. Neither distils
(``distill: null`` wins over a teacher fixed in the space), so a distilled search's
lift is measured against the published, teacher-free recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# MoCo-v2 view augmentation (torchvision recipe of Chen et al. 2020)
MOCO_V2_AUGMENT = {
    "crop_min_scale": 0.2,
    "jitter_strength": 0.4,
    "jitter_p": 0.8,
    "gray_p": 0.2,
    "blur_p": 0.5,
    "solarize_p": 0.0,
    "flip_p": 0.5,
}


@dataclass(frozen=True)
class Baseline:
    name: str
    title: str
    values: dict = field(default_factory=dict)


MOCO_V2 = Baseline(
    "mocov2",
    "ResNet-50 MoCo-v2 recipe",
    {
        "optimizer": "sgd",
        "lr": 0.03,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "lr_schedule": "cosine",
        "warmup_epochs": 0.0,
        "batch_size": 256,
        "temperature": 0.2,
        "smoothing": 0.0,
        "smoothing_k": 0,
        "smoothing_ramp": "none",
        "queue_size": 4096,
        "key_momentum": 0.99,
        "momentum_ramp": False,
        "symmetric": False,
        "bn_splits": 0,
        "proj_hidden_dim": 2048,
        "proj_out_dim": 128,
        "proj_bn": False,  # MoCo-v2's plain MLP head
        "distill": None,
        **MOCO_V2_AUGMENT,
    },
)

SINFONCE_LIGHT = Baseline(
    "sinfonce-light",
    "lightweight SInfoNCE recipe",
    {
        "optimizer": "sgd",
        "lr": 0.06,
        "momentum": 0.9,
        "weight_decay": 5e-5,
        "lr_schedule": "cosine",
        "warmup_epochs": 0.0,
        "batch_size": 256,
        "temperature": 0.2,
        "smoothing": 0.1,
        "smoothing_k": 16,
        "smoothing_ramp": "warm",
        "queue_size": 4096,
        "key_momentum": 0.99,
        "momentum_ramp": True,
        "symmetric": True,
        "bn_splits": 0,
        "proj_hidden_dim": 1024,
        "proj_out_dim": 128,
        "crop_min_scale": 0.25,
        "jitter_strength": 0.4,
        "jitter_p": 0.8,
        "gray_p": 0.2,
        "blur_p": 0.0,
        "solarize_p": 0.0,
        "flip_p": 0.5,
        "distill": None,
    },
)

BASELINES: tuple[Baseline, ...] = (MOCO_V2, SINFONCE_LIGHT)


def by_name(name: str) -> Baseline:
    for b in BASELINES:
        if b.name == name:
            return b
    raise KeyError(f"unknown baseline {name!r}; known: {', '.join(b.name for b in BASELINES)}")
