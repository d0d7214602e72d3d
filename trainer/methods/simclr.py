"""SimCLR (Chen et al. 2020, arXiv 2002.05709): in-batch negatives, NT-Xent, SInfoNCE smoothing.

No key encoder and no queue: both views go through the online encoder (one BN over each view's
batch) and each of the ``2N`` embeddings is contrasted with its other view (the positive) against
the other ``2N - 2`` embeddings of the step (the negatives). The loss is the mean over all ``2N``
rows, and SInfoNCE smoothing applies to it as to MoCo: ``1 - ε`` on the positive, ``ε`` spread over
the negatives (all of them, or the ``smoothing_k`` most similar). MoCo-v2's fields (``queue_size``,
``key_momentum``, ``momentum_ramp``, ``symmetric``, ``bn_splits``) are ignored.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..device import autocast
from ..losses import smoothed_cross_entropy
from ..moco import ContrastiveModel
from .base import Method, StepLoss, register_method


def nt_xent_logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits ``[2N, 1 + 2N - 2]`` of L2-normalised ``z1``, ``z2`` (``[N, D]`` each, row i of both from
    image i): row ``r`` holds its positive (the other view of its image) in column 0, then its
    similarities to the other ``2N - 2`` embeddings, in order, divided by ``temperature``. fp32.

    >>> z = torch.eye(2)
    >>> nt_xent_logits(z, z, 1.0).tolist()  # the positive (1), then the two other embeddings
    [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    """
    if z1.shape != z2.shape or z1.dim() != 2 or z1.shape[0] < 2:
        raise ValueError(f"z1 and z2 must both be [N, D] with N >= 2, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = torch.cat([z1, z2]).float()
    sim = z @ z.t() / temperature
    rows = torch.arange(2 * n, device=z.device)
    partner = (rows + n) % (2 * n)
    others = torch.ones_like(sim, dtype=torch.bool)
    others[rows, rows] = False
    others[rows, partner] = False
    return torch.cat([sim[rows, partner].unsqueeze(1), sim[others].view(2 * n, 2 * n - 2)], dim=1)


@register_method
class SimCLR(Method):
    name = "simclr"

    @classmethod
    def negatives(cls, recipe: Any) -> tuple[int, str]:
        return 2 * recipe.batch_size - 2, "2*batch_size-2"

    @classmethod
    def build_model(cls, recipe: Any, backbone: nn.Module, feature_dim: int) -> ContrastiveModel:
        return ContrastiveModel(backbone, feature_dim, recipe.proj_hidden_dim, recipe.proj_out_dim,
                                bn_splits=1, proj_bn=recipe.proj_bn)

    def loss(self, views: Sequence[torch.Tensor], smoothing: float, generator: torch.Generator,
             embed_all: bool) -> StepLoss:
        with autocast(self.device):
            z1, z2 = (self.model.query(v) for v in views)
        logits = nt_xent_logits(z1, z2, self.recipe.temperature)
        return StepLoss(smoothed_cross_entropy(logits, smoothing, self.recipe.smoothing_k), (z1, z2))
