"""DisCo distillation (Gao et al., ECCV 2022, arXiv 2104.09124): a frozen teacher's final embedding.

This module holds the pieces a training run uses: :func:`distill_loss`, the frozen :class:`Teacher`
(built from a recipe, or loaded from a trainer checkpoint by :func:`load_teacher`) and the per-step
:class:`Distiller`. Which teacher a recipe's :class:`~trainer.recipe.Distill` section names, and
pretraining a named one, is :mod:`trainer.teacher`'s job:

* ``teacher_checkpoint``: a trainer ``checkpoint.pt`` (or a run directory holding one). Its
  query encoder (backbone + projection head) is the teacher; its recipe says how to build it.
* ``teacher_backbone`` (+ ``teacher_recipe``): the trainer pretrains the teacher once into a cache
  (see :mod:`trainer.teacher`).

Each step the teacher runs in eval mode, without gradients (bf16 on a GPU), on the same
augmented views as the student; the loss gains

    weight * sum over distilled views v of MSE(normalize(q_v), normalize(t_v))

where ``q_v`` is the student's query embedding (projection head output) of view ``v`` and
``t_v`` the teacher's. The squared error of an embedding is summed over its dims and averaged
over the batch: ``mean_i ||q̂_i - t̂_i||² = 2 - 2·mean cos``, so the term does not depend on the
batch size or embedding dim and weight 1 is on the scale of the contrastive loss. (DisCo's code
sums it over the per-GPU batch as well, ``nn.MSELoss(reduction='sum')``: with 32 images per GPU
that is weight 32 here. The per-element mean, ``F.mse_loss``, would be weight ``1/proj_out_dim``.)
The teacher is held outside the MoCo model: it is never saved in the student's checkpoint, and
the exported ``encoder.pt`` is the student's backbone alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, RecipeError
from .model import build_model
from .moco import ImageNetInput
from .recipe import Recipe, check_teacher_dims

def distill_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                 weight: float = 1.0) -> torch.Tensor:
    """``weight * Σ_v mean_i ||normalize(student[v])_i - normalize(teacher[v])_i||²``, in fp32.

    The squared error is summed over the embedding dims and averaged over the batch
    (``2 - 2·cos`` per sample).

    >>> s = [torch.tensor([[1.0, 0.0]])]; t = [torch.tensor([[0.0, 2.0]])]
    >>> distill_loss(s, t).item()  # (1-0)^2 + (0-1)^2
    2.0
    """
    if len(student) != len(teacher) or not student:
        raise ValueError(f"need one teacher embedding per student embedding, got {len(student)} and {len(teacher)}")
    total = torch.zeros((), device=student[0].device)
    for s, t in zip(student, teacher):
        if s.shape != t.shape:
            raise ValueError(f"student and teacher embeddings must have the same shape, "
                             f"got {tuple(s.shape)} and {tuple(t.shape)}")
        diff = F.normalize(s.float(), dim=1) - F.normalize(t.float(), dim=1)
        total = total + diff.pow(2).sum(dim=1).mean()
    return weight * total


class Teacher(ImageNetInput):
    """A frozen contrastive encoder: images in [0, 1] -> L2-normalised fp32 embeddings."""

    def __init__(self, encoder: nn.Module, recipe: Recipe, source: str):
        super().__init__()
        self.encoder, self.recipe, self.source = encoder, recipe, source
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_recipe(cls, recipe: Recipe, source: str = "random init") -> "Teacher":
        """A freshly initialised teacher for ``recipe``: the query encoder the trainer builds for it."""
        return cls(build_model(recipe).encoder_q, recipe, source)

    @property
    def out_dim(self) -> int:
        return self.recipe.proj_out_dim

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # always in eval mode: running BN statistics, no dropout

    def place(self, device: torch.device) -> "Teacher":
        """Move to ``device``; on a GPU in bf16 and channels_last."""
        self.to(device)
        if device.type == "cuda":
            self.encoder.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        dtype = next(self.encoder.parameters()).dtype
        return F.normalize(self.encoder(x.to(dtype)).float(), dim=1)


class Distiller:
    """The distillation term of one training step, plus its per-epoch statistics."""

    def __init__(self, teacher: Teacher, weight: float, views: str, device: torch.device):
        self.teacher, self.weight, self.views = teacher, weight, views
        self._sums = torch.zeros(3, device=device)  # Σ distill loss, Σ teacher cosine, steps

    @property
    def needs_second_query(self) -> bool:
        return self.views == "both"

    def __call__(self, views: Sequence[torch.Tensor], queries: Sequence[torch.Tensor]) -> torch.Tensor:
        """``weight * Σ_v MSE`` over the distilled views (the first, or both)."""
        n = 2 if self.views == "both" else 1
        student = [q.float() for q in queries[:n]]
        teacher = [self.teacher(v) for v in views[:n]]
        unweighted = distill_loss(student, teacher)
        with torch.no_grad():
            cosine = sum((F.normalize(s, dim=1) * t).sum(dim=1).mean() for s, t in zip(student, teacher)) / n
            self._sums += torch.stack([unweighted.detach(), cosine, torch.ones_like(cosine)])
        return self.weight * unweighted

    def reset(self) -> None:
        self._sums.zero_()

    def epoch_report(self) -> dict:
        """``distill_loss`` (Σ_v MSE before the weight, in [0, 4] per view) and ``teacher_cosine`` (mean student-teacher
        cosine) averaged over the steps since the last reset; one host sync."""
        loss, cosine, steps = self._sums.tolist()
        self.reset()
        if not steps:
            return {"distill_loss": float("nan"), "teacher_cosine": float("nan")}
        return {"distill_loss": loss / steps, "teacher_cosine": cosine / steps}


# ---------------------------------------------------------------------------
# loading a teacher
# ---------------------------------------------------------------------------

def load_teacher(path: str | os.PathLike, student: Recipe | None = None) -> Teacher:
    """The query encoder of a trainer checkpoint (``checkpoint.pt``, or a run directory holding one).

    Raises :class:`CheckpointError` for a missing, corrupt or foreign file and
    :class:`RecipeError` (naming both dims) when it does not fit ``student``.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoint.pt"
    where = f"teacher checkpoint {str(p)!r}"
    if not p.is_file():
        raise CheckpointError(f"distill.teacher_checkpoint: {where} does not exist "
                              "(give a trainer checkpoint.pt or the run directory holding it)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - corrupt files raise many types
        raise CheckpointError(f"distill.teacher_checkpoint: {where} is corrupt or unreadable "
                              f"({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or "recipe" not in state:
        raise CheckpointError(f"distill.teacher_checkpoint: {where} is not a trainer checkpoint "
                              "(expected the checkpoint.pt of a `python -m trainer` run)")
    try:
        recipe = Recipe.from_dict(state["recipe"])
    except RecipeError as e:
        raise CheckpointError(f"distill.teacher_checkpoint: {where} holds an invalid recipe ({e})") from None
    if student is not None:
        check_teacher_dims(student, recipe.proj_out_dim, recipe.image_size, where)
    teacher = Teacher.from_recipe(recipe, str(p))
    prefix = "encoder_q."
    weights = {k[len(prefix):].replace("_orig_mod.", ""): v  # _orig_mod: a --compile'd run
               for k, v in state["model"].items() if k.startswith(prefix)}
    try:
        teacher.encoder.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"distill.teacher_checkpoint: {where} does not match its recipe "
                              f"({str(e).splitlines()[0]})") from None
    return teacher
