"""A search that starts from what the store knows: the results of other backbones on the same data.

``recipe-search run --backbone efficientnet_b0`` after a search of ``mobilenetv3_small_100`` on
CIFAR-10 need not start from nothing. Before its first sampled trial the sampler is handed, as
enqueued trials (Optuna's ``enqueue_trial``; the baselines still run first), the points of:

1. the recipes the store *serves* for other backbones on the dataset (confirmed on fresh seeds,
   newest first), then
2. the best finished search-stage trials of other backbones on the dataset (sampled trials, not
   baselines, which every search runs anyway), the best of each search first, then the rest by
   val kNN top-1.

A recipe trained for another backbone is expressed in this search's space by
:meth:`SearchSpace.point` (a number clipped into its range, a choice outside the list replaced
by the nearest one); points equal to a baseline's or to an earlier warm point are skipped. At
most a third of the sampled trials are warm points (:func:`warm_share`): the rest explore, and
TPE models the warm points' results like any other trial. ``--no-warm-start`` turns it off;
``--warm-start-from DATASET`` reads another dataset's results instead (a new dataset can start
from CIFAR-10's). The sources are printed with the plan, recorded on the search's parent run
(``warm_start.json``, param ``warm_start_points``) and in a served recipe's provenance
(``settings.warm_start``); each warm trial's run is named ``warm`` with its source in ``rs.notes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..tracking import point_key

PER_SEARCH = 2  # trials of one earlier search taken before the next search's best


@dataclass(frozen=True)
class WarmPoint:
    """One point the sampler starts from, and where it came from."""

    point: dict
    kind: str  # "served" (a served recipe) | "trial" (a finished search trial)
    backbone: str
    dataset: str
    run_id: str
    search_id: str | None = None
    score: float | None = None  # served: confirmed test probe mean; trial: its val kNN top-1

    def label(self) -> str:
        what = "served recipe" if self.kind == "served" else "trial"
        score = "" if self.score is None else f" ({'test probe' if self.kind == 'served' else 'val kNN'} " \
                                               f"{self.score:.3f})"
        return f"{self.backbone}'s {what} {self.run_id[:8]}{score}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "backbone": self.backbone, "dataset": self.dataset, "run_id": self.run_id,
                "search_id": self.search_id, "score": self.score, "point": self.point}


def warm_share(sampled: int) -> int:
    """How many of ``sampled`` trials may be warm points: a third, rounded up (0 when none)."""
    return math.ceil(max(0, sampled) / 3)


def trial_key(point: dict) -> str:
    """The :func:`point_key` of the trial that runs ``point`` (Tune nests a dotted name's value)."""
    nested: dict = {}
    for name, value in point.items():
        *heads, last = name.split(".")
        d = nested
        for h in heads:
            d = d.setdefault(h, {})
        d[last] = value
    return point_key(nested)


def as_point(space, recipe: dict) -> dict | None:
    """``recipe`` (a full recipe dict) as a point of ``space``, projected into it (None: the space
    samples nothing or its method is not one the space can run)."""
    method = recipe.get("method")
    if method is not None and method not in space.method_choices():
        return None
    values = {k: v for k, v in space.values_in(recipe).items() if v is not None}
    if method is not None:  # which method block's parameters the point has
        values["method"] = method
    point = space.point(values)
    return point or None


def warm_points(store, *, backbone: str, dataset: str, space, limit: int,
                skip: list[dict] = ()) -> list[WarmPoint]:
    """Up to ``limit`` points from the store's results of backbones other than ``backbone`` on
    ``dataset`` (see the module's docstring), none equal to a point in ``skip`` (the baselines')."""
    if limit < 1:
        return []
    seen = {point_key(p) for p in skip if p}
    out: list[WarmPoint] = []

    def take(recipe: dict | None, **src) -> None:
        point = as_point(space, recipe) if recipe else None
        if point is None or point_key(point) in seen or len(out) >= limit:
            return
        seen.add(point_key(point))
        out.append(WarmPoint(point=point, dataset=dataset, **src))

    for rec in store.list():
        if rec.dataset == dataset and rec.backbone != backbone:
            take(rec.recipe, kind="served", backbone=rec.backbone, run_id=rec.source_run_id or rec.run_id,
                 search_id=(rec.provenance or {}).get("search_id"), score=rec.metric)
    trials = [t for t in store.finished_trials(dataset) if t.backbone and t.backbone != backbone
              and not t.baseline and t.val_knn_top1 is not None]
    per_search: dict[str | None, int] = {}
    ranked = []
    for t in trials:  # best first: the best PER_SEARCH of each search, then the others
        n = per_search[t.search_id] = per_search.get(t.search_id, 0) + 1
        ranked.append((n > PER_SEARCH, -t.val_knn_top1, t))
    for _, _, t in sorted(ranked, key=lambda r: r[:2]):
        take(t.recipe, kind="trial", backbone=t.backbone, run_id=t.run_id, search_id=t.search_id,
             score=t.val_knn_top1)
    return out


def describe(points: list[WarmPoint], dataset: str, *, enabled: bool) -> str:
    """The plan's line on the warm start."""
    if not enabled:
        return "warm start: off (--no-warm-start): the sampler starts from the baselines alone"
    if not points:
        return (f"warm start: nothing in the store to start from (no other backbone's served recipe or finished "
                f"trial on {dataset}); the sampler starts from the baselines alone")
    return (f"warm start: the first {len(points)} sampled trial(s) from other backbones' results on {dataset}: "
            + "; ".join(p.label() for p in points) + " (--no-warm-start: off)")
