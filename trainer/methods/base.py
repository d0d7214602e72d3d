"""The method interface and its registry: how one self-supervised method trains.

A :class:`Method` says what it builds (:meth:`Method.build_model`: a
:class:`~trainer.moco.ContrastiveModel`, plus the method's own parts), which views it needs
(:attr:`Method.num_views` draws of :meth:`Method.make_views`), the loss of one step given the views
(:meth:`Method.loss`), its per-step hooks (:meth:`Method.before_step`, e.g. MoCo's momentum update;
:meth:`Method.after_step`, e.g. its enqueue), what it adds to the epoch report and the state it
checkpoints beyond the model's ``state_dict`` (:meth:`Method.state` / :meth:`Method.load_state`).
The training loop (:class:`trainer.loop.TrainingRun`) calls these and knows no method.

Methods register themselves in their own module (``@register_method``); :data:`METHODS` maps a
recipe's ``method`` to its class (the recipe's one validation of the name reads these keys) and
:func:`create_method` builds the method of a recipe, in the spirit of timm's ``create_model``.
This module takes the recipe without importing it (``trainer.recipe`` sits above it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from ..augment import MoCoViews
from ..errors import RecipeError, either
from ..losses import SInfoNCELoss
from ..moco import ContrastiveModel


@dataclass
class StepLoss:
    """One step's loss (before distillation) and the online embedding of each view (None where a
    view was not embedded): what the DisCo term distils."""

    loss: torch.Tensor
    embeddings: tuple[torch.Tensor | None, ...]


class Method:
    """One self-supervised method; subclasses register with :func:`register_method`."""

    name: ClassVar[str] = ""
    fields: ClassVar[tuple[str, ...]] = ()  # recipe fields only this method reads (others ignore them)
    num_views: ClassVar[int] = 2  # views drawn per image and step

    # -- the recipe ------------------------------------------------------------------------
    @classmethod
    def negatives(cls, recipe: Any) -> tuple[int, str]:
        """How many negatives one embedding is contrasted with, and what that count is called
        (``smoothing_k`` may not exceed it)."""
        raise NotImplementedError

    @classmethod
    def check(cls, recipe: Any) -> None:
        """Constraints between recipe fields that this method needs; :class:`RecipeError` naming them."""
        n, what = cls.negatives(recipe)
        if recipe.smoothing_k > n:
            raise RecipeError(f"smoothing_k must be in [0, {what}={n}], got {recipe.smoothing_k}")

    # -- what it builds ---------------------------------------------------------------------
    @classmethod
    def build_model(cls, recipe: Any, backbone: nn.Module, feature_dim: int) -> ContrastiveModel:
        """The freshly initialised network around ``backbone`` (its features are ``feature_dim`` wide)."""
        raise NotImplementedError

    def __init__(self, recipe: Any, model: ContrastiveModel, device: torch.device):
        self.recipe, self.model, self.device = recipe, model, device
        self.criterion = SInfoNCELoss(recipe.temperature, recipe.smoothing, recipe.smoothing_k)

    def make_views(self) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
        """The view transform: uint8 batch + generator -> one float view in [0, 1]."""
        return MoCoViews(self.recipe)

    # -- one step -------------------------------------------------------------------------------
    def before_step(self, progress: float) -> None:
        """Before the forward pass of the step at ``progress`` (the fraction of training done)."""

    def loss(self, views: Sequence[torch.Tensor], smoothing: float, generator: torch.Generator,
             embed_all: bool) -> StepLoss:
        """The loss of one step on ``views`` (SInfoNCE ``smoothing`` at this step). ``embed_all``:
        return the online embedding of every view (the distiller reads them), not only those the
        loss needed. ``generator`` is the run's augmentation generator (MoCo's batch shuffle)."""
        raise NotImplementedError

    def after_step(self, out: StepLoss) -> None:
        """After the optimiser step."""

    def epoch_report(self, progress: float) -> dict:
        """Method keys of the epoch report at ``progress`` (MoCo: ``key_momentum``)."""
        return {}

    def state(self) -> dict:
        """What to checkpoint beyond the model's ``state_dict`` (buffers such as MoCo's queue are in it)."""
        return {}

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state`."""


METHODS: dict[str, type[Method]] = {}  # name -> class, in registration order


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register ``cls`` under ``cls.name`` (a name may be registered once)."""
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"a method needs a new, non-empty name; got {cls.name!r} (registered: {', '.join(METHODS)})")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """The registered method ``name``; a :class:`RecipeError` naming the choices otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise RecipeError(f"method must be {either(METHODS)}, got {name!r}") from None


def create_method(recipe: Any, model: ContrastiveModel, device: torch.device) -> Method:
    """The method ``recipe.method`` names, training ``model`` (built by its ``build_model``) on ``device``."""
    return get_method(recipe.method)(recipe, model, device)
