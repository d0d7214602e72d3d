"""MLflow records of the trials Tune retried after a system failure (``failures.py``).

:class:`RetryRecorder` is an ``events`` listener. When Tune retries a trial (its node lost, its
worker killed), the trial keeps its MLflow child run (``TrialLogger`` holds it by trial id, and
logs only the epochs beyond the last one logged, so the retried run continues the same curve);
the recorder tags that run and the search's parent run with why and how often:

* child run: records.TAG_RETRIES (how many times so far), records.TAG_RETRY_REASON (the latest failure's
  one line), records.TAG_STATUS retrying until the trial ends;
* parent run: records.RETRY_PREFIX + trial id = ``"<n> (<stage>, lost after epoch <e>): <reason>"``
  and the metrics ``trials_retried`` (trials retried at least once, all stages) and
  ``trial_retries`` (retries in all), re-counted from those tags, so they hold across stages
  and ``--resume``.
"""

from __future__ import annotations

from . import events
from ..records import RETRY_PREFIX as PARENT_PREFIX, TAG_RETRIES, TAG_RETRY_REASON, TAG_STATUS


def retry_count(trial, fallback: int) -> int:
    """Tune's failure count of ``trial`` (``fallback`` when it keeps none)."""
    meta = getattr(trial, "run_metadata", None)
    n = getattr(meta, "num_failures", None)
    return int(n) if isinstance(n, int) and n > 0 else fallback


def parent_counts(tags: dict) -> tuple[int, int]:
    """``(trials retried, retries in all)`` from a parent run's records.RETRY_PREFIX tags."""
    counts = []
    for key, value in tags.items():
        if key.startswith(PARENT_PREFIX):
            head = str(value).split(" ", 1)[0]
            counts.append(int(head) if head.isdigit() else 1)
    return len(counts), sum(counts)


class RetryRecorder:
    def __init__(self, logger, *, stage: str):
        self.logger = logger  # trial_logger.TrialLogger of the same stage: the trials' runs
        self.stage = stage  # search | select | report-<n> ...
        self.retries: dict[str, int] = {}

    def on_trial_recover(self, trial, trials) -> None:
        tracker = self.logger.tracker
        kind, message, _ = events.trial_error(trial)
        n = retry_count(trial, self.retries.get(trial.trial_id, 0) + 1)
        self.retries[trial.trial_id] = n
        run_id = self.logger.run_for(trial)
        epoch = self.logger.last_step.get(trial.trial_id, 0)
        reason = message.splitlines()[0][:300] if message else kind
        tracker.set_tags(run_id, {TAG_RETRIES: str(n), TAG_RETRY_REASON: reason, TAG_STATUS: "retrying"})
        parent = self.logger.parent_run_id
        tracker.set_tags(parent, {f"{PARENT_PREFIX}{trial.trial_id}":
                                  f"{n} ({self.stage}, lost after epoch {epoch}): {reason}"})
        retried, total = parent_counts(tracker.client.get_run(parent).data.tags)
        tracker.log_metrics(parent, {"trials_retried": retried, "trial_retries": total})
