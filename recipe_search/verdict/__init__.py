"""The verdict of a search: which recipe is the answer, by how much, and how sure we are.

Confirmation has two phases, on disjoint fresh seeds, so the figures that are reported took
no part in choosing what they report on:

1. **Select** (``select_seeds``, e.g. 3): the ``confirm_k`` best searched recipes and both
   baselines are trained again and evaluated on *validation only*. :func:`choose` picks the
   winner (best mean ``val_knn_top1``; a baseline can win) and the *reference* baseline (the
   better baseline on val other than the winner). Nothing here reads the test split.
2. **Report** (``report_seeds``, in looks such as 3, 5, 8): the winner and the reference
   baseline are trained again on new seeds and evaluated on the test split; the untrained
   floor is evaluated at the same seeds. :func:`decide` tests the declared comparisons after
   each look (``sequential.py``: group-sequential, Holm across comparisons, test-image noise
   counted, paired image by image when the runs recorded which test images they got right:
   ``images.py``) and says when confirmation can stop. A comparison is reported at the look that
  decided it (its interval and mean are frozen there), so seeds added for another comparison
  never dilute or sharpen a decided one.

The declared (primary) comparisons, on ``test_probe_top1``:

* ``winner-vs-baseline`` -- the winner against the reference baseline (a searched winner only);
* ``winner-vs-floor`` -- the winner against the untrained encoder;
* ``baseline-vs-floor`` -- the reference baseline against the floor (a searched winner only:
  it decides whether the baseline can be served in the winner's place).

Every other figure (the selection phase's val differences) is exploratory and labelled so.

Cost: at the ``cpu`` budget (1 finalist, select on 3 seeds, report looks 3, 5, 8) a confirmation
trains 9 select runs plus 6-16 report runs (the old design trained 9 and reported on them); in
``bench/simulate_verdicts.py``, fitted to the measured seed noise, it averaged 17-21 runs. In
exchange the reported lift is unbiased (A/A: -0.03 points against the old design's +1.33) and
``better_than_baselines`` under the null fell from 1.9 % to 0.16 % (docs/results.md, section 5).
The verdict:

* ``below_floor`` -- the winner's mean test probe is not above the floor's;
* ``better_than_baselines`` -- a searched winner whose lifts over the reference baseline and
  over the floor are both shown (rejected 'lift <= 0');
* ``no_significant_lift`` -- anything else.

What is served (:attr:`Verdict.served`): the winner under ``better_than_baselines``; else
the baseline whose lift over the floor is shown (the reference baseline beside a searched
winner, or the winner when it is a baseline), with the searched candidate beside it; else
nothing (``None``).

>>> val = lambda v: {s: {"val_knn_top1": v} for s in (1, 2, 3)}
>>> sel = choose([RecipeRuns("t1", "finalist", {}, val(.5)), RecipeRuns("mocov2", "baseline", {}, val(.4)),
...               RecipeRuns("sinfonce-light", "baseline", {}, val(.45))], [1, 2, 3])
>>> sel.winner, sel.reference
('t1', 'sinfonce-light')
>>> test = lambda *v: {s: {"test_probe_top1": x} for s, x in zip((4, 5, 6), v)}
>>> v = decide(sel, [RecipeRuns("t1", "finalist", {}, test(.60, .62, .61)),
...                  RecipeRuns("sinfonce-light", "baseline", {}, test(.40, .41, .39))],
...            test(.20, .21, .19), [4, 5, 6], (3,))
>>> v.verdict, v.served, v.stop
('better_than_baselines', 't1', 'decided')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .images import floor_correct, runs_correct
from .sequential import ALPHA, OPEN, REJECTED, SHOW_CAP, Comparison, Decision, Sequential, seeds_to_show
from .stats import Summary, summary

SELECT_METRIC = "val_knn_top1"
REPORT_METRIC = "test_probe_top1"
BETTER, NO_LIFT, BELOW_FLOOR = "better_than_baselines", "no_significant_lift", "below_floor"
WB, WF, BF = "winner-vs-baseline", "winner-vs-floor", "baseline-vs-floor"
METHOD = ("paired lift over fresh report seeds; group-sequential t test (Pocock-type, calibrated), "
          "Holm across the declared comparisons, test-image noise counted (paired per image where the runs recorded "
          "their images); 95% intervals")


@dataclass
class RecipeRuns:
    """One recipe's confirmation runs: ``runs[seed]`` = the final metrics of that seed's run
    (absent or without the metrics when that run failed or diverged)."""

    name: str
    role: str  # finalist | baseline
    recipe: dict
    runs: dict[int, dict] = field(default_factory=dict)
    run_ids: dict[int, str] = field(default_factory=dict)  # seed -> its MLflow run
    correct: dict = field(default_factory=dict)  # report seed -> which test images its probe got right (images.py)

    def complete(self, seeds: list[int], metrics=(SELECT_METRIC,)) -> bool:
        return all(seed in self.runs and all(m in self.runs[seed] for m in metrics) for seed in seeds)

    def values(self, metric: str, seeds: list[int]) -> list[float]:
        return [float(self.runs[s][metric]) for s in seeds]

    def summary(self, metric: str, seeds: list[int]) -> Summary | None:
        have = [s for s in seeds if metric in self.runs.get(s, {})]
        return summary(self.values(metric, have)) if have else None


@dataclass
class Selection:
    """The select phase's choice, on validation only."""

    winner: str
    winner_role: str
    reference: str | None  # the better baseline on val other than the winner
    ranking: list[str]  # eligible recipes by mean val score, best first
    incomplete: list[str]
    seeds: list[int]
    val: dict[str, Summary]  # every eligible recipe's val score over the select seeds
    raced_out: dict[str, str] = field(default_factory=dict)  # --race: finalists stopped early, and why

    @property
    def report_names(self) -> list[str]:
        """The recipes the report phase trains."""
        return [self.winner] + ([self.reference] if self.winner_role == "finalist" and self.reference else [])

    def to_dict(self) -> dict:
        return {"winner": self.winner, "winner_role": self.winner_role, "reference": self.reference,
                "ranking": list(self.ranking), "incomplete": list(self.incomplete), "seeds": list(self.seeds),
                "raced_out": dict(self.raced_out),
                "metric": SELECT_METRIC, "val": {k: v.to_dict() for k, v in self.val.items()},
                "note": "exploratory: chooses the winner; no interval here is part of the verdict"}


