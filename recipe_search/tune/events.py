"""One Ray Tune callback that forwards trial events to listeners registered in this process.

Tune pickles its callbacks with the experiment and, on ``Tuner.restore``, runs the
unpickled copies. :class:`TuneBridge` therefore holds only a search id; the live
listeners (MLflow logger, progress table) are looked up in a per-process registry,
so a resumed search talks to freshly built listeners, never stale copies.

Listeners implement any of ``on_trial_start(trial, trials)``,
``on_trial_result(trial, result, trials)``, ``on_trial_complete(trial, trials)``,
``on_trial_error(trial, trials)`` (also for a trial that reported an application error,
``failures.py``), ``on_trial_recover(trial, trials)`` (a system failure, retried from the
trial's last checkpoint), ``on_step(trials)``, ``on_setup()`` and ``on_end(trials)``.
A listener that raises is logged and skipped: bookkeeping never kills a search.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from ray.tune import Callback

from .failures import classify, reported_failure

log = logging.getLogger(__name__)

_LISTENERS: dict[str, list] = {}
INTERRUPTED = threading.Event()


def register(search_id: str, listeners: list) -> None:
    _LISTENERS[search_id] = list(listeners)


def unregister(search_id: str) -> None:
    _LISTENERS.pop(search_id, None)


def listeners(search_id: str) -> list:
    """The listeners registered under ``search_id`` in this process (e.g. the searcher asks the
    MLflow logger for a trial's run id)."""
    return list(_LISTENERS.get(search_id, ()))


class TuneBridge(Callback):
    def __init__(self, search_id: str):
        self.search_id = search_id

    def _emit(self, name: str, *args) -> None:
        for listener in _LISTENERS.get(self.search_id, ()):
            fn = getattr(listener, name, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - never let logging end a search
                log.exception("recipe-search listener %s.%s failed", type(listener).__name__, name)

    def setup(self, **info) -> None:
        _wrap_sigint()
        self._emit("on_setup")

    def on_step_end(self, iteration, trials, **info) -> None:
        self._emit("on_step", trials)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._emit("on_trial_start", trial, trials)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._emit("on_trial_result", trial, result, trials)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        # an application error the trainable reported (failures.py) ends the trial as a failure
        failed = reported_failure(trial.last_result) is not None
        self._emit("on_trial_error" if failed else "on_trial_complete", trial, trials)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._emit("on_trial_recover", trial, trials)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._emit("on_trial_error", trial, trials)

    def on_experiment_end(self, trials, **info) -> None:
        self._emit("on_end", trials)


def _wrap_sigint() -> None:
    """Note Ctrl-C in :data:`INTERRUPTED`, then let Tune's own handler stop the run cleanly."""
    if threading.current_thread() is not threading.main_thread():
        return
    tune_handler = signal.getsignal(signal.SIGINT)
    if getattr(tune_handler, "_recipe_search", False) or not callable(tune_handler):
        return

    def handler(sig, frame):
        INTERRUPTED.set()
        tune_handler(sig, frame)

    handler._recipe_search = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, handler)


# --------------------------------------------------------------------------- trial errors


def trial_error(trial) -> tuple[str, str, str]:
    """``(kind, message, traceback_text)`` of a failed trial; kind is ``diverged``, ``oom`` or
    ``failed``: from its failure report (an application error, ``failures.py``), else from
    Tune's error file (a system failure; after a retry, the latest failure's)."""
    reported = reported_failure(getattr(trial, "last_result", None))
    if reported is not None:
        return reported
    text = ""
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            text = ""
    latest = text.rsplit("Failure # ", 1)[-1] if "Failure # " in text else text  # Tune appends each one
    kind, message = classify(latest)
    return kind, message, text
