"""MoCo-v2 (Chen et al. 2020) with SInfoNCE smoothing: an EMA key encoder and a queue of negatives.

Each step: the key encoder follows the query encoder (momentum ``key_momentum``, optionally
ramped to 1), the query of view 1 is contrasted with the key of view 2 against the queue (and, with
``symmetric``, the query of view 2 with the key of view 1, summed as in MoCo's CIFAR-10 demo),
and the step's keys are enqueued after the optimiser step. Shuffle-BN runs both encoders in
``bn_splits`` groups (:mod:`trainer.moco`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .. import schedules
from ..device import autocast
from ..errors import RecipeError
from ..moco import MoCo, auto_bn_splits
from .base import Method, StepLoss, register_method


@register_method
class MoCoV2(Method):
    name = "mocov2"
    fields = ("queue_size", "key_momentum", "momentum_ramp", "symmetric", "bn_splits")

    @classmethod
    def negatives(cls, recipe: Any) -> tuple[int, str]:
        return recipe.queue_size, "queue_size"

    @classmethod
    def check(cls, recipe: Any) -> None:
        keys_per_step = recipe.batch_size * (2 if recipe.symmetric else 1)
        if recipe.queue_size < keys_per_step:
            raise RecipeError(f"queue_size must be >= batch_size{' * 2 (symmetric)' if recipe.symmetric else ''}"
                              f" = {keys_per_step}, got {recipe.queue_size}")
        super().check(recipe)

    @classmethod
    def build_model(cls, recipe: Any, backbone: nn.Module, feature_dim: int) -> MoCo:
        splits = recipe.bn_splits or auto_bn_splits(recipe.batch_size)
        return MoCo(backbone, feature_dim, recipe.proj_hidden_dim, recipe.proj_out_dim,
                    recipe.queue_size, bn_splits=splits, proj_bn=recipe.proj_bn)

    def before_step(self, progress: float) -> None:
        r = self.recipe
        self.model.momentum_update(schedules.key_momentum(progress, r.key_momentum, r.momentum_ramp))

    def loss(self, views: Sequence[torch.Tensor], smoothing: float, generator: torch.Generator,
             embed_all: bool) -> StepLoss:
        (v1, v2), model, symmetric = views, self.model, self.recipe.symmetric
        with autocast(self.device):
            q1 = model.query(v1)
            k2 = model.key(v2, generator)
            q2 = model.query(v2) if symmetric or embed_all else None
            if symmetric:
                k1 = model.key(v1, generator)
        queue = model.queue.clone()
        loss = self.criterion(q1, k2, queue, smoothing)
        self._keys = k2
        if symmetric:  # sum of both directions, as in MoCo's CIFAR demo
            loss = loss + self.criterion(q2, k1, queue, smoothing)
            self._keys = torch.cat([k1, k2])
        return StepLoss(loss, (q1, q2))

    def after_step(self, out: StepLoss) -> None:
        self.model.enqueue(self._keys.detach().float())
        self._keys = None

    def epoch_report(self, progress: float) -> dict:
        r = self.recipe
        return {"key_momentum": schedules.key_momentum(progress, r.key_momentum, r.momentum_ramp)}
