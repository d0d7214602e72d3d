"""MoCo-v2 on one device: query encoder, EMA key encoder, negative queue, shuffle-BN; and the
online network every method shares (:class:`ContrastiveModel`).

Shuffle-BN on a single device: both encoders run their batch in ``bn_splits``
groups, so batch-norm statistics are computed per group (like per-GPU BN in
MoCo). The key encoder sees the batch in a shuffled order, so a query and its
positive key are normalised with statistics of different groups and cannot
cheat through BN. This is the ``SplitBatchNorm`` + shuffle of MoCo's CIFAR demo,
done by splitting the forward pass, which works for any timm normalisation layer.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .heads import ProjectionHead

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@torch.no_grad()
def update_momentum(model: nn.Module, model_ema: nn.Module, m: float) -> None:
    """EMA update ``ema = m * ema + (1 - m) * model`` over parameters."""
    ema_params = list(model_ema.parameters())
    params = list(model.parameters())
    torch._foreach_mul_(ema_params, m)
    torch._foreach_add_(ema_params, params, alpha=1.0 - m)


def batch_shuffle(x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x[perm], unshuffle)`` where ``x[perm][unshuffle] == x``."""
    perm = torch.randperm(x.shape[0], device=x.device, generator=generator)
    return x[perm], torch.argsort(perm)


class ImageNetInput(nn.Module):
    """A module fed images in [0, 1]: :meth:`normalize` applies the ImageNet mean and std held in its
    ``mean`` / ``std`` buffers (so they follow ``.to(device)`` and sit in the state_dict). The one home of
    the input normalisation: the MoCo model and a distillation teacher both inherit it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> ImageNet-normalised inputs."""
        return (x - self.mean) / self.std


def split_forward(module: nn.Module, x: torch.Tensor, splits: int) -> torch.Tensor:
    """Run ``module`` on ``splits`` chunks of the batch (per-chunk BN statistics)."""
    if splits <= 1:
        return module(x)
    return torch.cat([module(c) for c in x.chunk(splits)], dim=0)


def auto_bn_splits(batch_size: int) -> int:
    """Groups of about 64 images, between 2 and 8 (1 for tiny batches)."""
    if batch_size < 16:
        return 1
    return max(2, min(8, batch_size // 64))


class Encoder(nn.Module):
    """Backbone followed by a projection head; ``forward`` returns normalised embeddings."""

    def __init__(self, backbone: nn.Module, feature_dim: int, hidden_dim: int, out_dim: int,
                 batch_norm: bool = True):
        super().__init__()
        self.backbone = backbone
        self.head = ProjectionHead(feature_dim, hidden_dim, out_dim, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)


class ContrastiveModel(ImageNetInput):
    """The online network every method trains: ``encoder_q`` (backbone + projection head), run in
    ``bn_splits`` groups. ``query`` has gradients; ``features`` is what the kNN monitor, the probe,
    precise BN and ``encoder.pt`` read (``encoder_q.backbone``). A method adds its own parts on top
    (MoCo: the key encoder and the queue); SimCLR trains this model as it is."""

    def __init__(self, backbone: nn.Module, feature_dim: int, hidden_dim: int, out_dim: int,
                 bn_splits: int = 1, proj_bn: bool = True):
        super().__init__()
        self.encoder_q = Encoder(backbone, feature_dim, hidden_dim, out_dim, batch_norm=proj_bn)
        self.bn_splits = bn_splits

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return split_forward(self.encoder_q, self.normalize(x), self.bn_splits)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of clean images in [0, 1] (for kNN and the probe)."""
        return self.encoder_q.backbone(self.normalize(x))


class MoCo(ContrastiveModel):
    """MoCo-v2 model. ``query`` has gradients; ``key`` is the EMA copy, no gradients."""

    def __init__(self, backbone: nn.Module, feature_dim: int, hidden_dim: int, out_dim: int,
                 queue_size: int, bn_splits: int = 1, proj_bn: bool = True):
        super().__init__(backbone, feature_dim, hidden_dim, out_dim, bn_splits=bn_splits, proj_bn=proj_bn)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, out_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def key(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        shuffled, unshuffle = batch_shuffle(self.normalize(x), generator)
        return split_forward(self.encoder_k, shuffled, self.bn_splits)[unshuffle]

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        update_momentum(self.encoder_q, self.encoder_k, m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest queue entries with ``keys`` (wrapping around)."""
        n, size = keys.shape[0], self.queue.shape[0]
        idx = (self.queue_ptr + torch.arange(n, device=keys.device)) % size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % size)
