"""The training loop: one run of a recipe on a loaded proxy, with a resolved teacher or none.

:class:`TrainingRun` holds a run's state (model, optimiser, generators, history) and its steps;
:func:`fit` drives it epoch by epoch: a kNN monitor, a checkpoint and an ``on_epoch`` report every
epoch (resumable, deterministic on the CPU), a NaN guard, and the final evaluation. It neither loads
data nor finds a teacher: :func:`trainer.engine.train` does both and then calls :func:`fit`, and
:mod:`trainer.teacher` calls :func:`fit` to pretrain a named teacher.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import schedules
from .backbone import save_encoder
from .checkpoint import load_checkpoint, save_checkpoint
from .data import ProxyData
from .device import autocast, channels_last
from .distill import Distiller, Teacher
from .errors import RecipeError
from .evaluation import evaluate
from .knn import knn_top1
from .methods import create_method
from .model import build_model, evaluation_stats, extract_features
from .optim import build_optimizer, set_lr
from .recipe import Recipe

EpochCallback = Callable[[dict], None]
# when the kNN monitor runs: every epoch (the val curve ASHA and the progress view read), or only after the
# last (a run whose only use of val is its final figure: a confirmation run); the last epoch's always runs
MONITOR = ("every", "last")


class StopTraining(Exception):
    """Raise from an epoch callback to end the run early (status ``stopped``)."""


@dataclass
class TrainResult:
    status: str  # completed | diverged | stopped
    metrics: dict
    history: list[dict] = field(default_factory=list)
    error: str | None = None
    out_dir: str | None = None

    def to_dict(self) -> dict:
        return {"status": self.status, "metrics": self.metrics, "error": self.error,
                "out_dir": self.out_dir, "history": self.history}


class TrainingRun:
    """The state of one training run on a loaded proxy, and its steps.

    Built from ``(recipe, proxy, device)``: seeds torch with ``recipe.seed``, builds the model and
    the recipe's method (:mod:`trainer.methods`: its loss, views and per-step hooks), the optimiser
    and (with ``teacher``) the distiller, and moves the train images to ``device``. The run knows no
    method: each step asks ``self.method`` for the loss of the views it drew. :meth:`step` is one optimisation step on a uint8 batch, :meth:`train_epoch`
    one pass over the proxy, :meth:`knn` the per-epoch monitor; :meth:`state` / :meth:`load_state`
    are the checkpoint. :func:`fit` drives it; benchmarks time :meth:`step` directly.
    """

    def __init__(self, recipe: Recipe, proxy: ProxyData, device: torch.device, out_dir: Path | None = None,
                 compile: bool = False, teacher: Teacher | None = None):
        self.recipe, self.proxy, self.device, self.out_dir = recipe, proxy, device, out_dir
        n = proxy.train_x.shape[0]
        if recipe.batch_size > n:
            raise RecipeError(f"batch_size must be <= the proxy train set size ({n} images), "
                              f"got {recipe.batch_size}; lower batch_size or raise train_per_class")
        self.steps_per_epoch = n // recipe.batch_size
        self.total_steps = self.steps_per_epoch * recipe.epochs
        self.warmup_steps = round(recipe.warmup_epochs * self.steps_per_epoch)
        torch.manual_seed(recipe.seed)
        self.model = build_model(recipe).to(device)
        self.channels_last = channels_last(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(recipe, self.model.encoder_q)
        self.method = create_method(recipe, self.model, device)
        self.views = self.method.make_views()
        self.distiller = (Distiller(teacher, recipe.distill.weight, recipe.distill.views, device)
                          if teacher is not None else None)
        self.aug_gen = torch.Generator(device=device).manual_seed(recipe.seed)
        self.order_gen = torch.Generator().manual_seed(recipe.seed + 1)
        self.epoch, self.history, self.train_time = 0, [], 0.0
        self.features: dict[str, torch.Tensor] = {}  # clean-image features at the current weights
        if compile and device.type == "cuda":
            self.model.encoder_q = torch.compile(self.model.encoder_q)  # the method holds this model
        self.train_x = proxy.train_x.to(device)

    # -- checkpointing -------------------------------------------------------------
    def state(self) -> dict:
        return {"epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "aug_gen": self.aug_gen.get_state(), "order_gen": self.order_gen.get_state(),
                "torch_rng": torch.get_rng_state(), "history": self.history, "train_time": self.train_time,
                "recipe": self.recipe.to_dict(), "method": self.method.state()}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.aug_gen.set_state(state["aug_gen"])
        self.order_gen.set_state(state["order_gen"])
        torch.set_rng_state(state["torch_rng"])
        self.method.load_state(state.get("method") or {})
        self.epoch, self.history, self.train_time = state["epoch"], state["history"], state["train_time"]
        for report in self.history:  # a checkpoint written before the metrics said their split
            if "knn_top1" in report and "val_knn_top1" not in report:
                report["val_knn_top1"] = report.pop("knn_top1")

    # -- one optimisation step -----------------------------------------------------------
    def step(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """One optimisation step on the uint8 batch ``x`` at global step ``step``; returns the loss (on the device)."""
        r, progress = self.recipe, step / max(1, self.total_steps)
        set_lr(self.optimizer, schedules.learning_rate(step, self.total_steps, self.warmup_steps,
                                                       r.scaled_lr, r.lr_schedule))
        eps = schedules.smoothing(progress, r.smoothing, r.smoothing_ramp)
        views = [self.views(x, self.aug_gen) for _ in range(self.method.num_views)]
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        self.method.before_step(progress)
        distiller = self.distiller
        out = self.method.loss(views, eps, self.aug_gen, embed_all=bool(distiller and distiller.needs_second_query))
        loss = out.loss
        if distiller is not None:  # DisCo: + weight * Σ_v MSE(student embedding, frozen teacher embedding)
            loss = loss + distiller(views, out.embeddings)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.method.after_step(out)
        return loss.detach()

    def train_epoch(self) -> tuple[float, float]:
        """One pass over the proxy set: returns (mean loss, seconds). NaN loss is returned as is."""
        self.model.train()
        self.features = {}  # the weights are about to change
        if self.distiller is not None:
            self.distiller.reset()
        b, start = self.recipe.batch_size, time.perf_counter()
        perm = torch.randperm(self.train_x.shape[0], generator=self.order_gen).to(self.device)
        total = torch.zeros((), device=self.device)
        for i in range(self.steps_per_epoch):
            loss = self.step(self.train_x[perm[i * b:(i + 1) * b]], self.epoch * self.steps_per_epoch + i)
            total += loss
            if self.device.type == "cpu" and not math.isfinite(loss.item()):
                return float("nan"), time.perf_counter() - start
        mean = (total / self.steps_per_epoch).item()  # one host sync per epoch on the GPU
        return mean, time.perf_counter() - start

    def knn(self) -> float:
        """kNN top-1 of the val images against the train bank (precise BN statistics); keeps both features for the probe."""
        self.features = {}
        if self.proxy.val_x.shape[0] == 0:
            return float("nan")
        with evaluation_stats(self.model, self.train_x, self.device):
            bank = extract_features(self.model, self.train_x, self.device)
            query = extract_features(self.model, self.proxy.val_x, self.device)
        self.features = {"train": bank, "val": query}
        return knn_top1(query, self.proxy.val_y.to(self.device), bank, self.proxy.train_y.to(self.device),
                        self.proxy.num_classes)



def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def fit(recipe: Recipe, proxy: ProxyData, *, device: torch.device, teacher: Teacher | None = None,
        out_dir: str | os.PathLike | None = None, on_epoch: EpochCallback | None = None, resume: bool = True,
        compile: bool = False, stop_after: int | None = None, evaluate_test: bool = True,
        monitor: str = "every") -> TrainResult:
    """Pretrain ``recipe`` on ``proxy`` (distilling from ``teacher`` when given); return the status, final
    metrics and per-epoch history. The arguments are :func:`trainer.engine.train`'s, which see.

    Writes ``recipe.json`` into ``out_dir`` first, then the checkpoint and ``history.json`` after every
    epoch (before ``on_epoch`` runs), ``metrics.json`` at the end and ``encoder.pt`` when completed.
    """
    if monitor not in MONITOR:  # before anything is written
        raise RecipeError(f"monitor must be one of {', '.join(MONITOR)}, got {monitor!r}")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _atomic_json(out / "recipe.json", recipe.to_dict())
    run = TrainingRun(recipe, proxy, device, out, compile, teacher)
    ckpt = out / "checkpoint.pt" if out is not None else None
    if resume and ckpt is not None and ckpt.exists():
        run.load_state(load_checkpoint(ckpt, recipe))
    status, error = "completed", None
    images_per_epoch = run.steps_per_epoch * recipe.batch_size
    while run.epoch < recipe.epochs:
        loss, seconds = run.train_epoch()
        run.train_time += seconds
        if not math.isfinite(loss):
            status, error = "diverged", f"non-finite loss ({loss}) in epoch {run.epoch + 1}"
            break
        t0 = time.perf_counter()
        # the monitor leaves the training state as it found it (evaluation_stats), so skipping it changes nothing
        # that is learned; the last epoch's is always run (the final evaluation reuses its features)
        watch = monitor == "every" or run.epoch + 1 >= recipe.epochs
        knn = {"val_knn_top1": run.knn()} if watch else {}
        knn_seconds = time.perf_counter() - t0
        run.epoch += 1
        progress = run.epoch / recipe.epochs
        report = {"epoch": run.epoch, "epochs": recipe.epochs, "loss": loss, **knn,
                  "lr": run.optimizer.param_groups[0]["lr"], "images_per_sec": images_per_epoch / seconds,
                  "epoch_time_s": seconds, "knn_time_s": knn_seconds, "elapsed_s": run.train_time,
                  "smoothing": schedules.smoothing(progress, recipe.smoothing, recipe.smoothing_ramp),
                  **run.method.epoch_report(progress)}  # MoCo: key_momentum
        if run.distiller is not None:
            report.update(run.distiller.epoch_report())  # distill_loss, teacher_cosine
        run.history.append(report)
        if ckpt is not None:
            save_checkpoint(ckpt, run.state())
            _atomic_json(out / "history.json", run.history)
        try:
            if on_epoch is not None:
                on_epoch(dict(report))
        except StopTraining as e:
            status, error = "stopped", str(e) or None
            break
        if stop_after is not None and run.epoch >= stop_after and run.epoch < recipe.epochs:
            status = "stopped"
            break
    metrics = _final_metrics(run, status, evaluate_test)
    if out is not None:
        _atomic_json(out / "metrics.json", {"status": status, "error": error, **metrics})
        if status == "completed":
            save_encoder(str(out / "encoder.pt"), run.model.encoder_q.backbone, recipe.to_dict(),
                         run.model.encoder_q.head[0].in_features)
    return TrainResult(status, metrics, list(run.history), error, str(out) if out else None)


def _final_metrics(run: TrainingRun, status: str, evaluate_test: bool = True) -> dict:
    """``epochs_completed``, ``train_time_s``, ``loss``, ``val_knn_top1`` (last epoch), ``images_per_sec``
    (+ distill keys); for a completed run also :func:`evaluate`'s keys and ``knn_time_s``."""
    h = run.history
    metrics = {"epochs_completed": run.epoch, "train_time_s": run.train_time,
               "loss": h[-1]["loss"] if h else float("nan"),
               "val_knn_top1": h[-1].get("val_knn_top1", float("nan")) if h else float("nan"),
               "images_per_sec": (run.epoch * run.steps_per_epoch * run.recipe.batch_size / run.train_time
                                  if run.train_time > 0 and run.epoch else float("nan"))}
    if run.distiller is not None:
        for key in ("distill_loss", "teacher_cosine"):
            metrics[key] = h[-1][key] if h else float("nan")
    if status != "completed":
        return metrics
    metrics.update(evaluate(run.model, run.proxy, run.device, run.features, evaluate_test=evaluate_test),
                   knn_time_s=sum(r["knn_time_s"] for r in h))
    return metrics

