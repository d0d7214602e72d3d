"""A promotion as the recipe store keeps it: one run of the experiment ``recipe-store`` whose tags
hold the key (backbone, dataset, fingerprint), the state, the recipe, the per-seed scores, the
verdict and the provenance. :class:`Promotion` writes and reads those tags; the store
(:mod:`recipe_search.store`) decides what to write."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from typing import Any, Mapping

from . import tags as T

SCHEMA = "2"  # runs without it (or with another) are from before metric names said their split
CURRENT, SUPERSEDED, PENDING = "current", "superseded", "pending"
WITHHELD = "withheld"  # a verdict that served nothing: kept so the API can say why, never current
MAX_TAG = 8000  # MLflow's tag value limit
_KEEP_IN_TAG = ("verdict", "fingerprint")  # provenance keys shrink drops last


def _compact(obj: Any, **kw: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str, **kw)


@dataclass(frozen=True)
class Promotion:
    """The tags of one promotion run (``kind=promotion``)."""

    backbone: str
    dataset: str
    fingerprint: str  # 16 hex: the proxy data actually used + the budget shape
    budget: str  # the budget's name (informative; not part of the key)
    recipe: dict  # Recipe.to_dict()
    scores: tuple[float, ...]  # the per-seed confirmed test_probe_top1 values
    provenance: dict
    state: str  # pending (being written) | current | superseded | withheld
    val_scores: dict | None = None  # {seed: val_knn_top1} (None: unknown)
    verdict: str | None = None  # better_than_baselines | no_significant_lift | below_floor
    source_run_id: str | None = None  # the winning trial's run
    promoted_at: str | None = None  # ISO-8601 UTC
    schema: str | None = SCHEMA
    superseded_by: str | None = None
    superseded_at: str | None = None

    @property
    def provenance_fits(self) -> bool:
        """Whether the provenance fits one tag whole (else the tag is shrunk; the store logs the
        full provenance as the artifact ``provenance.json``)."""
        return len(_compact(self.provenance)) <= MAX_TAG

    def to_tags(self) -> dict[str, str]:
        """Every tag of a new promotion run; ValueError when the recipe is too long for a tag."""
        recipe = _compact(self.recipe)
        if len(recipe) > MAX_TAG:
            raise ValueError(f"recipe JSON ({len(recipe)} chars) is longer than MLflow's tag limit "
                             f"of {MAX_TAG} characters")
        out = {
            T.TAG_KIND: T.PROMOTION, T.TAG_SCHEMA: self.schema, T.TAG_BACKBONE: self.backbone,
            T.TAG_DATASET: self.dataset, T.TAG_FINGERPRINT: self.fingerprint, T.TAG_BUDGET: self.budget,
            T.TAG_STATE: self.state,
            T.TAG_VAL_SCORES: json.dumps({str(k): v for k, v in sorted((self.val_scores or {}).items())}),
            T.TAG_RECIPE: recipe,
            T.TAG_PROVENANCE: _compact(self.provenance) if self.provenance_fits else shrink(self.provenance),
            T.TAG_SCORES: json.dumps(list(self.scores)), T.TAG_VERDICT: str(self.verdict or "")[:250],
            T.TAG_SOURCE_RUN: self.source_run_id or "", T.TAG_PROMOTED_AT: self.promoted_at,
            T.TAG_SUPERSEDED_BY: self.superseded_by, T.TAG_SUPERSEDED_AT: self.superseded_at,
        }
        return {k: v for k, v in out.items() if v is not None}

    @staticmethod
    def state_tags(state: str, *, superseded_by: str | None = None, at: str | None = None) -> dict[str, str]:
        """The tags that move an existing promotion run to ``state`` (superseded: by which run, when)."""
        out = {T.TAG_STATE: state}
        if superseded_by is not None:
            out.update({T.TAG_SUPERSEDED_BY: superseded_by, T.TAG_SUPERSEDED_AT: at or ""})
        return out

    @staticmethod
    def state_of(tags: Mapping[str, str]) -> tuple[str | None, str | None]:
        """``(state, schema)`` of a run's tags, read before the rest (None: absent)."""
        return tags.get(T.TAG_STATE), tags.get(T.TAG_SCHEMA)

    @classmethod
    def from_tags(cls, tags: Mapping[str, str], start_time_ms: int | None = None) -> "Promotion | None":
        """The promotion a run's tags hold; None when they hold none (not a finished promotion).
        ``promoted_at`` falls back to the run's start time for runs from before the tag."""
        try:
            backbone, fingerprint = tags[T.TAG_BACKBONE], tags[T.TAG_FINGERPRINT]
            recipe = json.loads(tags[T.TAG_RECIPE])
            scores = tuple(float(s) for s in json.loads(tags[T.TAG_SCORES]))
            if not scores or not isinstance(recipe, dict):
                return None
        except (KeyError, ValueError, TypeError):
            return None
        try:
            provenance = json.loads(tags.get(T.TAG_PROVENANCE) or "{}")
        except ValueError:
            provenance = {"error": "provenance tag is not valid JSON"}
        if not isinstance(provenance, dict):
            provenance = {"error": "provenance tag is not a JSON object"}
        promoted_at = tags.get(T.TAG_PROMOTED_AT)
        if not promoted_at:
            promoted_at = (_dt.datetime.fromtimestamp((start_time_ms or 0) / 1000, _dt.timezone.utc)
                           .isoformat(timespec="microseconds").replace("+00:00", "Z"))
        return cls(
            backbone=backbone, dataset=tags.get(T.TAG_DATASET, ""), fingerprint=fingerprint,
            budget=tags.get(T.TAG_BUDGET, ""), recipe=recipe, scores=scores, provenance=provenance,
            state=tags.get(T.TAG_STATE, ""), val_scores=val_scores(tags.get(T.TAG_VAL_SCORES), provenance),
            verdict=tags.get(T.TAG_VERDICT) or None, source_run_id=tags.get(T.TAG_SOURCE_RUN) or None,
            promoted_at=promoted_at, schema=tags.get(T.TAG_SCHEMA),
            superseded_by=tags.get(T.TAG_SUPERSEDED_BY), superseded_at=tags.get(T.TAG_SUPERSEDED_AT))


def val_scores(tag: str | None, provenance: dict) -> dict | None:
    """``{seed: val_knn_top1}`` from the tag, or for a record from before it, from its
    provenance (the winner's confirmation row and the verdict's seeds); None when neither has it."""
    try:
        if tag:
            return {int(k): float(v) for k, v in json.loads(tag).items()}
        v = provenance.get("verdict") or {}
        win = next(r for r in provenance.get("confirmation") or [] if r.get("name") == v.get("winner"))
        vals = (win.get("val_knn_top1") or {}).get("values") or []
        seeds = v.get("seeds") or []
        return {int(s): float(x) for s, x in zip(seeds, vals)} if len(seeds) == len(vals) and vals else None
    except (ValueError, TypeError, AttributeError, StopIteration):
        return None


def shrink(prov: dict) -> str:
    """Compact provenance JSON under the tag limit: the largest values are replaced by a
    pointer to the ``provenance.json`` artifact, which holds the full provenance (the
    verdict and the fingerprint go last)."""
    out = dict(prov)
    note = "<too long for a tag: see artifact provenance.json>"
    order = sorted(out, key=lambda k: (k in _KEEP_IN_TAG, -len(json.dumps(out[k], default=str))))
    for key in order:
        text = _compact(out)
        if len(text) <= MAX_TAG - 100:
            break
        out[key] = note
    out["truncated"] = True
    return _compact(out)
