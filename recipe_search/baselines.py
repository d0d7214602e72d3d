"""The two reference recipes every search runs first and confirms beside its finalists.

* ``mocov2`` -- **the published ResNet-50 MoCo-v2 recipe** (Chen, Fan, Girshick, He 2020,
  "Improved Baselines with Momentum Contrastive Learning", arXiv:2003.04297, and the
  ``main_moco.py`` defaults of facebookresearch/moco). From the paper: SGD with momentum
  0.9, base lr 0.03 for a batch of 256 (scaled linearly with the batch), weight decay
  1e-4, cosine schedule, temperature 0.2, a 2-layer MLP head with a 2048-wide hidden
  layer and no BN, 128-d output, the one-directional loss, and the MoCo-v2 augmentation
  (random resized crop 0.2-1, colour jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale 0.2,
  Gaussian blur 0.5, horizontal flip). **CIFAR adaptations** (ours, stated): the queue
  (65536) and key momentum (0.999) are sized for ImageNet's 1.28M images; on a
  CIFAR-size proxy we use 4096 and 0.99, the values of MoCo's own CIFAR-10 demo
  notebook; budgets may then fix the batch and queue sizes to what the proxy holds
  (``budget.py``), and the epochs and image size are the budget's.
* ``sinfonce-light`` -- **our starting recipe for lightweight backbones, not a published
  one.** It is informed by Lin et al. 2022 ("Establishing a Stronger Baseline for
  Lightweight Contrastive Models"): their SInfoNCE loss (here label smoothing 0.1 over
  the 16 nearest queue keys, warmed up) and a smaller weight decay than ResNet-50's (here
  5e-5). The other values are our choices for small CIFAR-size proxies and are not
  traced to that paper: a symmetric loss (as in MoCo's CIFAR demo), base lr 0.06, a
  narrower BN head (1024), a ramped key momentum, crop 0.25-1 and no blur (blur
  destroys 32 px images).

* ``simclr`` -- **SimCLR** (Chen, Kornblith, Norouzi, Hinton 2020, arXiv:2002.05709): NT-Xent
  with in-batch negatives, no smoothing, temperature 0.5 (the paper's CIFAR-10 value), a BN
  projection head (hidden 2048, 128-d output), colour jitter strength 0.5 and no blur (its
  CIFAR-10 settings). **Ours**: SGD with base lr 0.06 and weight decay 5e-4 (the paper uses LARS
  at batch 1024+) and the MoCo-v2 crop/flip/grayscale; batch size and epochs from the budget.
  It runs only in spaces that can choose ``method: simclr`` (``search_spaces/methods.yaml``).

A baseline runs in a search only when the search's space can choose its method
(:func:`baselines_for`): a default (MoCo-v2) space runs and confirms ``mocov2`` and
``sinfonce-light`` whatever other methods' baselines exist. The untrained floor is always
evaluated with ``sinfonce-light``'s network (:data:`FLOOR_BASELINE`).

Both go through the same composition as sampled trials. Neither distils
(``distill: null`` wins over a teacher fixed in the space), so a distilled search's
lift is measured against teacher-free recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASELINE_KEY = "baseline"  # a baseline trial's config: {"baseline": name}
JOB_KEY = "job"  # a confirmation run's config: {"job": {"name", "role", "seed", "recipe"}}


def baseline_name(config: dict | None) -> str | None:
    """The baseline a trial's config runs, or None: ``{"baseline": name}`` in the search
    stage, ``{"job": {"role": "baseline", "name": name, ...}}`` in the confirmation stage.
    The one place that reads these keys (ASHA, the trainable, the MLflow logger, the view).

    >>> baseline_name({"baseline": "mocov2"}), baseline_name({"lr": 0.1})
    ('mocov2', None)
    >>> baseline_name({"job": {"name": "mocov2", "role": "baseline"}})
    'mocov2'
    """
    name = (config or {}).get(BASELINE_KEY)
    job = (config or {}).get(JOB_KEY)
    if job is not None and job.get("role") == "baseline":
        name = job.get("name")
    return name or None

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
    "ResNet-50 MoCo-v2 recipe (Chen et al. 2020; CIFAR queue/momentum)",
    {
        "method": "mocov2",
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
    "our lightweight SInfoNCE starting recipe (informed by Lin et al. 2022)",
    {
        "method": "mocov2",
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

SIMCLR = Baseline(
    "simclr",
    "SimCLR (Chen et al. 2020; CIFAR-10 temperature and colour strength, SGD)",
    {
        "method": "simclr",
        "optimizer": "sgd",
        "lr": 0.06,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "lr_schedule": "cosine",
        "warmup_epochs": 0.0,
        "batch_size": 256,
        "temperature": 0.5,
        "smoothing": 0.0,
        "smoothing_k": 0,
        "smoothing_ramp": "none",
        "proj_hidden_dim": 2048,
        "proj_out_dim": 128,
        "proj_bn": True,
        **MOCO_V2_AUGMENT,
        "jitter_strength": 0.5,
        "blur_p": 0.0,
        "distill": None,
    },
)

BASELINES: tuple[Baseline, ...] = (MOCO_V2, SINFONCE_LIGHT, SIMCLR)
FLOOR_BASELINE = SINFONCE_LIGHT.name  # the recipe whose untrained encoder is the floor


def method_of(b: Baseline) -> str:
    """The method baseline ``b`` trains (``mocov2`` when its values do not name one)."""
    from trainer.recipe import DEFAULT_METHOD

    return b.values.get("method", DEFAULT_METHOD)


def baselines_for(space) -> tuple[Baseline, ...]:
    """The baselines a search over ``space`` runs and confirms: those whose method the space can
    choose (``space.method_choices()``), in :data:`BASELINES` order."""
    methods = space.method_choices()
    return tuple(b for b in BASELINES if method_of(b) in methods)


def by_name(name: str) -> Baseline:
    for b in BASELINES:
        if b.name == name:
            return b
    raise KeyError(f"unknown baseline {name!r}; known: {', '.join(b.name for b in BASELINES)}")
