"""Drop the weights from the checkpoints of trials that will never train again.

Tune keeps each trial's latest reported checkpoint in its storage (``--storage-path``, shared
by all nodes on a cluster). A trial that ASHA stopped, or that failed, is never resumed
(``--resume`` restarts neither), yet its last epoch checkpoint holds the whole trainer state:
about 90 MB for MobileNetV3-L with a 2048-d head, so 1,000 pruned trials would leave ~90 GB.
:class:`CheckpointJanitor` is an ``events`` listener that deletes those weight files when the
trial ends, keeping the small JSON files (history, recipe). Finished trials report a
checkpoint without weights in the first place (``trial.FINAL_FILES``).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

WEIGHT_FILES = ("checkpoint.pt", "encoder.pt")


class CheckpointJanitor:
    def __init__(self) -> None:
        self.freed_files = 0

    def on_trial_complete(self, trial, trials) -> None:
        r = trial.last_result or {}
        if not r.get("final") or r.get("diverged"):  # stopped by ASHA before its last epoch, or diverged
            self._strip(trial)

    def on_trial_error(self, trial, trials) -> None:
        self._strip(trial)

    def _strip(self, trial) -> None:
        ckpt = getattr(trial, "checkpoint", None)
        if ckpt is None:
            return
        for name in WEIGHT_FILES:
            try:
                ckpt.filesystem.delete_file(f"{ckpt.path}/{name}")
                self.freed_files += 1
            except (FileNotFoundError, OSError):
                pass
            except Exception as e:  # noqa: BLE001 - bookkeeping never fails a search
                log.warning("could not delete %s/%s: %s", ckpt.path, name, e)
