"""Shared test fixtures.

* ``cifar10_tarball``: the shared real CIFAR-10 ImageFolder tarball
  (``../shared/data/cifar10-jpeg.tar.gz`` next to the repository), skipped when absent.
* ``cifar_cache_dir``: one session-wide decode cache directory, so every module
  that loads CIFAR-10 at the same image size decodes the tarball only once.
* ``tmp_cache``: points ``$RECIPE_SEARCH_CACHE`` at a fresh temporary directory.
* ``search_home``: a module-wide ``$RECIPE_SEARCH_HOME`` (embedded MLflow store, Tune storage)
  with a local 2-CPU Ray session, for modules that run whole searches in-process; its Ray
  workers read injected faults from ``<home>/faults.txt`` (``rs_faults``).
* ``tests/faults`` is on ``sys.path``: ``import rs_faults`` injects faults into trials.
"""

from __future__ import annotations

import os
import sys
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


@pytest.fixture(scope="module")
def search_home(tmp_path_factory: pytest.TempPathFactory):
    """A fresh recipe-search home for the module, with a local Ray session of 2 CPUs."""
    import rs_faults
    from recipe_search.runtime import ray_session

    home = tmp_path_factory.mktemp("rs-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("RECIPE_SEARCH_HOME", str(home))
    mp.setenv("RECIPE_SEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "rs-cache"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
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
