"""The teacher a recipe's :class:`~trainer.recipe.Distill` section names, pretrained once and cached.

* ``teacher_checkpoint``: loaded as is (:func:`trainer.distill.load_teacher`).
* ``teacher_backbone`` (+ ``teacher_recipe``): :func:`pretrain_teacher` trains the teacher with the
  training loop (:func:`trainer.loop.fit`) into ``<cache_dir>/teachers/<backbone>-<key>/``, where
  ``key`` hashes the teacher recipe and the proxy data it trains on (class names, train and val images
  and labels; never the test split). Later runs reuse it; a lock file makes a concurrent run wait
  instead of training it twice, and an interrupted teacher run resumes from its checkpoint.

:func:`resolve_teacher` gives a training run its frozen :class:`~trainer.distill.Teacher` (or None).
This module sits on top of the loop and below :func:`trainer.engine.train`, so the loop never needs
to know how a teacher is found.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch

from .device import resolve_device
from .distill import Teacher, load_teacher
from .errors import CheckpointError, RecipeError
from .locks import file_lock
from .loop import fit
from .recipe import Recipe

TEACHERS_DIR = "teachers"
KEY_VERSION = 2  # 2: the data key covers the train and val splits only


def proxy_digest(proxy) -> str:
    """A content hash of what a teacher trains on: the class names and the train and val splits of a
    :class:`~trainer.data.ProxyData` (its test split is never read)."""
    return proxy.fingerprint(splits=("train", "val"))


def teacher_dir(teacher_recipe: Recipe, proxy, cache_dir: str | os.PathLike) -> Path:
    """``<cache_dir>/teachers/<backbone>-<hash of teacher recipe + proxy data>``."""
    key = json.dumps({"v": KEY_VERSION, "recipe": teacher_recipe.to_dict(), "data": proxy_digest(proxy)},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / TEACHERS_DIR / f"{teacher_recipe.backbone.replace('/', '_')}-{digest}"


def _completed(run_dir: Path) -> bool:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return metrics.get("status") == "completed" and (run_dir / "checkpoint.pt").is_file()


def pretrain_teacher(student: Recipe, proxy, cache_dir: str | os.PathLike, device: str = "auto",
                     on_epoch: Callable[[dict], None] | None = None, compile: bool = False,
                     evaluate_test: bool = True) -> Path:
    """Pretrain ``student``'s named teacher on ``proxy`` unless cached; return its run directory.

    Holds ``<dir>.lock`` while checking and training, so a second run asking for the same
    teacher waits for the first and then reuses its result. A teacher run that was interrupted
    resumes from its checkpoint. ``evaluate_test=False``: the teacher's final metrics (in
    ``teacher.json``) have no ``test_*`` keys and the test split is never read.
    """
    recipe = student.teacher_recipe()
    if recipe is None:
        raise RecipeError("distill.teacher_backbone is not set: there is no teacher to pretrain")
    run_dir = teacher_dir(recipe, proxy, cache_dir)
    with file_lock(run_dir.with_name(run_dir.name + ".lock")):
        if _completed(run_dir):
            return run_dir
        result = fit(recipe, proxy, device=resolve_device(device), out_dir=run_dir, on_epoch=on_epoch,
                     resume=True, compile=compile, evaluate_test=evaluate_test)
        if result.status != "completed":
            raise RecipeError(f"distill: pretraining the teacher {recipe.backbone!r} ended as {result.status}"
                              f" ({result.error}); change distill.teacher_recipe (its run is in {run_dir})")
        (run_dir / "teacher.json").write_text(json.dumps(
            {"teacher_recipe": recipe.to_dict(), "data": proxy.source, "data_digest": proxy_digest(proxy),
             "metrics": result.metrics}, indent=2))
    return run_dir


def resolve_teacher(student: Recipe, proxy, cache_dir: str | os.PathLike, device: torch.device,
                    on_epoch: Callable[[dict], None] | None = None, compile: bool = False,
                    evaluate_test: bool = True) -> Teacher | None:
    """The frozen teacher of ``student`` on ``device`` (pretraining a named one if not cached); None
    without a distill section."""
    d = student.distill
    if d is None:
        return None
    if d.teacher_checkpoint is not None:
        return load_teacher(d.teacher_checkpoint, student).place(device)
    run_dir = pretrain_teacher(student, proxy, cache_dir, str(device), on_epoch, compile, evaluate_test)
    try:
        return load_teacher(run_dir, student).place(device)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; it is a cached teacher: delete {str(run_dir)!r} to pretrain it again") from None
