"""The typed request of a search job and the operator's configuration it is checked against.

:class:`JobsConfig` is what the operator allows (data roots by name, the trial cap, CPUs per
job, how many jobs at once); :func:`request_model` builds the pydantic model of ``POST
/searches`` from it, so the OpenAPI schema lists the allowed budgets, spaces, datasets and the
cap, unknown fields are refused (422) and the caller never supplies a path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator



def dataset_kinds() -> tuple[str, ...]:
    """The trainer's datasets that read a root (``trainer.data.DATASETS`` less ``synthetic``)."""
    from trainer.data.spec import DATASETS

    return tuple(d for d in DATASETS if d != "synthetic")


class JobError(Exception):
    """A request the job manager refuses: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.retry_after = status, detail, retry_after


# --------------------------------------------------------------------------- operator config


@dataclass(frozen=True)
class DataRoot:
    name: str  # what a caller asks for
    kind: str  # recipe-search run --dataset
    path: str | None  # recipe-search run --data (None: synthetic)


def parse_data_root(text: str) -> DataRoot:
    """``NAME=PATH`` (the dataset kind is NAME when NAME is one of cifar10/cifar100/stl10,
    else ``imagefolder``), ``NAME=KIND:PATH`` to give the kind, or ``synthetic``."""
    if text.strip() == "synthetic":
        return DataRoot("synthetic", "synthetic", None)
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name or not rest:
        raise ValueError(f"--data-root {text!r}: expected NAME=PATH (e.g. cifar10=/data/cifar10-jpeg.tar.gz)")
    if not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"--data-root {text!r}: NAME may hold letters, digits, '-', '_' and '.' only")
    kind, colon, path = rest.partition(":")
    kinds = dataset_kinds()
    if not colon or kind not in kinds:
        kind, path = (name if name in kinds else "imagefolder"), rest
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise ValueError(f"--data-root {text!r}: {p} does not exist")
    return DataRoot(name, kind, str(p))


@dataclass
class JobsConfig:
    """What the operator allows: data roots by name, jobs at once, trials per search."""

    data_roots: dict[str, DataRoot] = field(default_factory=dict)
    max_jobs: int = 1
    max_trials: int = 64
    max_backbones: int = 8
    num_cpus: int | None = None  # recipe-search run --num-cpus (None: all cores)
    command: list[str] | None = None  # the `recipe-search run` prefix (tests: a stand-in)
    retry_after: int = 30
    follow_limit_s: float | None = None  # how long ?follow=true of GET /searches/{id}/log streams (None: to the end)

    def __post_init__(self) -> None:
        self.data_roots.setdefault("synthetic", DataRoot("synthetic", "synthetic", None))

    @classmethod
    def from_strings(cls, roots: list[str] | None, **kw: Any) -> "JobsConfig":
        parsed = [parse_data_root(r) for r in roots or []]
        return cls(data_roots={r.name: r for r in parsed}, **kw)


def budget_names() -> tuple[str, ...]:
    from recipe_search.budget import BUDGETS

    return tuple(sorted(BUDGETS))


def space_names() -> tuple[str, ...]:
    from recipe_search.space import spaces_dir

    root = spaces_dir()
    return tuple(sorted(p.stem for p in root.glob("*.yaml"))) if root.is_dir() else ()


@functools.lru_cache(maxsize=1)
def timm_names() -> tuple[str, ...]:
    """Every timm architecture (importing timm takes seconds: once per process)."""
    import timm

    return tuple(sorted(timm.list_models()))


# --------------------------------------------------------------------------- the typed request


def request_model(cfg: JobsConfig) -> type[BaseModel]:
    """The body of ``POST /searches`` for this server (its enums are the operator's choices)."""
    budgets = budget_names()
    spaces = space_names()
    datasets = tuple(sorted(cfg.data_roots))
    models = list(timm_names())

    def check_backbones(cls, value: list[str]) -> list[str]:
        from trainer.errors import RecipeError
        from trainer.recipe import check_backbone

        seen: set[str] = set()
        for name in value:
            try:
                check_backbone(name)  # the one check the CLI and the trainer run (close matches listed)
            except RecipeError as e:
                raise ValueError(str(e)) from None
            if name in seen:
                raise ValueError(f"{name!r} is given twice")
            seen.add(name)
        return value

    fields: dict[str, Any] = {
        "backbones": (list[str], Field(
            ..., min_length=1, max_length=cfg.max_backbones,
            description="timm model names (timm.list_models()); one search each, one after the other.",
            json_schema_extra={"items": {"type": "string", "enum": models}, "uniqueItems": True},
            examples=[["mobilenetv3_small_050"]])),
        "budget": (Literal[budgets], Field(..., description=f"The search's budget: {setting_help('budget')}.")),
        "dataset": (Literal[datasets], Field(
            ..., description="The name of a data root this server's operator configured "
                             "(`recipe-search serve --data-root NAME=PATH`); never a path.")),
        "space": (Literal[spaces] | None, Field(  # type: ignore[valid-type]
            None, description="A search space of search_spaces/ by name (default: the backbone's "
                              "own file, else default).")),
        "trials": (int | None, Field(
            None, ge=2, le=cfg.max_trials,
            description=f"Trials per search: {setting_help('num_samples')} (default: the budget's, at most "
                        f"{cfg.max_trials}: this server's limit).")),
        "seed": (int, Field(0, ge=0, le=2**31 - 1, description=setting_help("seed").capitalize() + ".")),
    }
    if not spaces:
        fields.pop("space")
    return create_model(
        "SearchJobRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"additionalProperties": False}),
        __validators__={"check_backbones": field_validator("backbones")(check_backbones),
                        "json_integers": field_validator("trials", "seed", mode="before")(json_integer)},
        **fields,
    )


# --------------------------------------------------------------------------- helpers


def setting_help(name: str) -> str:
    """The help of a `recipe-search run` setting (recipe_search/settings.py), for the schema."""
    from recipe_search.settings import options

    return next(opt.help for f, opt in options() if f.name == name)


def json_integer(cls, value: Any) -> Any:
    """A JSON Schema integer: ``3`` or ``3.0``, never ``true`` or ``"3"`` (pydantic's lax mode
    would take both; its strict mode would refuse ``3.0``, which the schema allows)."""
    if isinstance(value, (bool, str)):
        raise ValueError("Input should be a valid integer (a JSON number, not a boolean or string)")
    return value