def choose(recipes: list[RecipeRuns], seeds: list[int]) -> Selection | None:
    """The winner and the reference baseline on mean val score over ``seeds`` (None when no recipe
    completed every seed). Only recipes whose every seed finished are eligible."""
    seeds = list(seeds)
    eligible = [r for r in recipes if r.complete(seeds)]
    if not eligible:
        return None
    val = {r.name: summary(r.values(SELECT_METRIC, seeds)) for r in eligible}
    ranking = sorted(eligible, key=lambda r: val[r.name].mean, reverse=True)
    win = ranking[0]
    others = [r for r in ranking if r.role == "baseline" and r.name != win.name]
    return Selection(winner=win.name, winner_role=win.role, reference=others[0].name if others else None,
                     ranking=[r.name for r in ranking], incomplete=[r.name for r in recipes if not r.complete(seeds)],
                     seeds=seeds, val=val)


@dataclass
class Verdict:
    verdict: str
    line: str
    winner: str
    winner_role: str
    seeds: list[int]  # the report seeds the verdict rests on
    score: Summary  # the winner's test_probe_top1 over those seeds
    floor: Summary
    baselines: dict[str, Summary]  # the reference baseline's test score (when it was reported)
    lift: dict[str, Decision]  # "floor", "best_baseline" and the baseline by name; "baseline_floor"
    best_baseline: str | None  # the reference baseline
    ranking: list[str]
    incomplete: list[str]
    selection: Selection
    comparisons: dict[str, Decision]  # the declared comparisons (WB, WF, BF) after the last look
    looks: tuple[int, ...]
    stop: str  # decided | futile | cap | more_seeds
    served: str | None  # the recipe served for this verdict (None: nothing is)
    served_role: str | None
    alpha: float = ALPHA
    metric: str = REPORT_METRIC
    select_metric: str = SELECT_METRIC
    method: str = METHOD

    @property
    def decided(self) -> bool:
        return self.stop != "more_seeds"

    @property
    def mde(self) -> float | None:
        """The smallest lift the primary comparison could have detected (80 % power)."""
        c = self.comparisons.get(WB) or self.comparisons.get(WF)
        return c.mde if c is not None else None

    def to_show(self) -> str | None:
        """What showing the primary comparison's measured lift would take, when this confirmation
        ended without showing a positive one (:func:`~.sequential.seeds_to_show`); None otherwise."""
        c = self.comparisons.get(WB) or self.comparisons.get(WF)
        if c is None or c.state == REJECTED or c.mean <= 0 or self.stop == "more_seeds":
            return None
        n = seeds_to_show(c)
        need = f"more than {SHOW_CAP}" if n is None else f"about {n}"
        return f"its measured {c.mean:+.3f} would take {need} fresh report seeds to show (80 % power)"

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "line": self.line, "winner": self.winner, "winner_role": self.winner_role,
                "metric": self.metric, "select_metric": self.select_metric, "method": self.method,
                "seeds": list(self.seeds), "select_seeds": list(self.selection.seeds), "looks": list(self.looks),
                "stop": self.stop, "alpha": self.alpha, "mde": self.mde,
                "served": self.served, "served_role": self.served_role,
                "score": self.score.to_dict(), "floor": self.floor.to_dict(),
                "baselines": {k: v.to_dict() for k, v in self.baselines.items()},
                "lift": {k: v.to_dict() for k, v in self.lift.items()}, "best_baseline": self.best_baseline,
                "comparisons": {k: v.to_dict() for k, v in self.comparisons.items()},
                "selection": self.selection.to_dict(), "ranking": list(self.ranking),
                "incomplete": list(self.incomplete)}


