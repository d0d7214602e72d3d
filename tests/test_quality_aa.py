"""bench/quality_aa.py: the A/A study replays the product's confirmation rules from its rows."""

from bench.quality_aa import TWIN, repeat_seeds, search_seed, verdicts
from recipe_search.verdict import BETTER, NO_LIFT

LOOKS = (3, 5, 8)
BASE = "sinfonce-light"


def _row(rep, phase, name, seed, **metrics):
    return {"repeat": rep, "phase": phase, "name": name, "pair_seed": seed, "status": "completed",
            "metrics": metrics}


def _select(rep, twin_val, base_val):
    sel, _ = repeat_seeds(rep, 3, LOOKS)
    return ([_row(rep, "select", TWIN, s, val_knn_top1=v) for s, v in zip(sel, twin_val)]
            + [_row(rep, "select", BASE, s, val_knn_top1=v) for s, v in zip(sel, base_val)])


def _report(rep, n, twin, base, floor):
    _, rs = repeat_seeds(rep, 3, LOOKS)
    rows = []
    for i, s in enumerate(rs[:n]):
        rows += [_row(rep, "report", TWIN, s, test_probe_top1=twin[i]), _row(rep, "report", BASE, s, test_probe_top1=base[i]),
                 _row(rep, "report", "floor", s, test_probe_top1=floor[i])]
    return rows


def test_repeats_use_disjoint_seeds():
    seen = set()
    for rep in range(3):
        sel, rs = repeat_seeds(rep, 3, LOOKS)
        assert search_seed(rep) not in sel + rs and not seen & set(sel + rs) and not set(sel) & set(rs)
        seen |= set(sel + rs) | {search_seed(rep)}


def test_a_repeat_asks_for_its_select_runs_first_then_the_first_look():
    (st,) = verdicts([], 1, 3, LOOKS, 10_000)
    assert st["verdict"] is None and sorted({(p, n) for p, n, _ in st["need"]}) == [("select", BASE), ("select", TWIN)]
    (st,) = verdicts(_select(0, [.30, .31, .29], [.28, .29, .27]), 1, 3, LOOKS, 10_000)
    assert st["selection"].winner == TWIN and st["selection"].reference == BASE
    _, rs = repeat_seeds(0, 3, LOOKS)
    assert sorted(st["need"]) == sorted((p, n, s) for p, n in (("report", TWIN), ("report", BASE), ("report", "floor"))
                                         for s in rs[:3])


def test_equal_recipes_end_without_a_lift_and_a_clear_lift_is_declared():
    rows = _select(0, [.30, .31, .29], [.28, .29, .27])
    same = rows + _report(0, 3, [.24, .25, .23], [.25, .23, .24], [.15, .16, .14])
    (st,) = verdicts(same, 1, 3, LOOKS, 10_000)
    _, rs = repeat_seeds(0, 3, LOOKS)  # undecided at 3 seeds: the look at 5 asks for 2 more of each
    assert st["verdict"].verdict == NO_LIFT and st["verdict"].stop == "more_seeds"
    assert sorted(st["need"]) == sorted(("report", n, s) for n in (TWIN, BASE, "floor") for s in rs[3:5])
    clear = rows + _report(0, 3, [.45, .46, .44], [.25, .24, .255], [.15, .16, .14])
    (st,) = verdicts(clear, 1, 3, LOOKS, 10_000)
    assert st["verdict"].verdict == BETTER and st["need"] == []


def test_a_baseline_that_wins_selection_is_reported_alone():
    rows = _select(0, [.20, .21, .19], [.28, .29, .27])
    (st,) = verdicts(rows, 1, 3, LOOKS, 10_000)
    assert st["selection"].winner == BASE and {n for _, n, _ in st["need"]} == {BASE, "floor"}
