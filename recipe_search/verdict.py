"""The verdict of a search: which confirmed recipe wins, by how much, and how sure we are.

After the search, every finalist and both baselines are trained again with the same
fresh seeds, and the untrained encoder (the floor) is evaluated at those seeds' initial
weights. :func:`decide` then

1. **chooses on validation**: the winner is the recipe with the best mean
   ``val_knn_top1`` over the seeds (a baseline can win); only recipes whose every seed
   finished are eligible;
2. **reports on test**: its ``test_probe_top1`` mean ± std, and the lift over each
   baseline and over the floor as paired t intervals over the seeds (``stats.py``);
3. **says what that means**:

   * ``below_floor`` -- the winner's mean test probe is not above the untrained floor's;
   * ``better_than_baselines`` -- a searched recipe whose lift interval over the best
     baseline (the baseline with the higher test mean) lies above 0, and whose lift
     interval over the floor lies above 0 too;
   * ``no_significant_lift`` -- anything else (a baseline won, or an interval includes 0).

>>> runs = {s: {"val_knn_top1": v, "test_probe_top1": v} for s, v in ((1, .5), (2, .52), (3, .51))}
>>> base = {s: {"val_knn_top1": v, "test_probe_top1": v} for s, v in ((1, .40), (2, .41), (3, .39))}
>>> floor = {s: {"test_probe_top1": .2} for s in (1, 2, 3)}
>>> v = decide([RecipeRuns("tpe-1", "finalist", {}, runs), RecipeRuns("mocov2", "baseline", {}, base),
...             RecipeRuns("sinfonce-light", "baseline", {}, base)], floor, [1, 2, 3])
>>> v.verdict, v.winner
('better_than_baselines', 'tpe-1')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .stats import PAIRED_METHOD, Interval, Summary, paired_interval, summary

SELECT_METRIC = "val_knn_top1"
REPORT_METRIC = "test_probe_top1"
BETTER, NO_LIFT, BELOW_FLOOR = "better_than_baselines", "no_significant_lift", "below_floor"


@dataclass
class RecipeRuns:
    """One recipe's confirmation runs: ``runs[seed]`` = the final metrics of that seed's run
    (absent or without the metrics when that run failed or diverged)."""

    name: str
    role: str  # finalist | baseline
    recipe: dict
    runs: dict[int, dict] = field(default_factory=dict)

    def complete(self, seeds: list[int], metrics=(SELECT_METRIC, REPORT_METRIC)) -> bool:
        return all(seed in self.runs and all(m in self.runs[seed] for m in metrics) for seed in seeds)

    def values(self, metric: str, seeds: list[int]) -> list[float]:
        return [float(self.runs[s][metric]) for s in seeds]

    def summary(self, metric: str, seeds: list[int]) -> Summary | None:
        have = [s for s in seeds if metric in self.runs.get(s, {})]
        return summary(self.values(metric, have)) if have else None


@dataclass
class Verdict:
    verdict: str
    line: str
    winner: str
    winner_role: str
    seeds: list[int]
    score: Summary  # the winner's test_probe_top1 over the seeds
    floor: Summary
    baselines: dict[str, Summary]
    lift: dict[str, Interval]  # per baseline, "best_baseline", "floor"
    best_baseline: str | None
    ranking: list[str]  # eligible recipes by mean val score, best first
    incomplete: list[str]  # recipes with a failed or diverged seed (not eligible)
    metric: str = REPORT_METRIC
    select_metric: str = SELECT_METRIC
    method: str = PAIRED_METHOD

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "line": self.line, "winner": self.winner, "winner_role": self.winner_role,
                "metric": self.metric, "select_metric": self.select_metric, "method": self.method,
                "seeds": list(self.seeds), "score": self.score.to_dict(), "floor": self.floor.to_dict(),
                "baselines": {k: v.to_dict() for k, v in self.baselines.items()},
                "lift": {k: v.to_dict() for k, v in self.lift.items()}, "best_baseline": self.best_baseline,
                "ranking": list(self.ranking), "incomplete": list(self.incomplete)}


def decide(recipes: list[RecipeRuns], floor: dict[int, dict], seeds: list[int]) -> Verdict | None:
    """The verdict over ``recipes`` confirmed at ``seeds`` (None when no recipe completed every
    seed). ``floor[seed]`` holds the untrained encoder's metrics at that seed."""
    seeds = list(seeds)
    eligible = [r for r in recipes if r.complete(seeds)]
    incomplete = [r.name for r in recipes if not r.complete(seeds)]
    if not eligible or not all(REPORT_METRIC in floor.get(s, {}) for s in seeds):
        return None
    ranking = sorted(eligible, key=lambda r: summary(r.values(SELECT_METRIC, seeds)).mean, reverse=True)
    win = ranking[0]
    win_test = win.values(REPORT_METRIC, seeds)
    floor_vals = [float(floor[s][REPORT_METRIC]) for s in seeds]
    baselines = [r for r in eligible if r.role == "baseline"]
    lift = {b.name: paired_interval(win_test, b.values(REPORT_METRIC, seeds)) for b in baselines}
    best = max(baselines, key=lambda b: summary(b.values(REPORT_METRIC, seeds)).mean) if baselines else None
    if best is not None:
        lift["best_baseline"] = lift[best.name]
    lift["floor"] = paired_interval(win_test, floor_vals)
    score, floor_s = summary(win_test), summary(floor_vals)
    if score.mean <= floor_s.mean:
        verdict = BELOW_FLOOR
    elif (win.role == "finalist" and best is not None and lift["best_baseline"].low > 0
          and lift["floor"].low > 0):
        verdict = BETTER
    else:
        verdict = NO_LIFT
    v = Verdict(verdict=verdict, line="", winner=win.name, winner_role=win.role, seeds=seeds, score=score,
                floor=floor_s, baselines={b.name: summary(b.values(REPORT_METRIC, seeds)) for b in baselines},
                lift=lift, best_baseline=best.name if best else None, ranking=[r.name for r in ranking],
                incomplete=incomplete)
    v.line = verdict_line(v)
    return v


def verdict_line(v: Verdict) -> str:
    """One plain sentence: the verdict, the winner's test score and the intervals it rests on."""
    n = len(v.seeds)
    what = {BETTER: "better than the baselines", NO_LIFT: "no significant lift over the baselines",
            BELOW_FLOOR: "below the untrained floor"}[v.verdict]
    parts = [f"{v.winner} ({v.winner_role}, chosen on {v.select_metric}) test probe top-1 "
             f"{v.score.fmt()} over {n} seeds"]
    if v.best_baseline is not None and v.best_baseline != v.winner:
        parts.append(f"lift over {v.best_baseline} {v.lift['best_baseline'].fmt()}")
    parts.append(f"untrained floor {v.floor.fmt()}, lift over it {v.lift['floor'].fmt()}")
    return f"verdict: {v.verdict} ({what}): " + "; ".join(parts) + f" ({v.method})"
