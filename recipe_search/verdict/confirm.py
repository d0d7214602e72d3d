"""The confirmation stage: recipes trained again on fresh seeds, in two phases, and the floor.

Nothing before the report phase reads the test split (``verdict.py`` has the design).

* **select** -- the ``confirm_k`` best searched recipes (by the final val objective) and both
  baselines, each trained from scratch with ``confirm_seeds`` fresh seeds (the seed changes
  initialisation, augmentation and batch order; the proxy subset stays the search's), at the
  budget's full epochs, evaluated on val only (:func:`plan_jobs`); with ``--race`` in rounds of
  seeds, a finalist below the best baseline after a round stopping there (``race.py``);
* **report** -- the selected winner and reference baseline on further fresh seeds, added look
  by look, evaluated on val and test (:func:`report_jobs`); the untrained encoder is evaluated
  at the same seeds' initial weights (:func:`floor_metrics`), so every lift is paired by seed.

Each run is a Ray Tune trial with the config ``{"job": {...}}`` (see ``trial.py``), in a Tune
experiment of its own (``<search id>-confirm`` for select, ``<search id>-report-<n>`` for
the look at ``n`` report seeds) with the same resources and fault handling as the search; a
killed search resumes inside the phase and look where it stopped.
"""

from __future__ import annotations

import json

from .promote import TrialSummary, finalists


SELECT, REPORT = "select", "report"


def confirmation_seeds(search_seed: int, n: int) -> list[int]:
    """The select phase's ``n`` seeds: no search trial used them (search trials all run with
    ``search_seed``)."""
    return [search_seed + 1 + i for i in range(n)]


def report_seeds(search_seed: int, n_select: int, n: int) -> list[int]:
    """The report phase's ``n`` seeds, disjoint from the search's and the select phase's."""
    return [search_seed + 1 + n_select + i for i in range(n)]


def plan_jobs(trials: list[TrialSummary], baselines: list[tuple[str, dict]], k: int, seeds: list[int]) -> list[dict]:
    """The select phase: one job per (recipe, seed): the top ``k`` searched trials, then the baselines."""
    recipes = [(f"{t.trial_id}", "finalist", t.recipe) for t in finalists(trials, k)]
    recipes += [(name, "baseline", recipe) for name, recipe in baselines]
    return [{"name": name, "role": role, "seed": seed, "recipe": json.dumps(recipe, sort_keys=True),
             "phase": SELECT} for name, role, recipe in recipes for seed in seeds]


def report_jobs(select_jobs: list[dict], names: list[str], seeds: list[int]) -> list[dict]:
    """The report phase at ``seeds``: the recipes ``names`` (as the select phase ran them)."""
    recipes = {r["name"]: r for r in recipes_of(select_jobs)}
    return [{"name": n, "role": recipes[n]["role"], "seed": seed,
             "recipe": json.dumps(recipes[n]["recipe"], sort_keys=True), "phase": REPORT}
            for n in names for seed in seeds]


def job_phase(job: dict) -> str:
    """A job's phase (jobs from before the two phases read the test split: report)."""
    return job.get("phase", REPORT)


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
