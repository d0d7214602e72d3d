"""Projection heads, written as a list of blocks (lightly style)."""

from __future__ import annotations

from torch import nn


class ProjectionHead(nn.Sequential):
    """MLP projection head: ``Linear(in, hidden) -> ReLU -> Linear(hidden, out)``.

    This is MoCo-v2's head; ``hidden`` is the knob that DisCo enlarges.

    >>> import torch
    >>> head = ProjectionHead(576, 2048, 128)
    >>> head(torch.randn(4, 576)).shape
    torch.Size([4, 128])
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        for name, v in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
