"""Typed records of a search's MLflow runs, each writing and reading its own tags.

* :class:`Search` -- the search's parent run (``kind=search``);
* :class:`Trial` -- a search-stage trial (``kind=trial``, ``stage=search``);
* :class:`Confirmation` -- a confirmation run (``kind=trial``, ``stage=confirmation``,
  ``phase`` select or report);
* :class:`Training` -- a full-length training run of a promoted recipe (``recipe-search train``).

Every field is optional: a record with only some fields set is a partial update
(``Search(status="failed", error=...).to_tags()``), and ``to_tags`` writes the set fields only,
plus the run's kind. ``from_tags`` reads what a run carries (absent tags read None).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Mapping, TypeVar

from . import tags as T

R = TypeVar("R", bound="RunRecord")


def _tag(name: str, **kw: Any) -> Any:
    return field(default=None, metadata={"tag": name}, **kw)


def _to_str(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else str(value)


def _from_str(value: str, kind: Any) -> Any:
    if kind in ("int | None", int):
        return int(value) if value.lstrip("-").isdigit() else None
    if kind in ("bool | None", bool):
        return value.strip().lower() == "true"
    return value


@dataclass(frozen=True)
class RunRecord:
    """Tags of one kind of run: each field names its tag in its metadata."""

    KIND: ClassVar[str] = ""

    def to_tags(self) -> dict[str, str]:
        """The set fields as tags (with the run's kind)."""
        out = {T.TAG_KIND: self.KIND}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and "tag" in f.metadata:
                out[f.metadata["tag"]] = _to_str(value)
        return out

    @classmethod
    def from_tags(cls: type[R], tags: Mapping[str, str]) -> R:
        values = {}
        for f in fields(cls):
            raw = tags.get(f.metadata["tag"]) if "tag" in f.metadata else None
            values[f.name] = None if raw is None else _from_str(raw, f.type)
        return cls(**values)

    @classmethod
    def from_run(cls: type[R], run: Any) -> R:
        return cls.from_tags(run.data.tags)

    @classmethod
    def is_kind(cls, tags: Mapping[str, str]) -> bool:
        return tags.get(T.TAG_KIND) == cls.KIND


@dataclass(frozen=True)
class Search(RunRecord):
    """A search's parent run: its key, where it stands, and (at its end) the verdict and promotion."""

    KIND: ClassVar[str] = T.SEARCH
    search_id: str | None = _tag(T.TAG_SEARCH)
    backbone: str | None = _tag(T.TAG_BACKBONE)
    dataset: str | None = _tag(T.TAG_DATASET)
    budget: str | None = _tag(T.TAG_BUDGET)
    fingerprint: str | None = _tag(T.TAG_FINGERPRINT)
    version: str | None = _tag(T.TAG_VERSION)
    status: str | None = _tag(T.TAG_STATUS)  # running | finished | interrupted | failed
    stage: str | None = _tag(T.TAG_STAGE)  # search | confirmation | report | finished
    error: str | None = _tag(T.TAG_ERROR)
    verdict: str | None = _tag(T.TAG_VERDICT)
    verdict_line: str | None = _tag(T.TAG_VERDICT_LINE)
    winner: str | None = _tag(T.TAG_WINNER)
    served: str | None = _tag(T.TAG_SERVED)  # "" when nothing is served
    stop: str | None = _tag(T.TAG_STOP)
    winner_run_id: str | None = _tag(T.TAG_WINNER_RUN)
    best_trial_id: str | None = _tag(T.TAG_BEST_TRIAL)
    best_run_id: str | None = _tag(T.TAG_BEST_RUN)
    promoted: bool | None = _tag(T.TAG_PROMOTED)
    promotion: str | None = _tag(T.TAG_PROMOTION)

    def trial_base(self) -> "Trial":
        """The tags this search's trials share with it (its key and version)."""
        return Trial(search_id=self.search_id, backbone=self.backbone, dataset=self.dataset, budget=self.budget,
                     fingerprint=self.fingerprint, version=self.version)


@dataclass(frozen=True)
class Trial(RunRecord):
    """A trial run of a search's search stage (val only)."""

    KIND: ClassVar[str] = T.TRIAL
    STAGE: ClassVar[str] = "search"
    search_id: str | None = _tag(T.TAG_SEARCH)
    trial_id: str | None = _tag(T.TAG_TRIAL)
    backbone: str | None = _tag(T.TAG_BACKBONE)
    dataset: str | None = _tag(T.TAG_DATASET)
    budget: str | None = _tag(T.TAG_BUDGET)
    fingerprint: str | None = _tag(T.TAG_FINGERPRINT)
    version: str | None = _tag(T.TAG_VERSION)
    stage: str | None = _tag(T.TAG_STAGE)
    baseline: str | None = _tag(T.TAG_BASELINE)
    seed: int | None = _tag(T.TAG_SEED)
    status: str | None = _tag(T.TAG_STATUS)  # running | completed | pruned | diverged | failed | oom | interrupted
    error: str | None = _tag(T.TAG_ERROR)
    notes: str | None = _tag(T.TAG_NOTES)
    point: str | None = _tag(T.TAG_POINT)  # the sampled point, canonical JSON
    sampler: str | None = _tag(T.TAG_SAMPLER)  # a sampled trial: its sampler's label (absent before 2026-12-05)
    recipe: str | None = _tag(T.TAG_RECIPE)  # the recipe, compact JSON
    reused_from: str | None = _tag(T.TAG_REUSED)
    adopted_from: str | None = _tag(T.TAG_ADOPTED)
    parent_run_id: str | None = _tag(T.TAG_PARENT)

    @property
    def recipe_dict(self) -> dict | None:
        """The recipe tag parsed (None: absent or not JSON)."""
        try:
            return json.loads(self.recipe) if self.recipe else None
        except ValueError:
            return None

    @property
    def is_confirmation(self) -> bool:
        return self.stage == Confirmation.STAGE

    def confirmation(self, *, job: str, phase: str, **changes: Any) -> "Confirmation":
        """A :class:`Confirmation` with this record's fields, ``changes`` applied."""
        base = {f.name: getattr(self, f.name) for f in fields(Trial)}
        return Confirmation(**{**base, **changes, "stage": Confirmation.STAGE}, job=job, phase=phase)

    @staticmethod
    def read(tags: Mapping[str, str]) -> "Trial":
        """A trial run's record: a :class:`Confirmation` for a confirmation run, else a :class:`Trial`."""
        if (tags.get(T.TAG_STAGE) or Trial.STAGE) == Confirmation.STAGE:
            return Confirmation.from_tags(tags)
        return Trial.from_tags(tags)


@dataclass(frozen=True)
class Confirmation(Trial):
    """A confirmation run: a recipe (``job``) at one seed, in the select phase (val only) or the
    report phase (reads test). Runs logged before phases existed all read test: report."""

    STAGE: ClassVar[str] = "confirmation"
    job: str | None = _tag(T.TAG_JOB)
    phase: str | None = _tag(T.TAG_PHASE)

    def to_tags(self) -> dict[str, str]:
        return {**super().to_tags(), T.TAG_STAGE: self.STAGE}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> "Confirmation":
        rec = super().from_tags(tags)
        return rec if rec.phase else replace(rec, phase="report", stage=cls.STAGE)


@dataclass(frozen=True)
class Training(RunRecord):
    """A full-length training run of a promoted recipe (``recipe-search train``)."""

    KIND: ClassVar[str] = T.TRAIN
    backbone: str | None = _tag(T.TAG_BACKBONE)
    dataset: str | None = _tag(T.TAG_DATASET)
    source_run_id: str | None = _tag(T.TAG_SOURCE_RUN)  # the trial that found the recipe
    store_run_id: str | None = _tag(T.TAG_STORE_RUN)  # the store's promotion run
    status: str | None = _tag(T.TAG_STATUS)
    error: str | None = _tag(T.TAG_ERROR)

