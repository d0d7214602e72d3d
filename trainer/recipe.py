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
from .methods import METHODS, get_method
from .optim import OPTIMIZERS
from .schedules import LR_SCHEDULES, SMOOTHING_RAMPS


def _rng(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> dict:
    return {"range": (lo, hi, lo_open, hi_open)}


def _choices(*values: str) -> dict:
    return {"choices": values}


DISTILL_VIEWS = ("both", "first")
DEFAULT_METHOD = "mocov2"  # what a recipe without a method field (all recipes before methods) trains


@dataclass(frozen=True)
class Distill:
    """DisCo distillation (arXiv 2104.09124): a frozen contrastive teacher's embedding is
    distilled into the student's query embedding.

    The teacher is *either* ``teacher_checkpoint`` (a trainer ``checkpoint.pt``, or a run
    directory holding one) *or* ``teacher_backbone`` (a timm name, pretrained once by the
    trainer with the teacher recipe and cached). ``teacher_recipe`` holds recipe fields for
    that pretraining, applied over the student's recipe (with the teacher backbone and no
    distill section). The loss adds ``weight * sum over views of MSE(student query, teacher
    embedding)`` (both L2-normalised) on ``views`` (``both`` or ``first``). The student's
    projection hidden dim (DisCo's "distilling bottleneck") is the recipe's ``proj_hidden_dim``.

    >>> d = Distill(teacher_backbone="resnet18", weight=0.5)
    >>> Distill.from_dict(d.to_dict()) == d
    True
    """

    teacher_checkpoint: str | None = None
    teacher_backbone: str | None = None
    teacher_recipe: dict | None = None
    weight: float = field(default=1.0, metadata=_rng(0, 100))
    views: str = field(default="both", metadata=_choices(*DISTILL_VIEWS))

    def __post_init__(self) -> None:
        for name in ("teacher_checkpoint", "teacher_backbone"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise RecipeError(f"distill.{name} must be a non-empty string or null, got {value!r}")
        if (self.teacher_checkpoint is None) == (self.teacher_backbone is None):
            raise RecipeError("distill needs exactly one of teacher_checkpoint (a trainer checkpoint) "
                              "or teacher_backbone (a timm name, pretrained and cached by the trainer); "
                              f"got teacher_checkpoint={self.teacher_checkpoint!r}, "
                              f"teacher_backbone={self.teacher_backbone!r}")
        if isinstance(self.weight, int) and not isinstance(self.weight, bool):
            object.__setattr__(self, "weight", float(self.weight))
        for f in fields(self):
            if f.metadata:
                _check_field(f, getattr(self, f.name), prefix="distill.")
        if self.teacher_backbone is not None:
            try:
                _check_backbone(self.teacher_backbone)
            except RecipeError as e:
                raise RecipeError(f"distill.teacher_backbone: {e}") from None
        tr = self.teacher_recipe
        if tr is None:
            return
        if self.teacher_backbone is None:
            raise RecipeError("distill.teacher_recipe is only used with distill.teacher_backbone "
                              "(a checkpoint teacher carries its own recipe)")
        if not isinstance(tr, dict):
            raise RecipeError(f"distill.teacher_recipe must be a JSON object of recipe fields, got {tr!r}")
        if tr.get("distill") is not None:
            raise RecipeError("distill.teacher_recipe.distill must be null: a teacher is not itself distilled")
        if "backbone" in tr and tr["backbone"] != self.teacher_backbone:
            raise RecipeError(f"distill.teacher_recipe.backbone ({tr['backbone']!r}) must equal "
                              f"distill.teacher_backbone ({self.teacher_backbone!r}) or be left out")
        try:
            object.__setattr__(self, "teacher_recipe", json.loads(json.dumps(tr)))  # a private, JSON-clean copy
        except (TypeError, ValueError) as e:
            raise RecipeError(f"distill.teacher_recipe must hold JSON values only: {e}") from None

    def __hash__(self) -> int:  # teacher_recipe is a dict
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Distill":
        if isinstance(data, Distill):
            return data
        if not isinstance(data, dict):
            raise RecipeError(f"distill must be a JSON object or null, got {data!r}")
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise RecipeError(f"unknown distill field(s): {_hints(unknown, allowed, 'distill.')}; "
                              f"allowed: {', '.join(allowed)}")
        return cls(**{k: (float(v) if k == "weight" and isinstance(v, int) and not isinstance(v, bool) else v)
                      for k, v in data.items()})


@dataclass(frozen=True)
class Recipe:
    """A contrastive pretraining recipe: a method (MoCo-v2 by default) with optional SInfoNCE.

    ``method`` names a registered method (:data:`trainer.methods.METHODS`); fields only some
    methods read (MoCo-v2's queue and key encoder: ``MoCoV2.fields``) are ignored by the others.
    ``to_dict`` leaves ``method`` out while it is ``mocov2``, so a MoCo-v2 recipe serialises (and
    every key hashed from its JSON) exactly as before the field existed.
    """

    # -- method ----------------------------------------------------------------
    method: str = field(default=DEFAULT_METHOD, metadata={"choices": METHODS.keys()})
    # -- model ---------------------------------------------------------------
    backbone: str = "mobilenetv3_small_100"
    image_size: int = field(default=32, metadata=_rng(16, 1024))
    proj_hidden_dim: int = field(default=2048, metadata=_rng(16, 16384))
    proj_out_dim: int = field(default=128, metadata=_rng(8, 4096))
    proj_bn: bool = True  # BN in the head (hidden + output, MoCo-v3 style); False = MoCo-v2's plain MLP
    # -- optimisation ----------------------------------------------------------
    batch_size: int = field(default=256, metadata=_rng(8, 16384))
    epochs: int = field(default=10, metadata=_rng(1, 10000))
    optimizer: str = field(default="sgd", metadata=_choices(*OPTIMIZERS))
    lr: float = field(default=0.06, metadata=_rng(0, 10, lo_open=True))
    weight_decay: float = field(default=5e-4, metadata=_rng(0, 1))
    momentum: float = field(default=0.9, metadata=_rng(0, 1, hi_open=True))
    warmup_epochs: float = field(default=0.0, metadata=_rng(0, 10000))
    lr_schedule: str = field(default="cosine", metadata=_choices(*LR_SCHEDULES))
    # -- loss ------------------------------------------------------------------
    temperature: float = field(default=0.2, metadata=_rng(0.005, 10))
    smoothing: float = field(default=0.0, metadata=_rng(0, 1, hi_open=True))
    smoothing_k: int = field(default=0, metadata=_rng(0, 1 << 20))
    smoothing_ramp: str = field(default="none", metadata=_choices(*SMOOTHING_RAMPS))
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
    # -- DisCo distillation from a frozen teacher (None = teacher-free) -----------------
    distill: Distill | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "distill":
                _check_field(f, getattr(self, f.name))
        if self.distill is not None and not isinstance(self.distill, Distill):
            object.__setattr__(self, "distill", Distill.from_dict(self.distill))
        _check_backbone(self.backbone)
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise RecipeError(
                f"warmup_epochs must be < epochs ({self.epochs}), got {self.warmup_epochs}"
            )
        get_method(self.method).check(self)  # its constraints (MoCo-v2: queue vs keys per step, smoothing_k)
        if self.distill is not None and self.distill.teacher_backbone is not None:
            self.teacher_recipe()  # validates the teacher recipe and its dims against ours

    def teacher_recipe(self) -> "Recipe | None":
        """The recipe that pretrains a named teacher: ours, with the teacher backbone, no distill
        section and ``distill.teacher_recipe`` applied on top. None without a named teacher."""
        d = self.distill
        if d is None or d.teacher_backbone is None:
            return None
        base = {**self.to_dict(), "backbone": d.teacher_backbone, "distill": None}
        try:
            teacher = Recipe.from_dict({**base, **(d.teacher_recipe or {})})
        except RecipeError as e:
            raise RecipeError(f"distill.teacher_recipe: {e}") from None
        check_teacher_dims(self, teacher.proj_out_dim, teacher.image_size, f"teacher {d.teacher_backbone!r}")
        return teacher

    # -- derived ---------------------------------------------------------------
    @property
    def scaled_lr(self) -> float:
        """Base lr scaled linearly by batch_size / 256."""
        return self.lr * self.batch_size / 256

    # -- (de)serialisation -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["method"] == DEFAULT_METHOD:  # recipes from before methods: same JSON, same keys
            del d["method"]
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: Any) -> "Recipe":
        if not isinstance(data, dict):
            raise RecipeError(f"a recipe must be a JSON object, got {type(data).__name__}")
        data = expand_dotted(data)
        allowed = cls.field_names()
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise RecipeError(
                f"unknown recipe field(s): {_hints(unknown, allowed)}; allowed: {', '.join(allowed)}"
            )
        values = {k: _coerce(k, v) for k, v in data.items() if k != "distill"}
        if data.get("distill") is not None:
            values["distill"] = Distill.from_dict(data["distill"])
        return cls(**values)

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

    def with_values(self, values: dict[str, Any]) -> "Recipe":
        """A copy with ``values`` applied; keys may be dotted (``{"distill.weight": 0.5}``).

        >>> Recipe(distill=Distill(teacher_backbone="resnet18")).with_values({"distill.weight": 0.5}).distill.weight
        0.5
        """
        return Recipe.from_dict(set_dotted(self.to_dict(), values))


def set_dotted(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a recipe dict) with ``values`` applied; ``"distill.weight"`` sets a nested key
    (creating the ``distill`` object when it is null). ``data`` itself is not changed."""
    out = dict(data)
    for key, value in values.items():
        head, dot, tail = key.partition(".")
        if not dot:
            out[key] = value
            continue
        if head != "distill":
            raise RecipeError(f"{key!r}: only distill.<field> keys may be dotted")
        nested = out.get(head)
        nested = dict(nested.to_dict() if isinstance(nested, Distill) else nested or {})
        nested[tail] = value
        out[head] = nested
    return out


def expand_dotted(data: dict[str, Any]) -> dict[str, Any]:
    """Fold dotted keys (``distill.weight``) of a recipe dict into their nested objects."""
    dotted = {k: v for k, v in data.items() if isinstance(k, str) and "." in k}
    if not dotted:
        return data
    return set_dotted({k: v for k, v in data.items() if k not in dotted}, dotted)


def check_teacher_dims(student: Recipe, teacher_dim: int, teacher_image_size: int, what: str) -> None:
    """Raise RecipeError naming both dims if the teacher's embedding cannot be distilled into ``student``."""
    if teacher_dim != student.proj_out_dim:
        raise RecipeError(f"distill: the {what} embedding dim is {teacher_dim} but the student's proj_out_dim "
                          f"is {student.proj_out_dim}; the teacher's and student's output dims must match")
    if teacher_image_size != student.image_size:
        raise RecipeError(f"distill: the {what} image_size is {teacher_image_size} but the student's is "
                          f"{student.image_size}; the teacher sees the student's views, so they must match")


def _hints(unknown: list[str], allowed: list[str], prefix: str = "") -> str:
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, allowed, n=1)
        hints.append(repr(prefix + key) + (f" (did you mean {prefix + close[0]!r}?)" if close else ""))
    return ", ".join(hints)