def decide(selection: Selection, report: list[RecipeRuns], floor: dict[int, dict], report_seeds: list[int],
           looks: tuple[int, ...], *, n_images: int = 0, alpha: float = ALPHA) -> Verdict | None:
    """The verdict after as many of ``looks`` as the report runs cover (``report_seeds`` in order;
    the look ``n`` uses the first ``n``). None when not even the first look is complete.

    The test images' noise of a comparison is paired (the variance of the per-image difference)
    when both sides have their per-image correctness at every seed of the look (``RecipeRuns.correct``;
    the floor's ``floor[seed]["test_probe_correct"]``), else the independence bound over ``n_images``.

    The looks are replayed from the first, so the same runs always give the same verdict (a
    resumed search decides exactly as an uninterrupted one would)."""
    by_name = {r.name: r for r in report}
    names = selection.report_names
    seq = Sequential(tuple(looks), alpha=alpha)
    decisions: dict[str, Decision] = {}
    used: list[int] = []
    stop = "more_seeds"
    for n in seq.looks:
        seeds = list(report_seeds[:n])
        if len(seeds) < n or not _covered(by_name, names, floor, seeds):
            break
        used = seeds
        for name, d in seq.test(_comparisons(selection, by_name, floor, seeds, n_images)).items():
            if name not in decisions or decisions[name].state == OPEN:
                decisions[name] = d  # a resolved comparison keeps the look that decided it
        stop = _stop(selection, decisions, last=n == seq.looks[-1])
        if stop != "more_seeds":
            break
    if not used:
        return None
    win = by_name[selection.winner]
    score = summary(win.values(REPORT_METRIC, used))
    floor_s = summary([float(floor[s][REPORT_METRIC]) for s in used])
    ref = selection.reference if selection.winner_role == "finalist" else None
    baselines = {ref: summary(by_name[ref].values(REPORT_METRIC, used))} if ref else {}
    lift = {"floor": decisions[WF]}
    if ref:
        lift.update({ref: decisions[WB], "best_baseline": decisions[WB], "baseline_floor": decisions[BF]})
    verdict = _verdict(selection, decisions, score, floor_s)
    served, served_role = _served(selection, verdict, decisions)
    v = Verdict(verdict=verdict, line="", winner=selection.winner, winner_role=selection.winner_role, seeds=used,
                score=score, floor=floor_s, baselines=baselines, lift=lift, best_baseline=ref,
                ranking=list(selection.ranking), incomplete=list(selection.incomplete), selection=selection,
                comparisons=decisions, looks=seq.looks, stop=stop, served=served, served_role=served_role,
                alpha=alpha)
    v.line = verdict_line(v)
    return v


