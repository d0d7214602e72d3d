"""``recipe-search run``: its signature is built from :mod:`recipe_search.settings` (every search
option declared once there) plus the command's own options (backbones, resume, progress, storage
path); Ctrl-C exits 130 after printing how to resume."""

from __future__ import annotations

import os
import shlex
from typing import List, Optional

import typer

from .base import EXIT_INTERRUPTED, EXIT_USER_ERROR, app, console, err_console, fail, user_errors
from .outcome_view import print_outcome


def _resume_command(backbones: list[str], experiment: str, storage_path: str | None = None) -> str:
    parts = ["recipe-search", "run"]
    for b in backbones:
        parts += ["--backbone", b]
    if experiment != "recipe-search":
        parts += ["--experiment", experiment]
    if storage_path:
        parts += ["--storage-path", storage_path]
    parts.append("--resume")
    return " ".join(shlex.quote(p) for p in parts)


def run(backbone: List[str], resume: bool, progress: bool, storage_path: Optional[str], **options) -> None:
    """Search a pretraining recipe per backbone, confirm the finalists on fresh seeds, promote the winner."""
    from .. import config
    from ..plan import plan, prepare_data
    from ..tune.runtime import ray_session
    from ..search import run_search
    from ..settings import from_cli

    if storage_path is not None:
        os.environ[config.STORAGE_ENV] = str(config.storage_path(storage_path))  # rejects URIs first

    if options["search_id"] is not None and len(backbone) > 1:
        fail("--search-id names one search: give a single --backbone with it")
    all_settings = [from_cli(b, options) for b in backbone]
    experiment = options["experiment"]
    if not resume:
        for s in all_settings:  # every user error before anything starts
            prepare_data(plan(s))
    remaining = list(backbone)
    failed = False
    try:
        with ray_session(options["ray_address"], options["num_cpus"]):
            for s in all_settings:
                console.rule(f"[bold]{s.backbone}[/]")
                outcome = run_search(s, resume=resume, console=console, progress=progress,
                                     on_note=lambda m: console.print(f"[yellow]note:[/] {m}"))
                if outcome.status == "interrupted":
                    print_outcome(outcome, console, err_console)
                    console.print(f"[yellow]interrupted.[/] resume with:\n  "
                                  f"[bold]{_resume_command(remaining, experiment, storage_path)}[/]", soft_wrap=True)
                    raise typer.Exit(EXIT_INTERRUPTED)
                print_outcome(outcome, console, err_console)
                failed |= outcome.promotion is None and outcome.verdict is not None and \
                    outcome.verdict.verdict != "below_floor"  # the store refused a promotion
                remaining.remove(s.backbone)
    except KeyboardInterrupt:
        err_console.print(f"\n[yellow]interrupted.[/] resume with:\n  "
                          f"[bold]{_resume_command(remaining, experiment, storage_path)}[/]", soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    if failed:
        raise typer.Exit(EXIT_USER_ERROR)


def _run_command() -> None:
    """Register ``run``: its own options (backbones, resume, progress, storage path), then one
    option per setting of :mod:`recipe_search.settings` (declared there, once)."""
    import inspect

    from ..settings import cli_parameters

    kw = inspect.Parameter.KEYWORD_ONLY
    own = [
        inspect.Parameter("backbone", kw, annotation=List[str], default=typer.Option(
            ..., "--backbone", "-b", help="timm backbone; repeat for several")),
        inspect.Parameter("resume", kw, annotation=bool, default=typer.Option(
            False, "--resume", help="continue the interrupted search of each backbone")),
        inspect.Parameter("progress", kw, annotation=bool, default=typer.Option(
            True, "--progress/--no-progress", help="live trial table")),
        inspect.Parameter("storage_path", kw, annotation=Optional[str], default=typer.Option(
            None, "--storage-path", help="Ray Tune's state and trial checkpoints (default "
                                         "$RECIPE_SEARCH_HOME/ray); on a multi-node cluster a shared "
                                         "filesystem path, the same on every node")),
    ]
    params = own + cli_parameters()

    def command(**kwargs) -> None:
        own_names = {p.name for p in own}
        run(**{k: kwargs[k] for k in own_names}, **{k: v for k, v in kwargs.items() if k not in own_names})

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = run.__doc__
    app.command("run")(user_errors(command))


_run_command()