_FIELD_TYPES = {f.name: f.type for f in fields(Recipe)}


def _coerce(name: str, value: Any) -> Any:
    """Accept JSON-ish values (ints for floats, whole floats for ints)."""
    kind = _FIELD_TYPES[name]
    return value if isinstance(value, str) else coerce_value(kind, value)


def coerce_value(kind: str, value: Any) -> Any:
    """A value as a field of type ``kind`` takes it: ints for floats, whole floats for ints, and
    numbers written as strings (YAML 1.1 reads ``1e-4`` as one) read as numbers. Anything else is
    returned as it is, for :func:`check_field` to reject."""
    if kind in ("int", "float") and isinstance(value, str):
        try:
            value = float(value) if kind == "float" else int(value)
        except ValueError:
            return value
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_field(f: dataclasses.Field, value: Any, name: str | None = None, *, bounds: bool = True) -> None:
    """The one check of a recipe field's value: its type, finiteness, choices and range. Raises
    :class:`RecipeError` naming ``name`` (default: the field's name). Recipes, Distill sections and
    search spaces (each value a space can sample) all check through here; ``bounds=False`` checks
    the type only (a space's ``low`` before it is compared with its ``high``)."""
    kind, name = f.type, name or f.name
    expected = {"int": int, "float": (int, float), "bool": bool, "str": str}[kind]
    if isinstance(value, bool) and kind != "bool" or not isinstance(value, expected):
        what = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}[kind]
        raise RecipeError(f"{name} must be of type {kind} ({what}), got {value!r}")
    if kind == "float" and not math.isfinite(value):
        raise RecipeError(f"{name} must be a finite number, got {value!r}")
    if not bounds:
        return
    if "choices" in f.metadata and value not in f.metadata["choices"]:
        raise RecipeError(f"{name} must be one of {', '.join(f.metadata['choices'])}; got {value!r}")
    if "range" in f.metadata:
        lo, hi, lo_open, hi_open = f.metadata["range"]
        bad = value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi)
        if bad:
            interval = f"{'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
            raise RecipeError(f"{name} must be in {interval}, got {_num(value)}")


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _check_field(f: dataclasses.Field, value: Any, prefix: str = "") -> None:
    check_field(f, value, prefix + f.name)


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
