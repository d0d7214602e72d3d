"""Issue 24: the first-wave rule of ``recipe_search/tune/failfast.py`` (no Ray running; the searches
that stop on it are in tests/test_search.py and tests/test_cli.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("ray")


def _trial(tmp_path: Path, trial_id: str, error: str | None):
    path = None
    if error is not None:
        path = tmp_path / f"{trial_id}.txt"
        path.write_text(f"Traceback (most recent call last):\n  File \"x.py\", line 1\n{error}\n")
    return SimpleNamespace(trial_id=trial_id, error_file=str(path) if path else None)


@pytest.mark.parametrize("ends, trips", [
    ([("a_1", "DataError: no such file"), ("a_2", "DataError: no such file")], True),
    ([("a_1", "InjectedFault: fault in trial a_1"), ("a_2", "InjectedFault: fault in trial a_2")], True),
    ([("a_1", "DataError: no such file"), ("a_2", None), ("a_3", "DataError: no such file")], False),
    ([("a_1", "DataError: no such file"), ("a_2", "RuntimeError: CUDA out of memory")], False),
    ([("a_1", "DataError: x")], False),  # one failure alone never stops a search
])
def test_the_first_wave_trips_only_when_all_failed_alike(tmp_path, ends, trips):
    from recipe_search.tune.failfast import FirstWave

    wave = FirstWave(2)
    for trial_id, error in ends:
        trial = _trial(tmp_path, trial_id, error)
        if error is None:
            wave.on_trial_complete(trial, [])
        else:
            wave.on_trial_error(trial, [])
    assert (wave.error is not None) == trips, wave.errors
    if trips:
        assert wave.line().startswith("all 2 trials of the first wave failed with the same error: ")
        assert "a_1" not in wave.error and "\n" not in wave.line()
    assert FirstWave(1).size == 2
