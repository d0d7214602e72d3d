"""One declaration of a search's settings (recipe_search/settings.py): the `run` command's
options, the job's command line and the checks all come from it and agree."""

from __future__ import annotations

import dataclasses
import re

import pytest
import typer

from recipe_search.cli import app
from recipe_search.errors import SearchError
from recipe_search.settings import SearchSettings, from_cli, options
from settings_support import parse_run  # tests/ is on sys.path


def test_every_setting_is_a_run_option_and_nothing_else_is():
    command = typer.main.get_command(app).commands["run"]
    names = {p.name for p in command.params}
    settings = {f.name for f, opt in options() if opt.cli}
    assert settings <= names
    assert names - settings == {"backbone", "resume", "progress", "storage_path"}


@pytest.mark.parametrize("settings", [
    SearchSettings(backbone="mobilenetv3_small_100"),
    SearchSettings(backbone="efficientnet_b0", budget="cpu", num_samples=12, seed=7, report_looks=[3, 5, 8],
                   early_stopping=False, reuse_confirmations=False, force=True, download=True, yes=True,
                   time_budget=90.5, gpus_per_trial=0.25, data="/data/c10.tar.gz", sampler="random",
                   confirm_seeds=4, checkpoint_every=0, study_storage="sqlite:////tmp/o.db", race=True),
])
def test_argv_round_trips_through_the_run_command(settings):
    """SearchSettings -> to_argv() -> the real `run` parser -> from_cli() gives the same settings."""
    values = parse_run(settings.to_argv())
    assert values["backbone"] == [settings.backbone]
    assert from_cli(settings.backbone, values) == settings


def test_to_argv_leaves_defaults_out_and_writes_switches():
    s = SearchSettings(backbone="b", early_stopping=False, force=True)
    assert s.to_argv() == ["--backbone", "b", "--force", "--no-early-stopping"]


@pytest.mark.parametrize("field, value, message", [
    ("num_samples", 0, "--num-samples must be >= 1, got 0"),
    ("confirm_seeds", 1, "--confirm-seeds must be >= 2, got 1"),
    ("time_budget", 0.0, "--time-budget must be > 0, got 0.0"),
    ("cpus_per_trial", float("nan"), "--cpus-per-trial must be a finite number"),
    ("max_epochs", 2.5, "--max-epochs must be an integer, got 2.5"),
    ("seed", True, "--seed must be an integer, got True"),
    ("gpus_per_trial", -0.5, "--gpus-per-trial must be >= 0"),
])
def test_check_names_the_flag_and_the_bound(field, value, message):
    s = dataclasses.replace(SearchSettings(backbone="b"), **{field: value})
    with pytest.raises(SearchError, match=re.escape(message)):
        s.check()


def test_settings_saved_by_another_version_still_load():
    saved = {**SearchSettings(backbone="b", seed=3).to_dict(), "retired_option": 1}
    assert SearchSettings.from_dict(saved) == SearchSettings(backbone="b", seed=3)
