"""Drop the weights from the checkpoints of trials that will never train again.

Tune keeps each trial's latest reported checkpoint in its storage (``--storage-path``, shared
by all nodes on a cluster). A trial that ASHA stopped, or that failed, is never resumed
(``--resume`` restarts neither), yet its last epoch checkpoint holds the whole trainer state:
about 90 MB for MobileNetV3-L with a 2048-d head, so 1,000 pruned trials would leave ~90 GB.
:class:`CheckpointJanitor` is an ``events`` listener that deletes those weight files when the
trial ends, keeping the small JSON files (history, recipe). Finished trials report a
checkpoint without weights in the first place (``trial.FINAL_FILES``). Tune keeps a trial's last
few checkpoints (``stages.KEEP_CHECKPOINTS``, for a safe resume after SIGKILL): once the trial
ends, the older ones lose their weights too.
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
        latest = not r.get("final") or r.get("diverged")  # stopped by ASHA before its last epoch, or diverged
        self._strip(trial, latest=bool(latest))

    def on_trial_error(self, trial, trials) -> None:
        self._strip(trial, latest=True)

    def _strip(self, trial, *, latest: bool) -> None:
        """Delete the weight files of the trial's older checkpoints, and of its latest if ``latest``."""
        ckpt = getattr(trial, "checkpoint", None)
        if ckpt is None:
            return
        fs, path = ckpt.filesystem, ckpt.path.rstrip("/")
        dirs = [path] if latest else []
        try:
            from pyarrow.fs import FileSelector, FileType

            parent = path.rsplit("/", 1)[0]
            dirs += [i.path for i in fs.get_file_info(FileSelector(parent))
                     if i.type == FileType.Directory and i.base_name.startswith("checkpoint_")
                     and i.path.rstrip("/") != path]
        except Exception as e:  # noqa: BLE001 - bookkeeping never fails a search
            log.warning("could not list the checkpoints beside %s: %s", path, e)
        for d in dirs:
            for name in WEIGHT_FILES:
                try:
                    fs.delete_file(f"{d}/{name}")
                    self.freed_files += 1
                except (FileNotFoundError, OSError):
                    pass
                except Exception as e:  # noqa: BLE001 - bookkeeping never fails a search
                    log.warning("could not delete %s/%s: %s", d, name, e)
