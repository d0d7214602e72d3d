"""Optimisers: SGD (MoCo-v2), LARS and AdamW, with the lr scaled by batch/256.

:data:`OPTIMIZERS` maps a recipe's ``optimizer`` to its builder; its keys are the values
``Recipe.optimizer`` accepts, so a new optimiser is one builder and one entry here.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .errors import either


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al. 2017).

    For each parameter ``p`` with ``lars=True`` in its group, the update uses
    ``g + wd * p`` scaled by ``eta * ||p|| / ||g + wd * p||``. Groups with
    ``lars=False`` (biases, norm layers) get plain SGD without weight decay.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if group["lars"]:
                    d = d.add(p, alpha=group["weight_decay"])
                    p_norm, d_norm = torch.norm(p), torch.norm(d)
                    trust = torch.where((p_norm > 0) & (d_norm > 0), group["eta"] * p_norm / d_norm,
                                        torch.ones_like(p_norm))
                    d = d.mul(trust)
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = d.clone()
                else:
                    buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _split_decay(model: nn.Module) -> tuple[list, list]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def _sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]  # MoCo-v2 decays every parameter
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _lars(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = _split_decay(model)
    return LARS([{"params": decay}, {"params": no_decay, "lars": False, "weight_decay": 0.0}],
                lr=lr, momentum=momentum, weight_decay=weight_decay)


def _adamw(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = _split_decay(model)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(momentum, 0.999))


# name -> builder(model, lr, momentum, weight_decay); the order is the one error messages list
OPTIMIZERS: dict[str, Callable[[nn.Module, float, float, float], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "lars": _lars,
    "adamw": _adamw,
}


def build_optimizer(recipe, model: nn.Module) -> torch.optim.Optimizer:
    """The optimiser of ``recipe`` (a :class:`trainer.recipe.Recipe`: its ``optimizer``, ``scaled_lr``,
    ``momentum``, ``weight_decay``) over ``model``'s trainable parameters."""
    make = OPTIMIZERS.get(recipe.optimizer)
    if make is None:
        raise ValueError(f"optimizer must be {either(OPTIMIZERS)}, got {recipe.optimizer!r}")
    return make(model, recipe.scaled_lr, recipe.momentum, recipe.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
