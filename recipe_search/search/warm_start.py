"""A search that starts from what the store knows: the results of other backbones on the same data.

``recipe-search run --backbone efficientnet_b0`` after a search of ``mobilenetv3_small_100`` on
CIFAR-10 need not start from nothing. Before its first sampled trial the sampler is handed, as
enqueued trials (Optuna's ``enqueue_trial``; they run before the baselines and ASHA never
stops them, see ``tune/searcher.py`` and ``tune/asha.py``), the points of:

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
from CIFAR-10's); ``--warm-start-file FILE`` reads them from a results file written by
``recipe-search export`` instead of the store (another machine's or a colleague's store,
``recipe_search/known_results.py``). The sources are printed with the plan, recorded on the
search's parent run (``warm_start.json``, param ``warm_start_points``) and in a served recipe's
provenance (``settings.warm_start``); each warm trial's run is named ``warm`` with its source in
``rs.notes``.
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


def warm_points(known, *, backbone: str, dataset: str, space, limit: int,
                skip: list[dict] = ()) -> list[WarmPoint]:
    """Up to ``limit`` points from ``known`` (a :class:`~recipe_search.known_results.KnownResults`:
    a store's or a results file's) of backbones other than ``backbone`` on ``dataset`` (see the
    module's docstring), none equal to a point in ``skip`` (the baselines')."""
    if limit < 1:
        return []
    seen = {point_key(p) for p in skip if p}
    out: list[WarmPoint] = []

    def take(r, kind: str) -> None:
        point = as_point(space, r.recipe) if r.recipe else None
        if point is None or point_key(point) in seen or len(out) >= limit:
            return
        seen.add(point_key(point))
        out.append(WarmPoint(point=point, kind=kind, backbone=r.backbone, dataset=dataset, run_id=r.run_id,
                             search_id=r.search_id, score=r.score))

    mine = lambda r: r.dataset == dataset and r.backbone != backbone  # noqa: E731
    for r in filter(mine, known.served):
        take(r, "served")
    per_search: dict[str | None, int] = {}
    ranked = []
    score = lambda r: r.score if r.score is not None else float("-inf")  # noqa: E731
    for r in sorted(filter(mine, known.trials), key=score, reverse=True):  # the best PER_SEARCH of each search first
        n = per_search[r.search_id] = per_search.get(r.search_id, 0) + 1
        ranked.append((n > PER_SEARCH, -score(r), r))
    for _, _, r in sorted(ranked, key=lambda x: x[:2]):
        take(r, "trial")
    return out


def describe(points: list[WarmPoint], dataset: str, *, enabled: bool, origin: str = "store") -> str:
    """The plan's line on the warm start."""
    if not enabled:
        return "warm start: off (--no-warm-start): the sampler starts from the baselines alone"
    where = "the store" if origin == "store" else origin
    if not points:
        return (f"warm start: nothing in {where} to start from (no other backbone's served recipe or finished "
                f"trial on {dataset}); the sampler starts from the baselines alone")
    frm = "" if origin == "store" else f" in {origin}"
    return (f"warm start: the first {len(points)} trial(s), each run to the end, from other backbones' results on "
            f"{dataset}{frm}: "
            + "; ".join(p.label() for p in points) + " (--no-warm-start: off)")
