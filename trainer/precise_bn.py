"""Precise BatchNorm statistics for evaluation (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm").

A backbone's BN running statistics are whatever the last training steps left: an exponential
average over augmented views for a trained encoder, and the init values (mean 0, var 1) for an
untrained one. Either way they are not the statistics of the images being evaluated, and for
the untrained encoder the gap alone swings val kNN by up to 13 points from seed to seed
(docs/results/floor-exploration). :func:`precise_bn` re-estimates them as a plain average over
the clean train images, weights untouched, for the duration of an evaluation, and then puts
the training state back, so training is unchanged and every encoder, trained or not, is
evaluated by the same procedure.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
>>> images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
>>> with precise_bn(net, lambda x: net(x.float() / 255), images, torch.device("cpu")):
...     bool(net[1].running_mean.abs().sum() > 0)
True
>>> float(net[1].running_mean.abs().sum())  # restored afterwards
0.0
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

PRECISE_BN_IMAGES = 2048  # at most this many train images re-estimate the statistics
PRECISE_BN_BATCH = 256


@contextlib.contextmanager
def precise_bn(module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
               device: torch.device, max_images: int = PRECISE_BN_IMAGES,
               batch_size: int = PRECISE_BN_BATCH) -> Iterator[None]:
    """Within the block, ``module``'s BN layers hold statistics averaged over ``forward`` of the
    first ``max_images`` uint8 ``images`` (batches of ``batch_size``); restored on exit.

    ``forward`` maps a uint8 batch on ``device`` to the module's output (it does the
    normalisation). A module without BN layers, or an empty ``images``, is left as it is.
    """
    if max_images < 1 or batch_size < 1:
        raise ValueError(f"max_images and batch_size must be >= 1, got {max_images} and {batch_size}")
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or images.shape[0] == 0:
        yield
        return
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum) for m in bns]
    was_training = module.training
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        module.train()
        with torch.no_grad():
            for chunk in images[:max_images].split(batch_size):
                forward(chunk.to(device, non_blocking=True))
        module.train(was_training)
        yield
    finally:
        for m, (mean, var, count, momentum) in zip(bns, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
            m.momentum = momentum
        module.train(was_training)
