"""What ``--race`` would have done: the race's rule replayed on the select phases the studies recorded.

Each search of a study that records its select phase per seed (``confirmed[name]["select_seeds"]``
and ``["val_knn_top1"]``: the samplers study) is replayed with ``recipe_search.verdict.race``: round by
round, which finalists would have stopped, how many select runs that saves, and whether the select
phase's winner would have changed (a finalist that won on all seeds but lost its first). No training:
the figures come from the runs the searches made without racing, seed by seed.
"""

from __future__ import annotations

from recipe_search.verdict import RecipeRuns, choose
from recipe_search.verdict.race import rounds, survivors


def replay(row: dict) -> dict | None:
    """One search's select phase raced: ``{"runs", "saved", "raced_out", "winner", "raced_winner",
    "verdict"}``; None when the row does not record its select phase per seed."""
    conf = row.get("confirmed") or {}
    if not conf or any("select_seeds" not in c for c in conf.values()):
        return None
    runs = [RecipeRuns(n, c["role"], {}, {s: {"val_knn_top1": v} for s, v in zip(c["select_seeds"], c["val_knn_top1"])})
            for n, c in conf.items()]
    seeds = sorted(set.intersection(*(set(c["select_seeds"]) for c in conf.values())))
    plain = choose(runs, seeds)
    racing, raced, done, trained = [r.name for r in runs], {}, [], 0
    for chunk in rounds(seeds):
        done += chunk
        trained += len(racing) * len(chunk)
        if len(done) == len(seeds):
            break
        racing, out = survivors([r for r in runs if r.name in racing], done)
        raced.update(out)
    kept = [RecipeRuns(r.name, r.role, {}, r.runs if r.name not in raced else {}) for r in runs]
    race = choose(kept, seeds)
    return {"runs": len(runs) * len(seeds), "saved": len(runs) * len(seeds) - trained, "raced_out": sorted(raced),
            "winner": plain.winner if plain else None, "raced_winner": race.winner if race else None,
            "verdict": (row.get("verdict") or {}).get("verdict"), "key": row.get("key")}


def race_section(rows: list[dict]) -> list[str]:
    """docs/results.md's lines: per search and in all, what racing the select phase would have done."""
    replays = [r for r in map(replay, rows) if r]
    if not replays:
        return ["No recorded select phase yet."]
    out = ["| search | select runs | raced out after its first seed | runs saved | select winner | "
           "winner if raced | verdict without racing |", "| --- | ---: | --- | ---: | --- | --- | --- |"]
    for r in replays:
        out.append(f"| {r['key']} | {r['runs']} | {', '.join(r['raced_out']) or '-'} | {r['saved']} | {r['winner']} | "
                   f"{r['raced_winner']} | {r['verdict']} |")
    runs, saved = sum(r["runs"] for r in replays), sum(r["saved"] for r in replays)
    changed = [r for r in replays if r["winner"] != r["raced_winner"]]
    out += ["", f"{len(replays)} select phases replayed: racing stops {sum(len(r['raced_out']) for r in replays)} "
                f"finalists and saves {saved} of {runs} select runs ({100 * saved / runs:.0f} %); it changes the "
                f"select winner in {len(changed)}"
                + (" (" + ", ".join(f"{r['key']}: {r['winner']} -> {r['raced_winner']}, whose search ended "
                                    f"{r['verdict']}" for r in changed) + ")" if changed else "")
                + ". A replay, not a measurement of a racing search: the searches ran without it."]
    return out
