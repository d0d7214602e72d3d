"""Shared test fixtures.

* ``cifar10_tarball``: the shared real CIFAR-10 ImageFolder tarball
  (``../shared/data/cifar10-jpeg.tar.gz`` next to the repository), skipped when absent.
* ``cifar_cache_dir``: one session-wide decode cache directory, so every module
  that loads CIFAR-10 at the same image size decodes the tarball only once.
* ``tmp_cache``: points ``$RECIPE_SEARCH_CACHE`` at a fresh temporary directory.
* ``make_search_home``: a factory, ``make_search_home(name="home", db=False) -> SearchHome``:
  ``$RECIPE_SEARCH_HOME`` at ``tmp_path/name`` (the caller's MLflow URI, Tune storage and API
  token unset), its ``path`` and ``tracking_uri``; ``db=True`` starts it with an MLflow database
  whose tables exist (a copy of ``empty_db``). Every test that needs a home of its own uses it.
* ``search_home``: a module-wide home of the same kind with a local 2-CPU Ray session, for
  modules that run whole searches in-process; its Ray workers read injected faults from
  ``<home>/faults.txt`` (``rs_faults``).
* ``empty_db``: an MLflow SQLite database with its tables created once per session.
* The API tests' fixtures (``tests/test_api_*.py``; helpers in ``tests/api_support.py``):
  ``fresh_uri`` (an empty store), ``populated`` (promotions and searches, built once),
  ``client`` (a TestClient over it), ``jobs_home`` (a home with the stand-in search command).
* ``tests/faults`` is on ``sys.path``: ``import rs_faults`` injects faults into trials.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# One torch thread per test process (and its subprocesses): results are reproducible
# across machines with another core count, and a busy 2-core box does not fall into
# the oversubscription slowdown of several multi-threaded torch processes.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
CIFAR10_TARBALL = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

# Fault injection into trials, test-only (tests/faults/rs_faults.py): `import rs_faults`.
FAULTS_DIR = Path(__file__).resolve().parent / "faults"
if str(FAULTS_DIR) not in sys.path:
    sys.path.append(str(FAULTS_DIR))


@pytest.fixture(scope="session")
def cifar10_tarball() -> Path:
    """Path of the shared CIFAR-10 tarball (cifar10/{train,test}/<class>/*.jpg); never copy it."""
    if not CIFAR10_TARBALL.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the shared CIFAR-10 tarball at {CIFAR10_TARBALL}")
        pytest.skip(f"shared CIFAR-10 tarball not found at {CIFAR10_TARBALL} "
                    "(expected ../shared/data/cifar10-jpeg.tar.gz next to the repository)")
    return CIFAR10_TARBALL


@pytest.fixture(scope="session")
def cifar_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A decode-cache directory shared by the whole session: pass it as DataSpec(cache_dir=...)."""
    return tmp_path_factory.mktemp("decoded-cache")


@dataclass(frozen=True)
class SearchHome:
    path: Path  # $RECIPE_SEARCH_HOME
    tracking_uri: str  # its embedded MLflow store (what recipe-search uses by default)


def point_home(mp: pytest.MonkeyPatch, path: Path, template_db: Path | None = None) -> SearchHome:
    """Point ``$RECIPE_SEARCH_HOME`` at ``path`` with nothing of the caller's environment leaking in
    (MLflow URI, Tune storage, API token); with ``template_db``, the home's MLflow database starts
    as a copy of it."""
    from recipe_search import config

    mp.setenv("RECIPE_SEARCH_HOME", str(path))
    for var in ("MLFLOW_TRACKING_URI", config.STORAGE_ENV, "RECIPE_SEARCH_TOKEN"):
        mp.delenv(var, raising=False)
    if template_db is not None:
        path.mkdir(parents=True, exist_ok=True)
        shutil.copy(template_db, path / "mlflow.db")
    return SearchHome(path, config.default_tracking_uri())


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its tables created once (migrations take seconds)."""
    from recipe_search.store import RecipeStore

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    RecipeStore(f"sqlite:///{db}").ping()
    return db


@pytest.fixture()
def make_search_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """``make_search_home(name="home", db=False) -> SearchHome`` at ``tmp_path / name`` (see the
    module docstring); a second call moves $RECIPE_SEARCH_HOME to the new home."""

    def make(name: str = "home", *, db: bool = False) -> SearchHome:
        template = request.getfixturevalue("empty_db") if db else None
        return point_home(monkeypatch, tmp_path / name, template)

    return make


@pytest.fixture(scope="module")
def search_home(tmp_path_factory: pytest.TempPathFactory):
    """A fresh recipe-search home for the module, with a local Ray session of 2 CPUs."""
    import rs_faults
    from recipe_search.tune.runtime import ray_session

    mp = pytest.MonkeyPatch()
    home = point_home(mp, tmp_path_factory.mktemp("rs-home")).path
    mp.setenv("RECIPE_SEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "rs-cache"))
    mp.delenv(rs_faults.SPEC_ENV, raising=False)
    # the Ray workers (started with this environment) inject what a test writes into this file
    for key, value in rs_faults.process_env(file=home / "faults.txt").items():
        mp.setenv(key, value)
    try:
        with ray_session(num_cpus=2):
            yield home
    finally:
        mp.undo()


@pytest.fixture()
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Set $RECIPE_SEARCH_CACHE to a fresh temporary directory and return it."""
    cache = tmp_path / "recipe-search-cache"
    cache.mkdir()
    monkeypatch.setenv("RECIPE_SEARCH_CACHE", str(cache))
    return cache


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test parametrised on the ``cuda`` device, or skipped for want of CUDA, is a ``cuda`` test
    (``pytest -m cuda``, which bench/gpu_check.sh runs on a GPU)."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        needs_cuda = any(m.kwargs.get("reason") == "needs CUDA" for m in item.iter_markers("skipif"))
        if needs_cuda or any(isinstance(v, str) and v.startswith("cuda") for v in params.values()):
            item.add_marker(pytest.mark.cuda)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory):
    """A small learnable synthetic proxy (4 classes x 16 train images, 32 px) for engine tests."""
    from trainer import DataSpec, load_proxy

    spec = DataSpec(dataset="synthetic", classes=4, train_per_class=16, val_per_class=4, test_per_class=8,
                    cache_dir=str(tmp_path_factory.mktemp("cache")))
    return load_proxy(spec, 32, seed=0)


# ---------------------------------------------------------------- the API tests' fixtures


@pytest.fixture()
def fresh_uri(tmp_path: Path, empty_db: Path) -> str:
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def populated(tmp_path_factory: pytest.TempPathFactory, empty_db: Path) -> dict:
    """A store with two backbones (resnet18 on two datasets, cifar10 under two fingerprints,
    one of them with a superseded promotion) and a search with four resnet18 trials (one a
    confirmation trial) plus one other-backbone trial. Built once: tests only read it."""
    from api_support import FP2, FP3, add_search, promote, recipe
    from recipe_search.store import RecipeStore

    d = tmp_path_factory.mktemp("populated")
    shutil.copy(empty_db, d / "mlflow.db")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    s = RecipeStore(uri)
    promote(s, [0.50, 0.49, 0.51], rec=recipe(lr=0.1), metrics={"test_knn_top1": 0.45}, search_id="s0",
            source_run_id="t0")
    promote(s, [0.60, 0.59, 0.61], rec=recipe(lr=0.2), metrics={"test_knn_top1": 0.55, "val_knn_top1": 0.5},
            search_id="s1", source_run_id="t1")
    promote(s, [0.30, 0.31, 0.32], fp=FP3, budget="proxy", rec=recipe(lr=0.25), verdict="no_significant_lift")
    promote(s, [0.40, 0.41, 0.42], dataset="stl10", fp=FP2, rec=recipe(lr=0.3), verdict="below_floor")
    promote(s, [0.35, 0.34, 0.36], backbone="mobilenetv3_small_100")
    search_id, trial_ids = add_search(uri, "resnet18", [
        {"val_knn_top1": 0.25}, {"val_knn_top1": 0.5, "test_probe_top1": 0.6, "test_knn_top1": 0.55}, None,
        {"val_knn_top1": 0.4, "loss": float("nan")}], stages={1: "confirmation"})
    add_search(uri, "efficientnet_b0", [{"val_knn_top1": 0.9}])
    return {"uri": uri, "store": s, "search_id": search_id, "trial_ids": trial_ids}


@pytest.fixture(scope="module")
def client(populated: dict):
    """A TestClient over ``populated`` (one app, and its cache, per module)."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    return TestClient(create_app(populated["uri"]))


@pytest.fixture()
def jobs_home(make_search_home) -> Path:
    """A home for the job tests, with the stand-in search command ``fake_run.py`` beside it."""
    from api_support import FAKE_RUN

    home = make_search_home("home").path
    (home.parent / "fake_run.py").write_text(FAKE_RUN)
    return home
