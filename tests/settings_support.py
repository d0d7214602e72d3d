"""Parse a `recipe-search run` command line with the real command (nothing runs)."""

from __future__ import annotations

import typer

from recipe_search.cli import app
from recipe_search.settings import SearchSettings, from_cli


def parse_run(argv: list[str]) -> dict:
    """The `run` option values of ``argv``, parsed by the real command."""
    command = typer.main.get_command(app).commands["run"]
    return dict(command.make_context("run", list(argv)).params)


def run_settings(argv: list[str]) -> tuple[SearchSettings, bool]:
    """(settings, --resume) of a one-backbone `run` command line."""
    values = parse_run(argv)
    (backbone,) = values["backbone"]
    return from_cli(backbone, values), values["resume"]
