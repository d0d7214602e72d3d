"""Per-step schedules, each a pure function of training progress.

``progress`` is the fraction of training done, in [0, 1]. :data:`LR_SCHEDULES` and
:data:`SMOOTHING_RAMPS` map a recipe's ``lr_schedule`` and ``smoothing_ramp`` to their
functions; their keys are the values the recipe accepts, so a new one is one entry here.
"""

from __future__ import annotations

import math
from typing import Callable

from .errors import either


def _cosine(base_lr: float, t: float) -> float:
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * t))


def _constant(base_lr: float, t: float) -> float:
    return base_lr


# name -> lr(base_lr, t), t in [0, 1] the progress after the warmup; the order is the one messages list
LR_SCHEDULES: dict[str, Callable[[float, float], float]] = {
    "cosine": _cosine,
    "constant": _constant,
}


def learning_rate(step: int, total_steps: int, warmup_steps: int, base_lr: float, schedule: str) -> float:
    """Linear warmup from ``base_lr/warmup_steps`` to ``base_lr``, then ``schedule`` (cosine to 0, or constant)."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    after = LR_SCHEDULES.get(schedule)
    if after is None:
        raise ValueError(f"lr schedule must be {either(LR_SCHEDULES)}, got {schedule!r}")
    span = max(1, total_steps - warmup_steps)
    return after(base_lr, min(1.0, (step - warmup_steps) / span))


def key_momentum(progress: float, base: float, ramp: bool) -> float:
    """EMA momentum; with ``ramp`` it follows BYOL's cosine from ``base`` to 1."""
    if not ramp:
        return base
    return 1.0 - (1.0 - base) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# name -> eps(eps, p), p the progress in [0, 1]:
# * ``none``: constant ε;
# * ``warm``: linear from 0 to ε over the first half of training, then ε;
# * ``cos``: ``ε (1 - cos(π p)) / 2``, from 0 to ε over the whole run.
SMOOTHING_RAMPS: dict[str, Callable[[float, float], float]] = {
    "none": lambda eps, p: eps,
    "warm": lambda eps, p: eps * min(1.0, 2.0 * p),
    "cos": lambda eps, p: eps * 0.5 * (1.0 - math.cos(math.pi * p)),
}


def smoothing(progress: float, eps: float, ramp: str) -> float:
    """SInfoNCE ε at ``progress``, following ``ramp`` (a key of :data:`SMOOTHING_RAMPS`)."""
    follow = SMOOTHING_RAMPS.get(ramp)
    if follow is None:
        raise ValueError(f"smoothing ramp must be {either(SMOOTHING_RAMPS)}, got {ramp!r}")
    return follow(eps, min(1.0, max(0.0, progress)))
