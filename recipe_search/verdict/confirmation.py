"""Running the confirmation stage: the select phase, then the report phase look by look.

The design is in ``verdict.py`` (what each phase trains and reads) and ``sequential.py`` (when
the report phase stops); the jobs come from ``confirm.py``. This module runs them with the
search's :class:`stages.StageRunner`, keeps where it stands in the search's state (``stage``:
``confirmation`` while selecting, ``report`` after; ``look``: the report look in progress;
``floor_test``: the floor at every report seed so far), so a killed search resumes in the phase
and look where it stopped, and decides the verdict from MLflow's records of the runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .confirm import REPORT, SELECT, floor_metrics, recipes_of, report_jobs, report_seeds
from .promote import confirmation_runs, summarize
from ..state import CONFIRM_SUFFIX, write_meta
from . import RecipeRuns, Selection, Verdict, choose, decide, images
from .race import FAILED, rounds, survivors


@dataclass
class Confirmed:
    selection: Selection | None = None
    select: list[RecipeRuns] = field(default_factory=list)  # the select phase's runs (val)
    report: list[RecipeRuns] = field(default_factory=list)  # the report phase's runs (val and test)
    verdict: Verdict | None = None
    restored: bool = False
    interrupted: bool = False


def report_experiment(exp_dir: Path, search_id: str, n: int) -> Path:
    """The Tune experiment of the report look at ``n`` seeds."""
    return exp_dir.with_name(f"{search_id}-report-{n}")


def run_confirmation(runner, *, p, meta: dict, meta_path: Path, exp_dir: Path, floor: dict, floor_recipe, proxy,
                     tracker, resume: bool, note) -> Confirmed:
    """Run (or resume) both phases; ``floor["test"]`` gains the floor at each report seed."""
    s = p.settings
    search_id = s.search_id
    jobs, seeds = meta["jobs"], meta["seeds"]
    out = Confirmed()
    recipes = recipes_of(jobs)
    if meta.get("stage") == "confirmation":  # the select phase: val only
        if s.race:
            meta["raced_out"] = _race(runner, out, jobs, seeds, recipes, exp_dir, search_id, tracker, resume, note)
        else:
            out.restored, out.interrupted = runner.confirm(exp_dir.with_name(search_id + CONFIRM_SUFFIX), jobs,
                                                           resume, note, what="confirmation (select on val)")
        if out.interrupted:
            return out
        meta["stage"] = "report"
        write_meta(meta_path, meta)
    out.select = confirmation_runs(summarize(tracker, search_id), recipes, SELECT)
    out.selection = choose(out.select, seeds)
    if out.selection is None:
        return out
    raced = meta.get("raced_out") or {}
    out.selection.raced_out = dict(raced)
    out.selection.incomplete = [n for n in out.selection.incomplete if n not in raced]
    looks = tuple(meta.setdefault("looks", list(p.report_looks)))
    rseeds = report_seeds(s.seed, len(seeds), looks[-1])
    meta["report_seeds"] = rseeds
    floor["test"] = {int(k): v for k, v in (meta.get("floor_test") or {}).items()}
    n_images = int(proxy.test_y.numel())
    correct: dict = {}  # run id -> which test images it got right, read once across the looks
    done = 0
    for n in looks:
        new = [x for x in rseeds[done:n] if x not in floor["test"]]
        if new:  # the floor at the look's seeds (the untrained encoder reads the test split here)
            floor["test"].update(floor_metrics(floor_recipe, proxy, new, evaluate_test=True))
            meta["floor_test"] = floor["test"]
        look_jobs = report_jobs(jobs, out.selection.report_names, rseeds[done:n])
        done = n
        report = confirmation_runs(summarize(tracker, search_id), recipes, REPORT)
        if not _complete(report, look_jobs):
            meta["look"] = n
            write_meta(meta_path, meta)
            restored, out.interrupted = runner.confirm(
                report_experiment(exp_dir, search_id, n), look_jobs, True, note,
                what=f"confirmation (report on test, look {looks.index(n) + 1} of {len(looks)}: {n} seeds)")
            out.restored |= restored
            if out.interrupted:
                return out
            report = confirmation_runs(summarize(tracker, search_id), recipes, REPORT)
        out.report = [r for r in report if r.name in out.selection.report_names]
        images.load(tracker, out.report, rseeds[:n], correct)  # which test images each run got right: paired noise
        out.verdict = decide(out.selection, report, floor["test"], rseeds, looks, n_images=n_images)
        if out.verdict is None or out.verdict.decided:
            break
        note(f"look at {n} report seeds: not decided yet ({_open(out.verdict)}); adding seeds")
    write_meta(meta_path, meta)
    return out


def _race(runner, out: Confirmed, jobs: list[dict], seeds: list[int], recipes: list[dict], exp_dir: Path,
          search_id: str, tracker, resume: bool, note) -> dict[str, str] | None:
    """The select phase as a race (``race.py``): round by round, the recipes still in it on the
    round's seeds; returns the finalists raced out and why (None when interrupted)."""
    racing, raced, done = {r["name"] for r in recipes}, {}, []
    for i, chunk in enumerate(rounds(seeds)):
        done += chunk
        round_jobs = [j for j in jobs if j["name"] in racing and j["seed"] in chunk]
        select = confirmation_runs(summarize(tracker, search_id), recipes, SELECT)
        if not _complete(select, round_jobs):
            name = search_id + CONFIRM_SUFFIX + ("" if i == 0 else f"-{len(done)}")
            restored, out.interrupted = runner.confirm(
                exp_dir.with_name(name), round_jobs, resume if i == 0 else True, note,
                what=f"confirmation (select on val, race round {i + 1}: {len(done)} of {len(seeds)} seeds, "
                     f"{len(racing)} recipes)")
            out.restored |= restored
            if out.interrupted:
                return None
            select = confirmation_runs(summarize(tracker, search_id), recipes, SELECT)
        if len(done) == len(seeds):
            break
        on, stopped = survivors([r for r in select if r.name in racing], done)
        for name, why in stopped.items():
            note(f"race: finalist {name} stops after {len(done)} seed(s): {why}")
        racing = set(on)
        raced.update({n: why for n, why in stopped.items() if why != FAILED})
    return raced


def _complete(report: list[RecipeRuns], jobs: list[dict]) -> bool:
    by_name = {r.name: r for r in report}
    return all(j["name"] in by_name and j["seed"] in by_name[j["name"]].runs for j in jobs)


def _open(v: Verdict) -> str:
    return ", ".join(f"{k} {d.fmt()}" for k, d in v.comparisons.items() if d.state == "open")
