"""Model construction: the network a recipe's method trains, and frozen-backbone features of its images.

:func:`build_model` is the one place a recipe becomes a network (the training run, the untrained
floor and a distillation teacher all build theirs here): the timm backbone, then the recipe's
method (:mod:`trainer.methods`) builds the rest around it; :func:`extract_features` is what the kNN
monitor, the linear probe and the untrained floor read, always inside :func:`evaluation_stats`
(the backbone's BN statistics re-estimated on the clean train images, :mod:`trainer.precise_bn`).
"""

from __future__ import annotations

import torch

from .backbone import create_backbone
from .device import autocast, channels_last
from .methods import get_method
from .moco import ContrastiveModel
from .precise_bn import precise_bn
from .recipe import Recipe

FEATURE_BATCH = 512  # images per forward pass when extracting features


def build_model(recipe: Recipe) -> ContrastiveModel:
    """A freshly initialised model for ``recipe``, on the CPU: the backbone, then what the recipe's
    method builds around it (MoCo-v2: projection head, key encoder, queue)."""
    backbone, feature_dim = create_backbone(recipe.backbone, recipe.image_size)
    return get_method(recipe.method).build_model(recipe, backbone, feature_dim)


@torch.no_grad()
def extract_features(model: ContrastiveModel, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Backbone features of uint8 images, in eval mode, without augmentation."""
    was_training = model.training
    model.eval()
    out = []
    for chunk in images.split(FEATURE_BATCH):
        x = chunk.to(device, non_blocking=True).float().div_(255)
        if channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            out.append(model.features(x).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def evaluation_stats(model: ContrastiveModel, train_images: torch.Tensor, device: torch.device):
    """Context in which ``model``'s backbone holds precise BN statistics of the clean uint8
    ``train_images`` (its training state is put back on exit): every evaluation runs inside it."""
    def forward(x: torch.Tensor) -> None:
        x = x.float().div_(255)
        if channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            model.features(x)

    return precise_bn(model.encoder_q.backbone, forward, train_images, device)
