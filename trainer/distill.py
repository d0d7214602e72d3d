"""DisCo distillation (Gao et al., ECCV 2022, arXiv 2104.09124): a frozen teacher's final embedding.

The recipe's :class:`~trainer.recipe.Distill` section names the teacher:

* ``teacher_checkpoint``: a trainer ``checkpoint.pt`` (or a run directory holding one). Its
  query encoder (backbone + projection head) is the teacher; its recipe says how to build it.
* ``teacher_backbone`` (+ ``teacher_recipe``): the trainer pretrains the teacher once with
  :func:`trainer.engine.train` into ``<cache_dir>/teachers/<backbone>-<key>/``, where ``key``
  hashes the teacher recipe and the proxy data it trains on (class names, train and val images
  and labels; never the test split). Later runs reuse
  it; a lock file makes a concurrent run wait instead of training it twice, and an interrupted
  teacher run resumes from its checkpoint.

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

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, RecipeError
from .moco import IMAGENET_MEAN, IMAGENET_STD
from .recipe import Recipe, check_teacher_dims

TEACHERS_DIR = "teachers"
KEY_VERSION = 2  # 2: the data key covers the train and val splits only


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


class Teacher(nn.Module):
    """A frozen contrastive encoder: images in [0, 1] -> L2-normalised fp32 embeddings."""

    def __init__(self, encoder: nn.Module, recipe: Recipe, source: str):
        super().__init__()
        self.encoder, self.recipe, self.source = encoder, recipe, source
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_recipe(cls, recipe: Recipe, source: str = "random init") -> "Teacher":
        """A freshly initialised teacher for ``recipe``: the query encoder the trainer builds for it."""
        from .engine import build_model  # engine imports this module

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
        x = (x - self.mean) / self.std
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


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock); released when the holder exits, even by a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # not POSIX: no cross-process lock
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def pretrain_teacher(student: Recipe, proxy, cache_dir: str | os.PathLike, device: str = "auto",
                     on_epoch: Callable[[dict], None] | None = None, compile: bool = False,
                     evaluate_test: bool = True) -> Path:
    """Pretrain ``student``'s named teacher on ``proxy`` unless cached; return its run directory.

    Holds ``<dir>.lock`` while checking and training, so a second run asking for the same
    teacher waits for the first and then reuses its result. A teacher run that was interrupted
    resumes from its checkpoint. ``evaluate_test=False``: the teacher's final metrics (in
    ``teacher.json``) have no ``test_*`` keys and the test split is never read.
    """
    from .engine import train  # engine imports this module

    recipe = student.teacher_recipe()
    if recipe is None:
        raise RecipeError("distill.teacher_backbone is not set: there is no teacher to pretrain")
    run_dir = teacher_dir(recipe, proxy, cache_dir)
    with _file_lock(run_dir.with_name(run_dir.name + ".lock")):
        if _completed(run_dir):
            return run_dir
        result = train(recipe, proxy, out_dir=run_dir, device=device, on_epoch=on_epoch, resume=True,
                       compile=compile, evaluate_test=evaluate_test)
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
