"""Weighted kNN monitor (Wu et al. 2018): a cheap per-epoch quality signal.

Cosine similarity between L2-normalised features; each of the ``k`` nearest
bank entries votes for its class with weight ``exp(sim / t)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
                k: int = 200, t: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    """Predicted class per query row. ``query [Q, D]``, ``bank [N, D]``, ``bank_labels [N]``."""
    if bank.shape[0] == 0:
        raise ValueError("the kNN bank is empty")
    k = min(k, bank.shape[0])
    query, bank = F.normalize(query.float(), dim=1), F.normalize(bank.float(), dim=1)
    preds = []
    for q in query.split(chunk):
        sim, idx = (q @ bank.t()).topk(k, dim=1)
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[idx], (sim / t).exp())
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


@torch.no_grad()
def knn_top1(query: torch.Tensor, query_labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
             num_classes: int, k: int = 200, t: float = 0.1) -> float:
    """Top-1 accuracy (in [0, 1]) of the weighted kNN classifier."""
    pred = knn_predict(query, bank, bank_labels, num_classes, k, t)
    return (pred == query_labels).float().mean().item()
