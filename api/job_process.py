"""A search job's process and what its search has done: the command prefix, liveness,
Ctrl-C for its process group, its last error line, and its progress read from the search's
state file and MLflow runs."""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def run_prefix() -> list[str]:
    exe = shutil.which("recipe-search") or str(Path(sys.executable).with_name("recipe-search"))
    if Path(exe).exists():
        return [exe, "run"]
    return [sys.executable, "-m", "recipe_search", "run"]


def search_dir(search_id: str) -> Path:
    from recipe_search.state import storage_dir

    return storage_dir() / search_id


def read_search_meta(search_id: str) -> dict | None:
    from recipe_search.state import META_FILE, read_meta

    return read_meta(search_dir(search_id) / META_FILE)


def alive(pid: int | None, marker: str | None = None) -> bool:
    """Whether ``pid`` runs (and, given ``marker``, its command line holds it)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return marker is None
    if marker is None:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/stat", "rb") as fh:
            if fh.read().rsplit(b")", 1)[-1].split()[0] == b"Z":  # a zombie: it has exited
                return False
    except OSError:
        return True  # no /proc: trust kill(0)
    return marker in cmdline


def interrupt(pid: int | None) -> bool:
    """Ctrl-C for the search's process group (its own session: pgid == pid)."""
    if not pid:
        return False
    try:
        os.killpg(pid, signal.SIGINT)
        return True
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGINT)
            return True
        except (ProcessLookupError, PermissionError):
            return False


def last_error(log: Path) -> str | None:
    """The last ``error:`` line (or last line) of a search's log."""
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    for ln in reversed(lines):
        if ln.startswith("error:"):
            return ln[:500]
    return lines[-1][:500] if lines else None


# --------------------------------------------------------------------------- progress


def search_progress(search_id: str, tracking_uri: str) -> dict:
    """What a search has done, from its state file and its MLflow runs (best effort)."""
    meta = read_search_meta(search_id) or {}
    out: dict[str, Any] = {"stage": meta.get("stage"), "status": meta.get("status"),
                           "parent_run_id": meta.get("parent_run_id"), "experiment_id": None,
                           "floor_val_knn_top1": (meta.get("floor_val") or {}).get("val_knn_top1"),
                           "trials": {}, "confirmation": {}, "best": None, "verdict": None, "verdict_line": None,
                           "note": None}
    if not meta:
        return out
    try:
        from recipe_search.verdict.promote import summarize
        from recipe_search.config import sqlite_path
        from recipe_search.tracking import Tracker

        db = sqlite_path(tracking_uri)
        if db is not None and not db.exists():
            return out
        tracker = Tracker(tracking_uri, meta.get("experiment") or "recipe-search")
        exp = tracker.client.get_experiment_by_name(tracker.experiment)
        if exp is None or exp.lifecycle_stage != "active":
            return out  # never created (nor restored) by a read
        out["experiment_id"] = exp.experiment_id
        trials = summarize(tracker, search_id)
        parent = tracker.find_parent(search_id)
    except Exception as e:  # noqa: BLE001 - progress is informative; the store may be busy
        out["note"] = f"MLflow not readable right now: {type(e).__name__}"
        return out
    from recipe_search import records

    if parent is not None:
        search = records.Search.from_run(parent)
        out["verdict"], out["verdict_line"] = search.verdict, search.verdict_line
    best = None
    for t in trials:
        status = {"completed": "done", "diverged": "failed", "oom": "failed"}.get(t.status, t.status)
        if t.run_status == "RUNNING":
            status = "running"
        bucket = out["confirmation"] if t.stage == records.Confirmation.STAGE else out["trials"]
        bucket[status] = bucket.get(status, 0) + 1
        if (t.stage != records.Confirmation.STAGE and status == "done" and t.objective is not None
                and (best is None or t.objective > best["val_knn_top1"])):
            best = {"trial_id": t.trial_id, "run_id": t.run_id,
                    "kind": f"baseline {t.baseline}" if t.baseline else t.label, "val_knn_top1": t.objective}
    out["best"] = best
    return out
