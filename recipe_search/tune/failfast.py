"""Fail fast: a search whose first wave of trials all fail with the same error stops there.

A wrong data path, a missing package on the workers or a backbone that cannot be built fails
every trial the same way; running the rest of the trials, then confirmation, only repeats it.
:class:`FirstWave` (a listener of ``events.py``) watches the first ``size`` trials to end
(``size``: the trials running at once, at least :data:`MIN_WAVE`): when each of them errored
with the same one-line error (its trial id masked), it trips, and :class:`StopOnFirstWave`
(Tune's ``RunConfig.stop``) stops the experiment at Tune's next step. Any trial of the wave
that ends otherwise (completed, stopped by ASHA, diverged), or errors differently, disarms
it for the rest of the search: failures that differ go on being recorded as today.
"""

from __future__ import annotations

from ray import tune

from . import events

MIN_WAVE = 2  # one failed trial alone never stops a search


class FirstWave:
    """Listener: trips (``error`` set) when the first ``size`` trials to end all errored alike."""

    def __init__(self, size: int):
        self.size = max(MIN_WAVE, int(size))
        self.errors: list[str | None] = []  # per ended trial: its error, None when it did not error
        self.error: str | None = None

    def on_trial_complete(self, trial, trials) -> None:
        self._ended(None)

    def on_trial_error(self, trial, trials) -> None:
        kind, message, _ = events.trial_error(trial)
        self._ended(message.replace(trial.trial_id, "<trial>").splitlines()[0] if message else kind)

    def _ended(self, error: str | None) -> None:
        if len(self.errors) >= self.size:
            return  # decided
        self.errors.append(error)
        if len(self.errors) == self.size and error is not None and len(set(self.errors)) == 1:
            self.error = error

    def line(self) -> str:
        return f"all {self.size} trials of the first wave failed with the same error: {self.error}"


class StopOnFirstWave(tune.Stopper):
    """Stops the experiment once the :class:`FirstWave` registered under ``key`` has tripped
    (holds only the key: Tune pickles its stopper with the experiment, as with ``TuneBridge``)."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return any(isinstance(w, FirstWave) and w.error is not None for w in events.listeners(self.key))
