"""Per-step schedules, each a pure function of training progress.

``progress`` is the fraction of training done, in [0, 1].
"""

from __future__ import annotations

import math


def learning_rate(step: int, total_steps: int, warmup_steps: int, base_lr: float, schedule: str) -> float:
    """Linear warmup from ``base_lr/warmup_steps`` to ``base_lr``, then cosine to 0 (or constant)."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * t))


def key_momentum(progress: float, base: float, ramp: bool) -> float:
    """EMA momentum; with ``ramp`` it follows BYOL's cosine from ``base`` to 1."""
    if not ramp:
        return base
    return 1.0 - (1.0 - base) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def smoothing(progress: float, eps: float, ramp: str) -> float:
    """SInfoNCE ε at ``progress``.

    * ``none``: constant ε;
    * ``warm``: linear from 0 to ε over the first half of training, then ε;
    * ``cos``: ``ε (1 - cos(π p)) / 2``, from 0 to ε over the whole run.
    """
    p = min(1.0, max(0.0, progress))
    if ramp == "none":
        return eps
    if ramp == "warm":
        return eps * min(1.0, 2.0 * p)
    if ramp == "cos":
        return eps * 0.5 * (1.0 - math.cos(math.pi * p))
    raise ValueError(f"smoothing ramp must be none, warm or cos, got {ramp!r}")
