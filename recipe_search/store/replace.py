"""When a promotion replaces the stored recipe, and what its record says about why.

Decided on validation, never on the test split: the first promotion of a key always lands.
After that a promotion replaces the current recipe only when the 95% interval on its
``val_knn_top1`` lift over the current recipe's (``val_scores``: paired t over the seeds both
were confirmed on when they share two or more, Welch otherwise) lies entirely above 0, or with
``force``. A current recipe without val evidence (from before ``val_scores``) is kept unless
forced. A verdict that serves nothing never replaces anything (it is recorded as ``withheld``).
The reason states the interval.

>>> d = replacement(("b", "d", "f" * 16), budget="cpu", new=summary([.3, .32]), old=None, vals={},
...                 force=False, served=True, provenance={})
>>> d.lands, d.reason
(True, 'first recipe for b/d/ffffffffffffffff (budget cpu): test_probe_top1 0.310 ± 0.014 over 2 seeds')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import records
from ..verdict.stats import (Interval, Summary, paired_interval, summary, welch_interval)  # noqa: F401 - summary: doctest
from .promoted import PRIMARY_METRIC, PromotedRecipe, fmt_interval


@dataclass(frozen=True)
class Replacement:
    lands: bool  # False: the current recipe stays (the promotion writes nothing)
    reason: str
    lift: Interval | None = None  # the val lift over the current recipe, when there is one


def val_lift(new: dict | None, old: dict | None) -> Interval | None:
    """The 95% interval on ``val_knn_top1`` lift of ``new`` over ``old`` (``{seed: value}``):
    paired over the seeds they share when they share 2+, Welch otherwise; None without 2+
    values on each side."""
    if not new or not old:
        return None
    shared = sorted(set(new) & set(old))
    if len(shared) >= 2:
        return paired_interval([new[s] for s in shared], [old[s] for s in shared])
    if len(new) >= 2 and len(old) >= 2:
        return welch_interval(list(new.values()), list(old.values()))
    return None


def replacement(key: tuple[str, str, str], *, budget: str, new: Summary, old: PromotedRecipe | None, vals: dict,
                force: bool, served: bool, provenance: dict) -> Replacement:
    """Whether a promotion of ``key`` (test scores ``new``, val scores ``vals``) lands over ``old``.
    A withheld verdict (``served=False``) is always written, as a record, and replaces nothing."""
    where = "/".join(key)
    if not served:
        why = (provenance or {}).get("withheld_because") or "the verdict supports no recipe"
        stays = "" if old is None else f"; the current recipe (store run {old.run_id}) stays"
        return Replacement(True, f"nothing served for {where}: {why}{stays}")
    if old is None:
        return Replacement(True, f"first recipe for {where} (budget {budget or '-'}): "
                                 f"{PRIMARY_METRIC} {new.fmt(3)} over {new.n} seed{'s' * (new.n != 1)}")
    lift = val_lift(vals, old.val_scores)
    if lift is None:
        head = ("no val_knn_top1 interval against the current recipe (it needs 2+ per-seed val scores on "
                f"both sides; a recipe promoted before {records.TAG_VAL_SCORES} may have none)")
        if force:
            return Replacement(True, f"{head}; forced: replaced")
        return Replacement(False, f"{head}; kept the current recipe (store run {old.run_id}); --force replaces it")
    head = f"val_knn_top1 lift over the current recipe {fmt_interval(lift)}"
    if lift.low > 0:
        return Replacement(True, f"{head} ({lift.method}); replaced", lift)
    if force:
        return Replacement(True, f"{head} ({lift.method}); forced: replaced", lift)
    why = "" if not math.isfinite(lift.high) else " is below 0" if lift.high < 0 else " includes 0"
    return Replacement(False, f"{head}{why} ({lift.method}); kept the current recipe (store run {old.run_id})",
                       lift)


def provenance_of(provenance: dict | None, *, backbone: str, dataset: str, fingerprint: str, budget: str,
                  metrics: dict, source_run_id: str | None, scores: tuple, promoted_at: str, force: bool,
                  decision: Replacement, old: PromotedRecipe | None) -> dict:
    """The provenance a promotion stores: the caller's, completed with the key, the scores, when
    and why it was promoted, and what it replaced."""
    prov = dict(provenance or {})
    for k, v in (("backbone", backbone), ("dataset", dataset), ("budget", budget), ("metrics", metrics),
                 ("source_run_id", source_run_id)):
        prov.setdefault(k, v)
    prov.update(store_key={"backbone": backbone, "dataset": dataset, "fingerprint": fingerprint},
                scores=list(scores), promoted_at=promoted_at, forced=bool(force), promotion_reason=decision.reason)
    prov["previous"] = None if old is None else {
        "run_id": old.run_id, PRIMARY_METRIC: old.metric, "scores": list(old.scores),
        "lift": decision.lift.to_dict() if decision.lift is not None else None}
    return prov
