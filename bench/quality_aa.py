"""The A/A study, for real: does a confirmation declare a lift when there is none?

``python bench/bench_quality.py aa`` (``--repeats`` confirmations, default 3, at ``--budget``).

Each repeat is the confirmation stage of a search whose only finalist is the reference baseline
under another name: ``sinfonce-light`` (baseline) against ``sinfonce-light-twin`` (finalist),
the same recipe. Training is deterministic per (recipe, seed), so a twin trained on the very
seeds of the baseline would score identically and could never show a lift; the twin's run for
seed ``s`` is therefore trained with seed ``s + TWIN_SEED_OFFSET`` (another initialisation,
augmentation and batch order: an independent draw of the same recipe's score, what a different
recipe of equal quality would give) and is paired with the baseline's run for ``s``.

The phases and rules are the product's, called as a search calls them: select seeds and report
seeds from ``confirm.py``, :func:`recipe_search.verdict.choose` on val over the select seeds,
then the report looks (``sequential.py``: seeds added until the declared comparisons are
decided) with the floor at every report seed and :func:`recipe_search.verdict.decide`.
``mocov2``, the second baseline of a search, is left out: it never wins the select phase at
this budget (docs/results.md, study 1) and the report phase does not train it, so it cannot
change the verdict; leaving it out saves 3 trainings per repeat.

Repeat ``r`` uses the search seed ``AA_SEED + 100 r`` (its select and report seeds follow from it);
the data subset is the other studies' (``--seed``). Every training is a row of
``docs/results/aa.jsonl`` (resumable like every study); the verdicts are replayed from those rows
by :func:`verdicts` (the report and the tests use the same function).
"""

from __future__ import annotations

import json

from recipe_search.baselines import FLOOR_BASELINE, SINFONCE_LIGHT
from recipe_search.verdict.confirm import confirmation_seeds, report_seeds
from recipe_search.verdict import REPORT_METRIC, SELECT_METRIC, RecipeRuns, choose, decide

STUDY = "aa"
AA_SEED = 300  # repeat r confirms with search seed AA_SEED + 100 r (seeds disjoint across repeats and studies)
TWIN = f"{SINFONCE_LIGHT.name}-twin"
TWIN_SEED_OFFSET = 10_000


def search_seed(rep: int) -> int:
    return AA_SEED + 100 * rep


def repeat_seeds(rep: int, n_select: int, looks: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """The select and report seeds of repeat ``rep``."""
    seed = search_seed(rep)
    return confirmation_seeds(seed, n_select), report_seeds(seed, n_select, looks[-1])


def _train_job(setup, rep: int, phase: str, name: str, seed: int) -> dict:
    trained_seed = seed + TWIN_SEED_OFFSET if name == TWIN else seed
    recipe = setup.baseline(SINFONCE_LIGHT.name, trained_seed)
    role = "finalist" if name == TWIN else "baseline"
    return setup.job(STUDY, f"r{rep}-{phase}-{name}-s{seed}", name, role, recipe, repeat=rep, phase=phase,
                     pair_seed=seed)


def _floor_job(setup, rep: int, seed: int) -> dict:
    recipe = setup.baseline(FLOOR_BASELINE, seed)
    return setup.job(STUDY, f"r{rep}-report-floor-s{seed}", "floor", "floor", recipe, kind="floor", repeat=rep,
                     phase="report", pair_seed=seed)


def _runs(rows: list[dict], rep: int, phase: str, name: str, role: str) -> RecipeRuns:
    runs = {r["pair_seed"]: r["metrics"] for r in rows
            if r["repeat"] == rep and r["phase"] == phase and r["name"] == name and r["status"] == "completed"}
    return RecipeRuns(name, role, {}, runs)


def replay(rows: list[dict], rep: int, n_select: int, looks: tuple[int, ...], n_images: int):
    """Repeat ``rep`` from its rows: ``(selection, verdict, jobs_needed)`` where ``jobs_needed`` names
    the (phase, name, seed) trainings and floors the next step needs (empty when decided)."""
    sel_seeds, rseeds = repeat_seeds(rep, n_select, looks)
    select = [_runs(rows, rep, "select", TWIN, "finalist"), _runs(rows, rep, "select", SINFONCE_LIGHT.name, "baseline")]
    need = [("select", r.name, s) for r in select for s in sel_seeds if SELECT_METRIC not in r.runs.get(s, {})]
    if need:
        return None, None, need
    selection = choose(select, sel_seeds)
    report = [_runs(rows, rep, "report", n, "finalist" if n == TWIN else "baseline") for n in selection.report_names]
    floor = {r["pair_seed"]: r["metrics"] for r in rows
             if r["repeat"] == rep and r["name"] == "floor" and r["status"] == "completed"}
    verdict = decide(selection, report, floor, rseeds, looks, n_images=n_images)
    done = len(verdict.seeds) if verdict else 0
    if verdict is not None and verdict.decided:
        return selection, verdict, []
    nxt = next(n for n in looks if n > done)
    need = [("report", r.name, s) for r in report for s in rseeds[:nxt] if REPORT_METRIC not in r.runs.get(s, {})]
    need += [("report", "floor", s) for s in rseeds[:nxt] if REPORT_METRIC not in floor.get(s, {})]
    return selection, verdict, need


def verdicts(rows: list[dict], repeats: int, n_select: int, looks: tuple[int, ...], n_images: int) -> list[dict]:
    """Every repeat's state: its verdict (None while undecided) and what it still needs."""
    out = []
    for rep in range(repeats):
        selection, verdict, need = replay(rows, rep, n_select, looks, n_images)
        out.append({"repeat": rep, "selection": selection, "verdict": verdict, "need": need})
    return out


DESIGN = "aa_design.json"  # beside the rows: what the verdicts are replayed with


def aa(setup, run_jobs, load_results, results_dir) -> None:
    """Run the repeats phase by phase, all repeats' pending trainings in one batch per step."""
    looks, n_select = tuple(setup.plan.report_looks), setup.plan.confirm_seeds
    n_images = int(setup.proxy.test_y.numel())
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / DESIGN).write_text(json.dumps({
        "budget": setup.budget.name, "backbone": setup.args.backbone, "repeats": setup.args.repeats,
        "n_select": n_select, "looks": list(looks), "n_images": n_images, "twin_seed_offset": TWIN_SEED_OFFSET,
        "command": f"python bench/bench_quality.py aa --budget {setup.budget.name} --repeats {setup.args.repeats}"},
        indent=2) + "\n")
    while True:
        states = verdicts(load_results(STUDY), setup.args.repeats, n_select, looks, n_images)
        jobs = [_floor_job(setup, st["repeat"], seed) if name == "floor" else
                _train_job(setup, st["repeat"], phase, name, seed)
                for st in states for phase, name, seed in st["need"]]
        if not jobs:
            break
        before = len(load_results(STUDY))
        run_jobs(setup, STUDY, jobs)
        if len(load_results(STUDY)) == before:  # nothing new: every job failed before recording
            raise SystemExit("[aa] no progress: the pending trainings failed; see docs/results/aa.jsonl")
        failed = [r["key"] for r in load_results(STUDY) if r["status"] != "completed"]
        if failed:
            raise SystemExit(f"[aa] failed trainings: {', '.join(failed)} (delete their rows to retry)")
    for st in states:
        v = st["verdict"]
        print(f"[aa] repeat {st['repeat']} (seed {search_seed(st['repeat'])}): {v.line}", flush=True)
