"""Live progress of a search: a rich table of trials, the best so far, the floor and an ETA.

A listener (see ``events.py``) rendered from Tune's own trial objects, so a
resumed search shows the trials finished before the interruption too. In a terminal
the table is redrawn in place; with stdout redirected (``nohup``, CI, a pipe) every
trial event is one plain line instead (start, each epoch, end, best so far, ETA). The
same lines always go to ``log_path`` (``<Tune storage>/<search id>/progress.log``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..baselines import JOB_KEY, baseline_name
from ..samplers import DEFAULT_LABEL

STYLE = {"running": "cyan", "done": "green", "pruned": "yellow", "failed": "red",
         "diverged": "red", "oom": "red", "pending": "dim"}
MAX_ROWS = 24


def trial_state(trial, errors: dict | None = None) -> str:
    status = trial.status
    if status == "TERMINATED":
        r = trial.last_result or {}
        if r.get("failed"):  # an application error the trainable reported (failures.py)
            return (errors or {}).get(trial.trial_id, str(r.get("error_kind") or "failed"))
        return ("diverged" if r.get("diverged") else "done") if r.get("final") else "pruned"
    if status == "ERROR":
        return (errors or {}).get(trial.trial_id, "failed")
    if status == "RUNNING":
        return "running"
    return "pending"


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 10 ** -digits or v == 0 else f"{v:.1e}"
    return str(v)


def duration(s: float | None) -> str:
    """Seconds as 1h02m / 3m05s / 42s (``?`` when unknown)."""
    if s is None or not math.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class ProgressView:
    """Listener that keeps a rich Live table of the search up to date."""

    def __init__(self, *, title: str, num_samples: int, max_epochs: int, max_concurrent: int,
                 ctx=None, console: Console | None = None, enabled: bool = True, floor: dict | None = None,
                 log_path: str | Path | None = None, max_retries: int | None = None):
        self.title = title
        self.num_samples = num_samples
        self.max_epochs = max_epochs
        self.max_concurrent = max(1, max_concurrent)
        self.ctx = ctx
        self.console = console or Console()
        self.enabled = enabled
        self.errors: dict[str, str] = {}
        self.started = time.monotonic()
        self._live: Live | None = None
        self._last = 0.0
        self._trials: list = []
        self.floor = floor or {}  # the untrained encoder's val metrics
        self.log_path = Path(log_path) if log_path is not None else None
        self._best_line = ""
        self.max_retries = max_retries
        self.retried: dict[str, str] = {}  # trial id -> why Tune retried it (its latest system failure)

    # -- listener events --------------------------------------------------------------
    def _line(self, text: str, trials=None) -> None:
        """One progress line: to the log file always, to the console when it is no terminal."""
        if trials is not None:
            self._trials = list(trials)
        eta = self.eta(self._trials)
        stamp = time.strftime("%H:%M:%S")
        line = (f"{stamp} {text} | {self._best_text()} | elapsed "
                f"{duration(time.monotonic() - self.started)} ETA {duration(eta) if eta is not None else '?'}")
        if self.log_path is not None:
            try:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_path, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
            except OSError:
                pass
        if self.enabled and not self.console.is_terminal:
            self.console.print(line, highlight=False, soft_wrap=True)

    def _best(self, trials):
        best = None
        for t in trials:
            r = t.last_result or {}
            if trial_state(t, self.errors) == "done" and r.get("objective") is not None:
                if best is None or r["objective"] > best[1]:
                    best = (t, r["objective"])
        return best

    def _best_text(self) -> str:
        best = self._best(self._trials)
        floor = self.floor.get("val_knn_top1")
        text = (f"best so far {best[0].trial_id} ({self._label(best[0])}) val kNN {best[1]:.3f}"
                if best else "best so far -")
        return text + (f" (untrained floor {floor:.3f})" if floor is not None else "")

    def on_setup(self) -> None:
        self.started = time.monotonic()
        self._line(f"{self.title}: started")
        if self.enabled and self._live is None:
            self._live = Live(self.render(), console=self.console, refresh_per_second=2,
                              transient=False, auto_refresh=self.console.is_terminal)
            self._live.start()

    def on_step(self, trials) -> None:
        self._update(trials, force=False)

    def on_trial_start(self, trial, trials) -> None:
        self._line(f"trial {trial.trial_id} ({self._label(trial)}) started", trials)
        self._update(trials)

    def on_trial_result(self, trial, result, trials) -> None:
        if not result.get("final"):
            self._line(f"trial {trial.trial_id} ({self._label(trial)}) epoch {int(result.get('epoch') or 0)}/"
                       f"{self.max_epochs} val kNN {_fmt(result.get('objective'))} loss {_fmt(result.get('loss'))}",
                       trials)
        self._update(trials)

    def on_trial_complete(self, trial, trials) -> None:
        r = trial.last_result or {}
        state = ("diverged" if r.get("diverged") else "done") if r.get("final") else "pruned"
        extra = f" test probe {_fmt(r.get('test_probe_top1'))}" if r.get("test_probe_top1") is not None else ""
        self._line(f"trial {trial.trial_id} ({self._label(trial)}) {state} at epoch {int(r.get('epoch') or 0)}: "
                   f"val kNN {_fmt(r.get('objective'))}{extra}", trials)
        self._update(trials)

    def on_trial_error(self, trial, trials) -> None:
        from .events import trial_error

        kind, message, _ = trial_error(trial)
        self.errors[trial.trial_id] = kind
        self._line(f"trial {trial.trial_id} ({self._label(trial)}) {kind}: {message[:200]}", trials)
        self._update(trials)

    def on_trial_recover(self, trial, trials) -> None:
        from .events import trial_error
        from .retries import retry_count

        kind, message, _ = trial_error(trial)
        self.retried[trial.trial_id] = message
        n = retry_count(trial, 1)
        of = f"/{self.max_retries}" if self.max_retries is not None else ""
        epoch = int((trial.last_result or {}).get("epoch") or 0)
        self._line(f"trial {trial.trial_id} ({self._label(trial)}) lost at epoch {epoch} ({message[:200]}): "
                   f"retry {n}{of} from its last checkpoint", trials)
        self._update(trials)

    def on_end(self, trials) -> None:
        self._update(trials)
        self.stop()

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.stop()
            self._live = None
            if not self.console.is_terminal:
                self.console.print()

    def _update(self, trials, force: bool = True) -> None:
        self._trials = list(trials)
        now = time.monotonic()
        if self._live is None or (not force and now - self._last < 0.5):
            return
        self._last = now
        if self.console.is_terminal:
            self._live.update(self.render())

    # -- rendering ----------------------------------------------------------------------
    def _label(self, trial) -> str:
        job = (trial.config or {}).get(JOB_KEY)
        if job is not None:
            return f"{job['name']} s{job['seed']}"
        return baseline_name(trial.config) or getattr(self.ctx, "sampler", DEFAULT_LABEL)

    def eta(self, trials) -> float | None:
        """Seconds left: epochs still to run x mean epoch time / concurrency."""
        epoch_times, trial_times = [], []
        left = 0.0
        for t in trials:
            r = t.last_result or {}
            state = trial_state(t, self.errors)
            ep = int(r.get("epoch") or 0)
            if ep and r.get("time_total_s"):
                epoch_times.append(float(r["time_total_s"]) / ep)
            if state == "done" and r.get("time_total_s"):
                trial_times.append(float(r["time_total_s"]))
            if state in ("running", "pending"):
                left += max(0, self.max_epochs - ep)
        left += max(0, self.num_samples - len(trials)) * self.max_epochs
        if not epoch_times:
            return None
        if left == 0:
            return 0.0
        return left * (sum(epoch_times) / len(epoch_times)) / self.max_concurrent

    def render(self):
        trials = self._trials
        counts = {k: 0 for k in ("running", "done", "pruned", "failed", "pending")}
        for t in trials:
            state = trial_state(t, self.errors)
            counts["failed" if state in ("diverged", "oom") else state] += 1
        counts["pending"] += max(0, self.num_samples - len(trials))

        table = Table(title=self.title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                      collapse_padding=True)
        for col, kw in (("trial", {"no_wrap": True}), ("kind", {"no_wrap": True}),
                        ("state", {"no_wrap": True}), ("epoch", {"justify": "right", "no_wrap": True}),
                        ("val kNN", {"justify": "right"}), ("test probe", {"justify": "right"}),
                        ("lr", {"justify": "right"}), ("eps", {"justify": "right"}),
                        ("time", {"justify": "right", "no_wrap": True})):
            table.add_column(col, **kw)
        rows = trials[-MAX_ROWS:]
        if len(trials) > len(rows):
            table.add_row(f"... {len(trials) - len(rows)} earlier", *[""] * 8)
        for t in rows:
            r = t.last_result or {}
            state = trial_state(t, self.errors)
            c = t.config or {}
            rec = None
            if self.ctx is not None:
                try:
                    rec = self.ctx.recipe_for(c)[0]
                except Exception:  # noqa: BLE001 - an invalid point shows as failed anyway
                    rec = None
            ep = r.get("epoch")
            table.add_row(
                t.trial_id, self._label(t), Text(state, style=STYLE.get(state, "")),
                f"{int(ep)}/{self.max_epochs}" if ep else f"0/{self.max_epochs}",
                _fmt(r.get("objective")), _fmt(r.get("test_probe_top1") if r.get("final") else None),
                _fmt(rec.lr if rec else c.get("lr")), _fmt(rec.smoothing if rec else c.get("smoothing")),
                duration(r.get("time_total_s")),
            )
        elapsed = time.monotonic() - self.started
        eta = self.eta(trials)
        summary = Text.assemble(
            ("running ", "cyan"), str(counts["running"]), ("  done ", "green"), str(counts["done"]),
            ("  pruned ", "yellow"), str(counts["pruned"]), ("  failed ", "red"), str(counts["failed"]),
            ("  pending ", "dim"), str(counts["pending"]),
            f"   elapsed {duration(elapsed)}   ETA {duration(eta) if eta is not None else '?'}",
        )
        if self.retried:  # trials Tune retried after a system failure (node lost, worker killed)
            summary.append(f"   retried {len(self.retried)} (lost node or worker)", style="magenta")
        if self.floor.get("val_knn_top1") is not None:
            table.add_row("floor", "untrained", "", "", _fmt(self.floor["val_knn_top1"]), "", "", "", "",
                          style="dim")
        return Group(table, summary, Text(self._best_text()))
