"""Racing in the select phase (``--race``, issue 22 item 2): finalists race the baselines on
shared seeds, round by round; the rule in ``verdict/race.py``, and a real search that races."""

from __future__ import annotations

import pytest

from recipe_search.verdict import RecipeRuns, choose
from recipe_search.verdict.race import FAILED, rounds, survivors


def runs(name: str, role: str, **val: float) -> RecipeRuns:
    """``runs("t1", "finalist", s11=.4, s12=.5)``: val scores by seed."""
    return RecipeRuns(name, role, {}, {int(k[1:]): {"val_knn_top1": v} for k, v in val.items()})


def test_rounds_double_and_cover_every_seed_once():
    assert rounds([1]) == [[1]]
    assert rounds([1, 2]) == [[1], [2]]
    assert rounds([1, 2, 3, 4, 5]) == [[1], [2, 3], [4, 5]]
    assert rounds(list(range(10, 18))) == [[10], [11, 12], [13, 14, 15, 16], [17]]
    assert rounds([]) == []


def test_racing_compares_recipes_on_shared_seeds_only():
    """The baseline's extra seed 13 (say a reused run) is not part of the comparison: on seeds 11 and
    12, the finalist's mean (0.45) is above the baseline's (0.44), though the baseline's mean over
    its own three seeds (0.56) is far above."""
    t1 = runs("t1", "finalist", s11=.40, s12=.50)
    base = runs("sinfonce-light", "baseline", s11=.43, s12=.45, s13=.80)
    assert survivors([t1, base], [11, 12]) == (["t1", "sinfonce-light"], {})
    # one seed later the comparison is on the three seeds both ran
    t1.runs[13] = {"val_knn_top1": .41}
    on, out = survivors([t1, base], [11, 12, 13])
    assert on == ["sinfonce-light"] and out == {"t1": "val 0.437 < sinfonce-light 0.560 on seeds 11, 12, 13"}


def test_the_incumbent_is_the_best_baseline_and_baselines_always_race_on():
    f = [runs("t1", "finalist", s11=.50), runs("t2", "finalist", s11=.41), runs("t3", "finalist", s11=.45)]
    b = [runs("mocov2", "baseline", s11=.30), runs("sinfonce-light", "baseline", s11=.45)]
    on, out = survivors(f + b, [11])
    assert on == ["t1", "t3", "mocov2", "sinfonce-light"]  # a tie with the incumbent races on
    assert list(out) == ["t2"]


def test_a_finalist_that_failed_a_seed_is_out_and_no_complete_baseline_means_no_incumbent():
    failed = runs("t1", "finalist")  # its seed-11 run failed: no metrics
    low = runs("t2", "finalist", s11=.10)
    broken = runs("mocov2", "baseline")  # every baseline failed too: nothing to race against
    on, out = survivors([failed, low, broken], [11])
    assert on == ["t2", "mocov2"] and out == {"t1": FAILED}
    with pytest.raises(ValueError, match="needs the seeds"):
        survivors([low], [])


def test_a_raced_out_finalist_cannot_be_chosen():
    """choose() only ranks recipes that ran every select seed: a finalist raced out after seed 11
    is not eligible even though its one seed was the best score of all."""
    out = runs("t1", "finalist", s11=.60)
    win = runs("t2", "finalist", s11=.46, s12=.47, s13=.48)
    base = [runs("mocov2", "baseline", s11=.3, s12=.3, s13=.3), runs("sinfonce-light", "baseline", s11=.45,
                                                                     s12=.44, s13=.46)]
    sel = choose([out, win, *base], [11, 12, 13])
    assert sel.winner == "t2" and "t1" not in sel.ranking


@pytest.mark.slow  # a whole extra search: CI runs it with `pytest -m slow`
def test_a_search_with_race_trains_each_round_on_the_seeds_of_the_recipes_still_in_it(search_home):
    """A real tiny search with --race and 3 finalists on 3 select seeds (rounds [s1], [s2, s3]):
    the baselines run every seed; a finalist runs seeds 2 and 3 exactly when its seed-1 val score
    was at least the best baseline's; the others are listed as raced out (not as failed), with the
    reason, and the verdict is decided on the recipes that ran every seed."""
    from mlflow.tracking import MlflowClient

    from recipe_search import records
    from recipe_search.plan import SearchSettings
    from recipe_search.search import run_search
    from test_search import BACKBONE, data_args

    notes: list[str] = []
    o = run_search(SearchSettings(backbone=BACKBONE, budget="tiny", num_samples=5, seed=4, confirm_k=3,
                                  confirm_seeds=3, race=True, **data_args()), progress=False, on_note=notes.append)
    assert o.status == "finished" and o.selection is not None, (o.status, notes[-5:])
    s1, s2, s3 = o.selection.seeds
    by_name = {r.name: r for r in o.confirmation}
    bases = [r for r in o.confirmation if r.role == "baseline"]
    finals = [r for r in o.confirmation if r.role == "finalist"]
    assert len(finals) == 3 and len(bases) == 2
    assert all(sorted(r.runs) == [s1, s2, s3] for r in bases)
    best = max(r.runs[s1]["val_knn_top1"] for r in bases)
    for r in finals:
        if r.runs[s1]["val_knn_top1"] >= best:
            assert sorted(r.runs) == [s1, s2, s3] and r.name not in o.selection.raced_out
        else:
            assert sorted(r.runs) == [s1] and o.selection.raced_out[r.name].startswith("val ")
            assert any(n.startswith(f"race: finalist {r.name} stops after 1 seed(s)") for n in notes), notes
    assert not set(o.selection.raced_out) & set(o.selection.incomplete + o.selection.ranking)
    assert set(o.selection.ranking) == {n for n, r in by_name.items() if sorted(r.runs) == [s1, s2, s3]}
    # every select run is a trial of the search's confirmation experiments, one Tune experiment per round
    c = MlflowClient(tracking_uri=f"sqlite:///{search_home / 'mlflow.db'}")
    exp = c.get_experiment_by_name("recipe-search")
    select = [r for r in c.search_runs([exp.experiment_id], records.filter(search_id=o.search_id, kind=records.TRIAL))
              if r.data.tags.get("rs.phase") == "select"]
    assert len(select) == sum(len(r.runs) for r in o.confirmation)
    assert o.verdict is not None and o.verdict.selection.raced_out == o.selection.raced_out
    # the store's record of the served recipe says which finalists were raced out, and why
    from recipe_search.store import RecipeStore

    rec = RecipeStore(f"sqlite:///{search_home / 'mlflow.db'}").get(BACKBONE, dataset=data_args()["dataset"])
    if rec is not None and rec.provenance.get("search_id") == o.search_id:
        rows = {r["name"]: r for r in rec.provenance["confirmation"]}
        assert {n for n, r in rows.items() if "raced_out" in r} == set(o.selection.raced_out)
        assert rec.provenance["settings"]["race"] is True
