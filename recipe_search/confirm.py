"""The confirmation stage: finalists and baselines trained again on fresh seeds, and the floor.

Nothing before this stage reads the test split. Here the ``confirm_k`` best searched
recipes (by the final val objective) and both baselines are each trained from scratch
with ``confirm_seeds`` fresh seeds (the seed changes initialisation, augmentation and
batch order; the proxy subset stays the search's), at the budget's full epochs, and
evaluated on val and test. The untrained encoder is evaluated at the same seeds' initial
weights (:func:`floor_metrics`), so every lift is paired by seed.

Each run is a Ray Tune trial with the config ``{"job": {...}}`` (see ``trial.py``), in a
Tune experiment of its own (``<search id>-confirm``) with the same resources and fault
handling as the search; a killed search resumes inside this stage.
"""

from __future__ import annotations

import json

from .promote import TrialSummary, finalists


def confirmation_seeds(search_seed: int, n: int) -> list[int]:
    """``n`` seeds that no search trial used (search trials all run with ``search_seed``)."""
    return [search_seed + 1 + i for i in range(n)]


def plan_jobs(trials: list[TrialSummary], baselines: list[tuple[str, dict]], k: int, seeds: list[int]) -> list[dict]:
    """One job per (recipe, seed): the top ``k`` searched trials, then the baselines."""
    recipes = [(f"{t.trial_id}", "finalist", t.recipe) for t in finalists(trials, k)]
    recipes += [(name, "baseline", recipe) for name, recipe in baselines]
    return [{"name": name, "role": role, "seed": seed, "recipe": json.dumps(recipe, sort_keys=True)}
            for name, role, recipe in recipes for seed in seeds]


def recipes_of(jobs: list[dict]) -> list[dict]:
    """The distinct recipes of ``jobs`` as ``{"name", "role", "recipe" (dict)}``, in order."""
    seen, out = set(), []
    for j in jobs:
        if j["name"] not in seen:
            seen.add(j["name"])
            out.append({"name": j["name"], "role": j["role"], "recipe": json.loads(j["recipe"])})
    return out


def floor_metrics(recipe, proxy, seeds: list[int], *, evaluate_test: bool) -> dict[int, dict]:
    """The untrained encoder's metrics at each seed's initial weights (same evaluation as a trial)."""
    from trainer.engine import random_init_metrics

    return {seed: random_init_metrics(recipe.replace(seed=seed), proxy, device="auto",
                                      evaluate_test=evaluate_test) for seed in seeds}