def _covered(by_name: dict[str, RecipeRuns], names: list[str], floor: dict[int, dict], seeds: list[int]) -> bool:
    return (all(n in by_name and by_name[n].complete(seeds, (REPORT_METRIC,)) for n in names)
            and all(REPORT_METRIC in floor.get(s, {}) for s in seeds))


def _comparisons(sel: Selection, by_name, floor, seeds, n_images) -> list[Comparison]:
    win = by_name[sel.winner].values(REPORT_METRIC, seeds)
    flo = [float(floor[s][REPORT_METRIC]) for s in seeds]
    cw, cf = runs_correct(by_name[sel.winner], seeds), floor_correct(floor, seeds)
    out = [Comparison(WF, win, flo, n_images, cw, cf)]
    if sel.winner_role == "finalist" and sel.reference:
        ref = by_name[sel.reference].values(REPORT_METRIC, seeds)
        cr = runs_correct(by_name[sel.reference], seeds)
        out += [Comparison(WB, win, ref, n_images, cw, cr), Comparison(BF, ref, flo, n_images, cr, cf)]
    return out


def _stop(sel: Selection, d: dict[str, Decision], *, last: bool) -> str:
    """decided: the served recipe is known; futile: the open question can no longer be decided
    within the looks; cap: the last look was reached; more_seeds: go on."""
    def resolved(name):
        return d[name].state != OPEN

    if WB in d:
        if d[WB].state == REJECTED and d[WF].state == REJECTED:
            return "decided"
        if resolved(WB) and resolved(BF):
            return "decided" if d[BF].state == REJECTED else "futile"
    elif resolved(WF):
        return "decided" if d[WF].state == REJECTED else "futile"
    return "cap" if last else "more_seeds"


def _verdict(sel: Selection, d: dict[str, Decision], score: Summary, floor: Summary) -> str:
    if score.mean <= floor.mean:
        return BELOW_FLOOR
    # no reference baseline (every baseline failed on the select seeds): no lift over them can be shown
    if sel.winner_role == "finalist" and WB in d and d[WB].state == REJECTED and d[WF].state == REJECTED:
        return BETTER
    return NO_LIFT


def _served(sel: Selection, verdict: str, d: dict[str, Decision]) -> tuple[str | None, str | None]:
    if verdict == BETTER:
        return sel.winner, sel.winner_role
    if sel.winner_role == "baseline":
        return (sel.winner, "baseline") if verdict != BELOW_FLOOR and d[WF].state == REJECTED else (None, None)
    if BF in d and d[BF].state == REJECTED:
        return sel.reference, "baseline"
    return None, None


def verdict_line(v: Verdict) -> str:
    """One plain sentence: the verdict, the winner's test score, the intervals it rests on, what
    is served and the smallest lift this confirmation could have detected."""
    what = {BETTER: "better than the baselines", NO_LIFT: "no significant lift over the baselines",
            BELOW_FLOOR: "below the untrained floor"}[v.verdict]
    parts = [f"{v.winner} ({v.winner_role}, chosen on {v.select_metric} over seeds "
             f"{_seeds(v.selection.seeds)}) test probe top-1 {v.score.fmt()} over {len(v.seeds)} fresh report seeds"]
    if v.best_baseline:
        parts.append(f"lift over {v.best_baseline} {v.lift['best_baseline'].fmt()}")
    parts.append(f"untrained floor {v.floor.fmt()}, lift over it {v.lift['floor'].fmt()}")
    if "baseline_floor" in v.lift:
        parts.append(f"{v.best_baseline} over the floor {v.lift['baseline_floor'].fmt()}")
    if v.mde is not None:
        show = v.to_show()
        parts.append(f"smallest detectable lift {v.mde:+.3f} ({_stop_words(v)}{'; ' + show if show else ''})")
    parts.append(f"served: {v.served} ({v.served_role})" if v.served else "served: nothing")
    return f"verdict: {v.verdict} ({what}): " + "; ".join(parts)


def _stop_words(v: Verdict) -> str:
    return {"decided": f"decided at {len(v.seeds)} seeds", "futile": f"stopped at {len(v.seeds)} seeds: "
            "more seeds could not decide it", "cap": f"all {len(v.seeds)} seeds used",
            "more_seeds": f"provisional at {len(v.seeds)} seeds"}[v.stop]


def _seeds(seeds: list[int]) -> str:
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))
