"""One frozen-feature kNN for every encoder of bench/bench_peers.py, whoever trained it.

The trainer's evaluation procedure applied to a bare timm backbone: the images in [0, 1] with the
ImageNet mean and std (``trainer.moco.ImageNetInput``: the trainer's model and lightly's
``MoCoV2Transform`` both normalise so), the backbone's BN statistics re-estimated on the clean train
images (``trainer.precise_bn``), features in eval mode in the trainer's memory format, then
``trainer.knn.knn_top1`` (weighted kNN, k 200, t 0.1) of the val and test images against the train bank.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.device import channels_last
from trainer.knn import knn_top1
from trainer.moco import ImageNetInput
from trainer.precise_bn import precise_bn

BATCH = 512


def frozen_knn(backbone: nn.Module, proxy, device: torch.device) -> dict:
    """``val_knn_top1`` and ``test_knn_top1`` (the latter when the proxy has test images) of ``backbone``."""
    backbone = backbone.to(device)
    norm = ImageNetInput().to(device)
    cl = channels_last(device)
    if cl:
        backbone = backbone.to(memory_format=torch.channels_last)

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = norm.normalize(x.to(device).float().div_(255))
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        return backbone(x)

    was_training = backbone.training
    with precise_bn(backbone, forward, proxy.train_x, device), torch.no_grad():
        backbone.eval()
        feats = {name: torch.cat([forward(c).float() for c in x.split(BATCH)])
                 for name, x in (("train", proxy.train_x), ("val", proxy.val_x), ("test", proxy.test_x))
                 if x.shape[0]}
    backbone.train(was_training)
    bank, bank_y, n = feats["train"], proxy.train_y.to(device), proxy.num_classes
    out = {}
    for split, y in (("val", proxy.val_y), ("test", proxy.test_y)):
        if split in feats:
            out[f"{split}_knn_top1"] = knn_top1(feats[split], y.to(device), bank, bank_y, n)
    return out
