"""Issue 24: the paths a user gives are made absolute once, on the driver (``recipe_search/paths.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recipe_search.paths import absolute_environment, absolute_uri, resolve_settings
from recipe_search.plan import SearchSettings


@pytest.mark.parametrize("uri, expected", [
    ("sqlite:///rel.db", "sqlite:///{cwd}/rel.db"),
    ("sqlite:///sub/rel.db?timeout=5", "sqlite:///{cwd}/sub/rel.db?timeout=5"),
    ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
    ("sqlite://", "sqlite://"),
    ("sqlite:///:memory:", "sqlite:///:memory:"),
    ("file:mlruns", "file:{cwd}/mlruns"),
    ("file:///abs/mlruns", "file:///abs/mlruns"),
    ("./mlruns", "{cwd}/mlruns"),
    ("http://mlflow:5000", "http://mlflow:5000"),
    ("postgresql://u:p@db:5432/optuna", "postgresql://u:p@db:5432/optuna"),
    ("databricks", "databricks"),
])
def test_file_uris_become_absolute(tmp_path, monkeypatch, uri, expected):
    monkeypatch.chdir(tmp_path)
    assert absolute_uri(uri) == expected.format(cwd=os.getcwd())


def test_settings_paths_are_resolved_against_the_drivers_directory(tmp_path, monkeypatch):
    (tmp_path / "data.tar.gz").write_bytes(b"")
    (tmp_path / "space.yaml").write_text("{}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECIPE_SEARCH_DATA", "data.tar.gz")
    s = SearchSettings(backbone="resnet18", space="space.yaml", tracking_uri="sqlite:///m.db",
                       study_storage="sqlite:///o.db")
    resolve_settings(s)
    cwd = os.getcwd()
    assert s.data == f"{cwd}/data.tar.gz" and s.space == f"{cwd}/space.yaml"
    assert (s.tracking_uri, s.study_storage) == (f"sqlite:///{cwd}/m.db", f"sqlite:///{cwd}/o.db")
    named = SearchSettings(backbone="resnet18", space="default", data="sub/../x")
    resolve_settings(named)
    assert named.space == "default" and named.data == f"{cwd}/x"  # a bare space name stays a name
    synthetic = SearchSettings(backbone="resnet18", dataset="synthetic")
    resolve_settings(synthetic)
    assert synthetic.data is None  # the synthetic set reads no data root


def test_a_missing_data_variable_names_the_variable(tmp_path, monkeypatch):
    from trainer.errors import DataError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECIPE_SEARCH_DATA", "../nowhere/cifar10-jpeg.tar.gz")
    with pytest.raises(DataError) as e:
        resolve_settings(SearchSettings(backbone="resnet18"))
    msg = str(e.value)
    assert msg.startswith("$RECIPE_SEARCH_DATA path '../nowhere/cifar10-jpeg.tar.gz' does not exist")
    assert str(tmp_path.parent / "nowhere" / "cifar10-jpeg.tar.gz") in msg and "\n" not in msg


def test_path_variables_the_workers_inherit_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECIPE_SEARCH_HOME", "home")
    monkeypatch.setenv("RECIPE_SEARCH_CACHE", "~/cache")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///home/mlflow.db")
    absolute_environment()
    assert os.environ["RECIPE_SEARCH_HOME"] == str(Path.cwd() / "home")
    assert os.environ["RECIPE_SEARCH_CACHE"] == os.path.expanduser("~/cache")
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{Path.cwd()}/home/mlflow.db"
