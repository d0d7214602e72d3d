"""The project's one file-lock helper: an exclusive advisory lock (``flock``) on a file.

Used by the trainer for a distillation teacher pretrained once into the cache
(``teacher.pretrain_teacher``, blocking), and by recipe_search for one process per search
(``recipe_search.state.search_lock``, non-blocking, the holder's pid in the file) and for
serialising promotions into a SQLite recipe store (``recipe_search.store``, blocking).
It lives in the trainer because the trainer imports nothing of recipe_search. The OS releases the lock when its holder exits, even by a crash, so a stale
lock file never blocks anyone. Without ``fcntl`` (not POSIX) the block runs unlocked.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


class LockHeld(Exception):
    """``file_lock(..., wait=False)`` found the lock taken; ``holder`` is the pid written by
    the holder (``record_pid=True``), or ``"?"``."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is locked by pid {holder}")
        self.path, self.holder = path, holder


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, wait: bool = True, record_pid: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created with its parent directories) for the block.

    ``wait=False`` raises :class:`LockHeld` instead of waiting for another holder;
    ``record_pid`` writes this process's pid into the file while it holds the lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.seek(0)
            raise LockHeld(path, fh.read().strip() or "?") from None
        if record_pid:
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
