"""Evaluating a frozen backbone on a proxy: the kNN monitor and the linear probe, features extracted once."""

from __future__ import annotations

import time

import torch

from .data import ProxyData
from .knn import knn_top1
from .model import evaluation_stats, extract_features
from .per_image import KEY as CORRECT_KEY, encode
from .moco import ContrastiveModel
from .probe import linear_probe


def evaluate(model: ContrastiveModel, proxy: ProxyData, device: torch.device,
             features: dict[str, torch.Tensor] | None = None, *, evaluate_test: bool = True) -> dict:
    """kNN and linear-probe top-1 of ``model``'s frozen backbone on ``proxy`` (features extracted once).

    Returns ``val_knn_top1``, ``val_probe_top1``, ``train_probe_top1``, ``probe_l2``, ``probe_time_s``
    and, with ``evaluate_test``, ``test_probe_top1``, ``test_knn_top1`` and ``test_probe_correct`` (which
    test images the probe got right, packed by :func:`trainer.per_image.encode`: the one value that is
    not a float); without it the test split is never read. Features are extracted with precise BN statistics of the train images
    (:func:`trainer.model.evaluation_stats`). ``features`` may hold the ``train``/``val`` features
    already extracted at these weights (the last epoch's kNN monitor); they are not extracted again.
    """
    t0 = time.perf_counter()
    features = features or {}
    splits = (("train", proxy.train_x, proxy.train_y), ("val", proxy.val_x, proxy.val_y))
    if evaluate_test:
        splits += (("test", proxy.test_x, proxy.test_y),)
    missing = [(name, x) for name, x, _ in splits if name not in features]
    feats = dict(features)
    if missing:
        with evaluation_stats(model, proxy.train_x, device):
            feats.update({name: extract_features(model, x, device) for name, x in missing})
    ys = {name: y.to(device) for name, _, y in splits}
    n = proxy.num_classes
    test = (feats["test"], ys["test"]) if evaluate_test else None
    probe = linear_probe((feats["train"], ys["train"]), (feats["val"], ys["val"]), test, n)
    val_knn = (knn_top1(feats["val"], ys["val"], feats["train"], ys["train"], n)
               if ys["val"].numel() else float("nan"))
    out = {"val_knn_top1": val_knn, "val_probe_top1": probe.val_top1, "train_probe_top1": probe.train_top1,
           "probe_l2": probe.l2}
    if evaluate_test:
        out["test_probe_top1"] = probe.test_top1
        out[CORRECT_KEY] = encode(probe.test_correct)
        out["test_knn_top1"] = knn_top1(feats["test"], ys["test"], feats["train"], ys["train"], n)
    out["probe_time_s"] = time.perf_counter() - t0
    return out
