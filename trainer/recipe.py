"""The Recipe: a typed, validated description of one contrastive pretraining run.

A recipe is everything that decides *how* an encoder is pretrained (optimiser,
loss, augmentation, head, schedule). *What* it is trained on, and how big the
proxy subset is, lives in :class:`trainer.data.DataSpec`.

>>> r = Recipe(backbone="resnet18", lr=0.05, temperature=0.2)
>>> Recipe.from_json(r.to_json()) == r
True
>>> r.scaled_lr  # base lr scaled linearly by batch_size / 256
0.05
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import RecipeError


def _rng(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> dict:
    return {"range": (lo, hi, lo_open, hi_open)}


def _choices(*values: str) -> dict:
    return {"choices": values}


@dataclass(frozen=True)
class Recipe:
    """A contrastive pretraining recipe (MoCo-v2 with optional SInfoNCE)."""

    # -- model ---------------------------------------------------------------
    backbone: str = "mobilenetv3_small_100"
    image_size: int = field(default=32, metadata=_rng(16, 1024))
    proj_hidden_dim: int = field(default=2048, metadata=_rng(16, 16384))
    proj_out_dim: int = field(default=128, metadata=_rng(8, 4096))
    # -- optimisation ----------------------------------------------------------
    batch_size: int = field(default=256, metadata=_rng(8, 16384))
    epochs: int = field(default=10, metadata=_rng(1, 10000))
    optimizer: str = field(default="sgd", metadata=_choices("sgd", "lars", "adamw"))
    lr: float = field(default=0.06, metadata=_rng(0, 10, lo_open=True))
    weight_decay: float = field(default=5e-4, metadata=_rng(0, 1))
    momentum: float = field(default=0.9, metadata=_rng(0, 1, hi_open=True))
    warmup_epochs: float = field(default=0.0, metadata=_rng(0, 10000))
    lr_schedule: str = field(default="cosine", metadata=_choices("cosine", "constant"))
    # -- loss ------------------------------------------------------------------
    temperature: float = field(default=0.2, metadata=_rng(0.005, 10))
    smoothing: float = field(default=0.0, metadata=_rng(0, 1, hi_open=True))
    smoothing_k: int = field(default=0, metadata=_rng(0, 1 << 20))
    smoothing_ramp: str = field(default="none", metadata=_choices("none", "warm", "cos"))
    queue_size: int = field(default=4096, metadata=_rng(8, 1 << 20))
    key_momentum: float = field(default=0.99, metadata=_rng(0, 1))
    momentum_ramp: bool = False
    symmetric: bool = True
    bn_splits: int = field(default=0, metadata=_rng(0, 64))  # shuffle-BN groups, 0 = auto
    # -- augmentation (MoCo-v2 views) ---------------------------------------------
    crop_min_scale: float = field(default=0.2, metadata=_rng(0, 1, lo_open=True))
    jitter_strength: float = field(default=0.4, metadata=_rng(0, 2))
    jitter_p: float = field(default=0.8, metadata=_rng(0, 1))
    gray_p: float = field(default=0.2, metadata=_rng(0, 1))
    blur_p: float = field(default=0.5, metadata=_rng(0, 1))
    solarize_p: float = field(default=0.0, metadata=_rng(0, 1))
    flip_p: float = field(default=0.5, metadata=_rng(0, 1))
    # -- reproducibility -------------------------------------------------------------
    seed: int = field(default=0, metadata=_rng(0, 2**31 - 1))

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_field(f, getattr(self, f.name))
        _check_backbone(self.backbone)
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise RecipeError(
                f"warmup_epochs must be < epochs ({self.epochs}), got {self.warmup_epochs}"
            )
        keys_per_step = self.batch_size * (2 if self.symmetric else 1)
        if self.queue_size < keys_per_step:
            raise RecipeError(
                f"queue_size must be >= batch_size{' * 2 (symmetric)' if self.symmetric else ''}"
                f" = {keys_per_step}, got {self.queue_size}"
            )
        if self.smoothing_k > self.queue_size:
            raise RecipeError(
                f"smoothing_k must be in [0, queue_size={self.queue_size}], got {self.smoothing_k}"
            )

    # -- derived ---------------------------------------------------------------
    @property
    def scaled_lr(self) -> float:
        """Base lr scaled linearly by batch_size / 256."""
        return self.lr * self.batch_size / 256

    # -- (de)serialisation -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: Any) -> "Recipe":
        if not isinstance(data, dict):
            raise RecipeError(f"a recipe must be a JSON object, got {type(data).__name__}")
        allowed = cls.field_names()
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, allowed, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise RecipeError(
                f"unknown recipe field(s): {', '.join(hints)}; allowed: {', '.join(allowed)}"
            )
        return cls(**{k: _coerce(k, v) for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RecipeError(f"recipe is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str) -> "Recipe":
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as e:
            raise RecipeError(f"cannot read recipe file {path!r}: {e.strerror}") from None
        try:
            return cls.from_json(text)
        except RecipeError as e:
            raise RecipeError(f"{path}: {e}") from None

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **changes)


_FIELD_TYPES = {f.name: f.type for f in fields(Recipe)}


def _coerce(name: str, value: Any) -> Any:
    """Accept JSON-ish values (ints for floats, whole floats for ints)."""
    kind = _FIELD_TYPES[name]
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _check_field(f: dataclasses.Field, value: Any) -> None:
    kind = f.type
    expected = {"int": int, "float": (int, float), "bool": bool, "str": str}[kind]
    if isinstance(value, bool) and kind != "bool" or not isinstance(value, expected):
        raise RecipeError(f"{f.name} must be of type {kind}, got {value!r}")
    if kind == "float" and not math.isfinite(value):
        raise RecipeError(f"{f.name} must be a finite number, got {value!r}")
    if "choices" in f.metadata and value not in f.metadata["choices"]:
        raise RecipeError(f"{f.name} must be one of {', '.join(f.metadata['choices'])}; got {value!r}")
    if "range" in f.metadata:
        lo, hi, lo_open, hi_open = f.metadata["range"]
        bad = value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi)
        if bad:
            interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
            raise RecipeError(f"{f.name} must be in {interval}, got {value!r}")


@functools.lru_cache(maxsize=1)
def _timm_models() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def _check_backbone(name: str) -> None:
    models = _timm_models()
    base = name.split(".")[0]  # allow pretrained-tag suffixes like resnet18.a1_in1k
    if base in models:
        return
    close = difflib.get_close_matches(base, sorted(models), n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise RecipeError(f"backbone {name!r} is not a timm model{hint}")


def check_backbone(name: str) -> None:
    """Raise :class:`RecipeError` (listing close matches) if ``name`` is no timm model."""
    _check_backbone(name)
