"""The trainer's one call: ``train(recipe, data) -> TrainResult``.

MoCo-v2 proxy pretraining with (S)InfoNCE on a proxy subset that stays on the
training device, batched on-device augmentation, a kNN monitor every epoch,
a checkpoint every epoch (resumable, deterministic on the CPU), a NaN guard,
and a linear probe on frozen features at the end.

:func:`train` loads the proxy (:mod:`trainer.data`), finds the recipe's teacher
(:mod:`trainer.teacher`, pretraining a named one once) and runs the training loop
(:func:`trainer.loop.fit`); :func:`random_init_metrics` evaluates an untrained encoder
on the same data (the floor).

Every accuracy says its split: ``val_knn_top1`` (kNN of the val images against the
train bank, every epoch), ``val_probe_top1`` / ``train_probe_top1`` (the probe, its L2
chosen on val), and ``test_probe_top1`` / ``test_knn_top1`` only with
``evaluate_test=True``; with ``evaluate_test=False`` the test split is never read.
"""

from __future__ import annotations

import os

import torch

from .data import DataSpec, ProxyData, load_proxy, resolve_cache_dir
from .device import resolve_device
from .evaluation import evaluate
from .loop import EpochCallback, StopTraining, TrainingRun, TrainResult, fit
from .model import build_model
from .recipe import Recipe
from .teacher import resolve_teacher

__all__ = ["train", "random_init_metrics", "TrainResult", "StopTraining", "TrainingRun", "EpochCallback"]


def train(recipe: Recipe, data: DataSpec | ProxyData, *, out_dir: str | os.PathLike | None = None,
          device: str = "auto", on_epoch: EpochCallback | None = None, resume: bool = True,
          compile: bool = False, stop_after: int | None = None,
          on_teacher_epoch: EpochCallback | None = None, data_seed: int | None = None,
          evaluate_test: bool = True, monitor: str = "every") -> TrainResult:
    """Pretrain ``recipe`` on ``data``; return the status, final metrics and per-epoch history.

    ``on_epoch`` gets one report dict per epoch, after the checkpoint is written,
    and may raise :class:`StopTraining`: ``epoch``, ``epochs``, ``loss``, ``val_knn_top1``,
    ``lr``, ``images_per_sec``, ``epoch_time_s``, ``knn_time_s``, ``elapsed_s``, ``smoothing``,
    ``key_momentum`` (+ ``distill_loss``, ``teacher_cosine`` when distilling).
    ``stop_after`` ends the run after that many epochs (status ``stopped``), as if interrupted.
    Bad input raises a :class:`~trainer.errors.TrainerError`; divergence is a status, not an
    exception. With a ``distill`` section the teacher is loaded (or pretrained into the cache,
    reporting to ``on_teacher_epoch``) before anything is written to ``out_dir``.

    ``data_seed`` picks the proxy subset of a :class:`DataSpec` (``None``: ``recipe.seed``), so
    ``recipe.seed`` can vary init, augmentation and batch order over a fixed subset; it is
    unused for a :class:`ProxyData`. ``evaluate_test=False`` never reads the test split
    (``test_x``/``test_y``): the final metrics then have no ``test_*`` keys. ``monitor="last"`` runs
    the per-epoch kNN monitor after the last epoch only (the other epochs' reports have no
    ``val_knn_top1``): the same weights and final metrics, ~13 % less time on a ``cpu`` run.
    """
    dev = resolve_device(device)
    proxy = data if isinstance(data, ProxyData) else load_proxy(
        data, recipe.image_size, recipe.seed if data_seed is None else data_seed)
    cache_dir = resolve_cache_dir(data if isinstance(data, DataSpec) else DataSpec())
    teacher = resolve_teacher(recipe, proxy, cache_dir, dev, on_teacher_epoch, compile, evaluate_test)
    return fit(recipe, proxy, device=dev, teacher=teacher, out_dir=out_dir, on_epoch=on_epoch, resume=resume,
               compile=compile, stop_after=stop_after, evaluate_test=evaluate_test, monitor=monitor)


def random_init_metrics(recipe: Recipe, data: DataSpec | ProxyData, device: str = "auto", *,
                        data_seed: int | None = None, evaluate_test: bool = True) -> dict:
    """The same evaluation on an untrained encoder: the floor any recipe must beat.

    Same keys as :func:`trainer.evaluation.evaluate`; ``data_seed`` and ``evaluate_test`` as in :func:`train`.
    """
    dev = resolve_device(device)
    proxy = data if isinstance(data, ProxyData) else load_proxy(
        data, recipe.image_size, recipe.seed if data_seed is None else data_seed)
    torch.manual_seed(recipe.seed)
    return evaluate(build_model(recipe).to(dev), proxy, dev, evaluate_test=evaluate_test)
