"""The race replay (bench/quality_race.py): the select phases the samplers study recorded, raced."""

from __future__ import annotations

from bench.quality_race import race_section, replay


def row(key: str, **val: tuple) -> dict:
    """A samplers row whose select phase ran seeds 1-3: ``row("k", t1=("finalist", .2, .3, .3))``."""
    return {"key": key, "verdict": {"verdict": "no_significant_lift"},
            "confirmed": {n: {"role": v[0], "select_seeds": [1, 2, 3], "val_knn_top1": list(v[1:])}
                          for n, v in val.items()}}


def test_a_finalist_that_loses_its_first_seed_but_wins_the_mean_changes_the_winner():
    r = replay(row("tpe-r0", t1=("finalist", .19, .25, .24), mocov2=("baseline", .16, .17, .14),
                   light=("baseline", .21, .25, .20)))
    assert r["raced_out"] == ["t1"] and r["saved"] == 2 and r["runs"] == 9
    assert (r["winner"], r["raced_winner"]) == ("t1", "light")


def test_a_finalist_that_leads_after_its_first_seed_races_to_the_end():
    r = replay(row("tpe-r1", t1=("finalist", .26, .21, .24), mocov2=("baseline", .18, .18, .15),
                   light=("baseline", .25, .21, .22)))
    assert r["raced_out"] == [] and r["saved"] == 0 and r["winner"] == r["raced_winner"] == "t1"


def test_the_section_sums_the_replays_and_skips_rows_without_a_per_seed_select_phase():
    rows = [row("a", t1=("finalist", .1, .5, .5), b=("baseline", .2, .2, .2)),
            row("b", t1=("finalist", .3, .3, .3), b=("baseline", .2, .2, .2)),
            {"key": "old", "verdict": {}, "confirmed": {"t1": {"role": "finalist", "val_knn_top1": [.1]}}}]
    text = "\n".join(race_section(rows))
    assert "2 select phases replayed: racing stops 1 finalists and saves 2 of 12 select runs (17 %)" in text
    assert "changes the select winner in 1 (a: t1 -> b" in text and "| old |" not in text
    assert race_section([]) == ["No recorded select phase yet."]
