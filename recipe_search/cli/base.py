"""What every ``recipe-search`` command shares: the typer app, the consoles, the exit codes, and
user errors as one red line with exit status 2 (:func:`user_errors`, :func:`fail`). The commands
register on :data:`app` in ``cli.py``, ``cli_run.py`` and ``cli_store.py``."""

from __future__ import annotations

import functools
import os
import sys

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Contrastive pretraining recipe search for lightweight timm backbones.")
# redirected output (a log file, CI) gets 120 columns, so the leaderboards do not fold
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _user_errors() -> tuple[type[BaseException], ...]:
    from trainer.errors import TrainerError

    from ..errors import SearchError
    from ..store import StoreUnavailable

    return (TrainerError, SearchError, StoreUnavailable)


def fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors(fn):
    """Turn user-facing exceptions into one red line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except _user_errors() as e:
            fail(str(e))

    return wrapper
