"""What ends a trial badly, and which of it Tune retries.

* **An application error** -- a bad recipe, the data, a CUDA out-of-memory of a recipe too big,
  anything ``trainer.train`` (or composing the recipe) raises -- is the trial's result: the
  trainable catches it and reports :func:`failure_report` (``failed=1``, the error's kind, its
  one-line message and traceback), then returns. Tune sees a trial that finished; the search's
  listeners see it as the failure it is (``events.TuneBridge`` forwards it as a trial error),
  and it is never run again: the same recipe would fail the same way.
* **A system failure** -- the trial's node lost, its worker process killed (an OOM kill by the
  kernel or Ray's memory monitor), the Tune storage unreachable while reporting -- escapes the
  trainable as an exception (:class:`SystemFailure` wraps errors raised by Tune's own calls).
  Tune retries it from the trial's last reported epoch checkpoint, on any node, up to
  ``--max-retries`` times (:data:`recipe_search.settings.DEFAULT_MAX_RETRIES`); past that it is recorded as failed.
"""

from __future__ import annotations

import contextlib
import re
import traceback

MAX_TEXT = 8000  # traceback characters kept in a failure report (the tail)

_EXC_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Diverged|Fault|Interrupt))(?::\s*(.*))?$")


class SystemFailure(RuntimeError):
    """A failure of the machinery around a trial (Tune's report, checkpoint restore), not of its
    recipe: it escapes the trainable, so Tune retries the trial."""


@contextlib.contextmanager
def system_calls():
    """Calls into Tune inside this block fail as :class:`SystemFailure` (retried)."""
    try:
        yield
    except SystemFailure:
        raise
    except Exception as e:  # noqa: BLE001 - classified, then re-raised
        raise SystemFailure(f"{type(e).__name__}: {e}") from e


def classify(text: str) -> tuple[str, str]:
    """``(kind, message)`` of an error's text (a traceback, or Tune's error file): kind is
    ``diverged``, ``oom`` or ``failed``; message is its last exception line."""
    message = ""
    for line in reversed([ln.strip() for ln in text.splitlines()]):
        m = _EXC_LINE.match(line)
        if m:
            message = f"{m.group(1)}: {m.group(2)}" if m.group(2) else m.group(1)
            break
    if not message:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        message = lines[-1] if lines else "trial failed (no error message recorded)"
    low = text.lower()
    if "TrialDiverged" in text:
        kind = "diverged"
    elif "outofmemoryerror" in low or "out of memory" in low or "running low on memory" in low:
        kind = "oom"
    else:
        kind = "failed"
    return kind, message[:2000]


def failure_report(exc: BaseException) -> dict:
    """The final result a trainable reports for an application error ``exc`` (never retried).
    ``objective`` is there for Tune's metric check; without ``epoch`` ASHA ignores it."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    kind, message = classify(text)
    return {"failed": 1.0, "final": 1.0, "objective": 0.0, "error_kind": kind, "error": message,
            "error_text": text[-MAX_TEXT:]}


def reported_failure(result: dict | None) -> tuple[str, str, str] | None:
    """``(kind, message, traceback)`` when ``result`` is a :func:`failure_report`, else None."""
    r = result or {}
    if not r.get("failed"):
        return None
    return (str(r.get("error_kind") or "failed"), str(r.get("error") or "trial failed"),
            str(r.get("error_text") or ""))
