"""Racing in the select phase (``--race``): finalists against the baselines on shared seeds.

Without ``--race`` the select phase trains every finalist and both baselines on all its seeds.
With it, the seeds come in rounds that double (:func:`rounds`: 1, then 2, then 4 seeds ...), as
SMAC intensifies a challenger against its incumbent: after each round a finalist goes on only
while its mean val score over the seeds every recipe of the round shares is at least the best
baseline's over the same seeds (:func:`survivors`); the baselines always run every seed (one of
them is the reference the report phase measures against). A finalist raced out is not eligible
in :func:`~recipe_search.verdict.choose` (it did not run every select seed) and is listed as
raced out, not as failed.

What it buys: the compute of the seeds a losing finalist would have run (at the ``cpu`` budget,
1 finalist on 3 seeds, 2 of 9 select runs when it loses its first seed). What it risks: a finalist
that would have won on the mean of all seeds can lose its first seed (seed std 1.6-3.0 val
points at that budget, docs/results.md). The comparisons are paired: a seed is the same
initialisation, augmentation and batch order for every recipe, so only seeds all compared recipes
finished count; a recipe that failed a seed is out of the race (it could not be chosen anyway).

>>> rounds([11, 12, 13])
[[11], [12, 13]]
>>> from recipe_search.verdict import RecipeRuns
>>> val = lambda *v: {s: {"val_knn_top1": x} for s, x in zip((11, 12, 13), v)}
>>> runs = [RecipeRuns("t1", "finalist", {}, val(.40)), RecipeRuns("t2", "finalist", {}, val(.46)),
...         RecipeRuns("mocov2", "baseline", {}, val(.30)), RecipeRuns("sinfonce-light", "baseline", {}, val(.45))]
>>> survivors(runs, [11])
(['t2', 'mocov2', 'sinfonce-light'], {'t1': 'val 0.400 < sinfonce-light 0.450 on seeds 11'})
"""

from __future__ import annotations

from statistics import fmean

from . import SELECT_METRIC, RecipeRuns

FAILED = "a seed failed"  # a finalist out of the race because a run of it failed (listed as incomplete)


def rounds(seeds: list[int]) -> list[list[int]]:
    """The select seeds in rounds of 1, 2, 4, ... seeds (the last round takes what is left)."""
    out, i, size = [], 0, 1
    while i < len(seeds):
        out.append(list(seeds[i:i + size]))
        i, size = i + size, size * 2
    return out


def survivors(runs: list[RecipeRuns], seeds: list[int]) -> tuple[list[str], dict[str, str]]:
    """The recipes that race on after ``seeds`` (in ``runs``' order) and why each other one stopped.

    Every baseline races on. A finalist races on when it finished every seed of ``seeds`` and its
    mean val score over them is at least the best baseline's over the same seeds; with no baseline
    complete on them there is no incumbent, and every complete finalist races on."""
    if not seeds:
        raise ValueError("survivors() needs the seeds the race has run so far, got none")
    complete = [r for r in runs if r.complete(seeds)]
    mean = {r.name: fmean(r.values(SELECT_METRIC, seeds)) for r in complete}
    bases = [r for r in complete if r.role == "baseline"]
    best = max(bases, key=lambda r: mean[r.name]) if bases else None
    on, out = [], {}
    for r in runs:
        if r.role == "baseline":
            on.append(r.name)
        elif r.name not in mean:
            out[r.name] = FAILED
        elif best is not None and mean[r.name] < mean[best.name]:
            out[r.name] = (f"val {mean[r.name]:.3f} < {best.name} {mean[best.name]:.3f} on seeds "
                           f"{', '.join(map(str, seeds))}")
        else:
            on.append(r.name)
    return on, out
