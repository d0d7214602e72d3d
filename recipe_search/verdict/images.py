"""Which test images each report run got right: what makes the verdict's image noise paired.

Every report run logs its probe's per-image correctness (``trainer.per_image``: one bit per test
image) as the MLflow artifact :data:`~recipe_search.tracking.CORRECT_ARTIFACT`; the floor keeps
it in the search's state beside its metrics. :func:`load` reads the runs' back (a reused run
carries its twin's copy: ``tune/trial_logger.py``); :func:`runs_correct` and :func:`floor_correct`
give a comparison its per-seed arrays, or None when any is missing (a run logged before this
existed): that comparison then falls back to the independence bound (``sequential.Comparison.image_var``).
"""

from __future__ import annotations

import numpy as np

from trainer.per_image import KEY, decode

from ..tracking import CORRECT_ARTIFACT, Tracker


def load(tracker: Tracker, runs: list, seeds: list[int], cache: dict | None = None) -> None:
    """Fill ``r.correct[seed]`` of each :class:`RecipeRuns` ``r`` at ``seeds``. ``cache`` (run id ->
    array, kept by the caller across looks) saves reading a run's artifact again at the next look."""
    cache = {} if cache is None else cache
    for r in runs:
        for seed in seeds:
            run_id = r.run_ids.get(seed)
            if run_id is None or seed in r.correct:
                continue
            if run_id not in cache:
                cache[run_id] = _decoded(tracker.read_text(run_id, CORRECT_ARTIFACT))
            r.correct[seed] = cache[run_id]


def runs_correct(runs, seeds: list[int]) -> list[np.ndarray] | None:
    """The per-seed arrays of one recipe's report runs, or None unless every seed has one."""
    out = [runs.correct.get(s) for s in seeds]
    return out if all(x is not None for x in out) else None


def floor_correct(floor: dict[int, dict], seeds: list[int]) -> list[np.ndarray] | None:
    """The floor's per-seed arrays (its metrics at each seed carry them), or None."""
    out = [_decoded(floor.get(s, {}).get(KEY)) for s in seeds]
    return out if all(x is not None for x in out) else None


def _decoded(text) -> np.ndarray | None:
    if not isinstance(text, str):
        return None
    try:
        return decode(text)
    except ValueError:
        return None
