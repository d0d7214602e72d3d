"""Contrastive losses: InfoNCE and smoothed InfoNCE against a queue, and the smoothed cross-entropy
every method's logits end in.

Both losses take L2-normalised tensors:

* ``q``: queries, shape ``[B, D]``
* ``k``: positive keys, shape ``[B, D]`` (no gradient needed)
* ``queue``: negative keys, shape ``[K, D]``

and build logits ``z = [q·k, q·queue_1, ..., q·queue_K] / T`` of shape ``[B, 1+K]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def contrastive_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits ``[B, 1+K]``: the positive in column 0, then the queue. Computed in fp32."""
    if q.shape != k.shape or q.dim() != 2:
        raise ValueError(f"q and k must both be [B, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    if queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be [K, {q.shape[1]}], got {tuple(queue.shape)}")
    q, k, queue = q.float(), k.float(), queue.float()
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.t()
    return torch.cat([pos, neg], dim=1) / temperature


def soft_targets(neg_logits: torch.Tensor, smoothing: float, k: int = 0) -> torch.Tensor:
    """SInfoNCE targets ``[B, 1+K]``: ``1-ε`` on the positive, ``ε`` spread over negatives.

    With ``k == 0`` the ``ε`` is spread uniformly over all ``K`` negatives; with
    ``k > 0`` it goes, ``ε/k`` each, to the ``k`` negatives most similar to the
    query (largest logits). Each row sums to 1.

    >>> t = soft_targets(torch.tensor([[0.1, 0.9, 0.5]]), 0.2, k=2)
    >>> t.tolist()
    [[0.800000011920929, 0.0, 0.10000000149011612, 0.10000000149011612]]
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    b, n_neg = neg_logits.shape
    if not 0 <= k <= n_neg:
        raise ValueError(f"k must be in [0, {n_neg}] (the number of negatives), got {k}")
    targets = neg_logits.new_zeros(b, 1 + n_neg, dtype=torch.float32)
    targets[:, 0] = 1.0 - smoothing
    if smoothing == 0.0:
        return targets
    if k == 0:
        targets[:, 1:] = smoothing / n_neg
    else:
        idx = neg_logits.detach().topk(k, dim=1).indices + 1
        targets.scatter_(1, idx, smoothing / k)
    return targets


class InfoNCELoss(nn.Module):
    """InfoNCE (MoCo): ``L = -log softmax(z)_0``, averaged over the batch.

    >>> q = F.normalize(torch.randn(8, 16), dim=1)
    >>> queue = F.normalize(torch.randn(64, 16), dim=1)
    >>> InfoNCELoss(0.2)(q, q, queue).item() < InfoNCELoss(0.2)(q, -q, queue).item()
    True
    """

    def __init__(self, temperature: float = 0.2):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        logits = contrastive_logits(q, k, queue, self.temperature)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, labels)


class SInfoNCELoss(nn.Module):
    """Smoothed InfoNCE (Lin et al. 2022): cross-entropy against a soft target.

    ``L = -Σ_j t_j · log softmax(z)_j`` with ``t = soft_targets(z[:, 1:], ε, k)``:
    the positive gets ``1-ε``; ``ε`` goes to the ``k`` queue negatives most
    similar to the query (``k = 0``: uniformly to all negatives). This softens
    the penalty on false negatives and noisy positives. ``ε = 0`` is exactly
    InfoNCE. ``ε`` may be overridden per call (for a ramp).

    >>> q = F.normalize(torch.randn(8, 16), dim=1)
    >>> queue = F.normalize(torch.randn(64, 16), dim=1)
    >>> a = SInfoNCELoss(0.2, smoothing=0.0)(q, q, queue)
    >>> torch.allclose(a, InfoNCELoss(0.2)(q, q, queue))
    True
    """

    def __init__(self, temperature: float = 0.2, smoothing: float = 0.1, k: int = 0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        self.temperature, self.smoothing, self.k = temperature, smoothing, k

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
                smoothing: float | None = None) -> torch.Tensor:
        eps = self.smoothing if smoothing is None else smoothing
        return smoothed_cross_entropy(contrastive_logits(q, k, queue, self.temperature), eps, self.k)


def smoothed_cross_entropy(logits: torch.Tensor, smoothing: float, k: int = 0) -> torch.Tensor:
    """SInfoNCE on logits ``[B, 1+K]`` (the positive in column 0, then the negatives), averaged over
    the batch: plain cross-entropy at ``smoothing == 0``, else against :func:`soft_targets` with
    ``min(k, K)`` nearest negatives. Every method's loss ends here (MoCo: the queue; SimCLR: in-batch).

    >>> round(smoothed_cross_entropy(torch.tensor([[1.0, 0.0, 0.0]]), 0.0).item(), 4)  # log(e + 2) - 1
    0.5514
    """
    if smoothing == 0.0:
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, labels)
    targets = soft_targets(logits[:, 1:], smoothing, min(k, logits.shape[1] - 1))
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
