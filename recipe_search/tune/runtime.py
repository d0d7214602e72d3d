"""What a search runs on: the environment and session of Ray, the trials' resources and quiet
libraries (the optional Optuna RDB storage of the study is :mod:`recipe_search.study_storage`).

* :func:`prepare_environment` sets the variables Ray and its workers need before Ray
  starts (workers inherit the driver's environment, ``PYTHONPATH`` included, so they
  import ``trainer`` and ``recipe_search`` even without an install).
* :func:`ray_session` starts (or joins) Ray and shuts down only what it started.
* :func:`trial_resources` sizes the trials to the cluster: CPUs and GPUs per trial, how
  many at once, the device.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from typing import TYPE_CHECKING, Any

from ..config import REPO_ROOT
from ..errors import SearchError

if TYPE_CHECKING:
    from ..plan import Plan


# --------------------------------------------------------------------------- Ray


def prepare_environment() -> None:
    """Environment for Ray and its workers (set before Ray starts); its path variables absolute."""
    from ..paths import absolute_environment

    absolute_environment()  # the workers run in their trials' directories
    root = str(REPO_ROOT)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:  # workers import trainer/recipe_search even without an install
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])
    for key, value in (("RAY_AIR_NEW_OUTPUT", "0"), ("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0"),
                       ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0"),
                       ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"), ("RAY_DEDUP_LOGS", "0"),
                       ("TUNE_WARN_SLOW_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "60"),
                       ("RAY_USAGE_STATS_ENABLED", "0"), ("MLFLOW_LOGGING_LEVEL", "WARNING"),
                       # snapshot Tune's experiment state at most every 2 s (default: >= 10 s)
                       ("TUNE_GLOBAL_CHECKPOINT_S", "2")):
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None):
    """Start (or join) Ray for the duration of the block; shut down only what we started."""
    prepare_environment()
    import ray

    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.ERROR,
                                      log_to_driver=False)
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = num_cpus
        try:
            ray.init(**kwargs)
        except Exception as e:  # noqa: BLE001 - connection errors are user errors
            where = f"at {address}" if address else "locally"
            raise SearchError(f"cannot start Ray {where}: {e}") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def quiet_libraries() -> None:
    """Optuna, Ray Tune and MLflow log warnings and errors only."""
    import mlflow  # noqa: F401 - configures its loggers on import; override after
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="optuna")
    warnings.filterwarnings("ignore", message=".*is out of range for distribution.*")


def trial_resources(plan_: "Plan", ray) -> tuple[float, float, int, str, list[str]]:
    """(cpus_per_trial, gpus_per_trial, max_concurrent, device, notes) on the running cluster."""
    s, notes = plan_.settings, []
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 1)), float(res.get("GPU", 0))
    gpt = s.gpus_per_trial if s.gpus_per_trial is not None else (plan_.budget.gpus_per_trial if gpus else 0.0)
    if gpt > 0 and gpus == 0:
        raise SearchError(f"--gpus-per-trial {gpt:g} asks for a GPU but the Ray cluster has none; "
                          "leave it out (or 0) to run the trials on the CPU")
    if gpt > gpus > 0:
        raise SearchError(f"--gpus-per-trial {gpt:g} exceeds the cluster's {gpus:g} GPU(s)")
    if gpt > 0:
        conc = s.max_concurrent or max(1, int(math.floor(gpus / gpt + 1e-9)))
        cpt = s.cpus_per_trial if s.cpus_per_trial is not None else max(1.0, math.floor(cpus / conc))
    else:
        # on the CPU, one core per trial and a trial per core: small convnets scale badly
        # over intra-op threads, and spinning OpenMP threads collapse on a busy machine
        cpt = s.cpus_per_trial if s.cpus_per_trial is not None else 1.0
        conc = s.max_concurrent or max(1, int(math.floor(cpus / cpt + 1e-9)))
    if cpt > cpus:
        raise SearchError(f"--cpus-per-trial {cpt:g} exceeds the cluster's {cpus:g} CPU(s)")
    return cpt, gpt, conc, ("cuda" if gpt > 0 else "cpu"), notes
