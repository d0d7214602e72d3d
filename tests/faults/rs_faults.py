"""Fault injection into recipe-search trials, for tests only (production code reads no fault switch).

A spec names faults per trial: ``mocov2=raise,sinfonce-light=nan`` injects into the
baseline trials named (search and confirmation stage), ``*=sleep:0.5`` into every trial:

* ``raise`` -- ``trainer.train`` raises :class:`InjectedFault` before training, inside the
  trainable: an application error, reported as the trial's failure and never retried (a trial
  that had finished before a crash is re-reported, as always, and raises nothing);
* ``nan`` -- every ``SInfoNCELoss`` is NaN, so the trainer's own NaN guard ends the run
  as diverged;
* ``sleep:S`` -- S seconds before each epoch's report (slack to interrupt a search in);
* ``kill:E`` -- SIGKILL of the trial's own worker process right after its epoch-E report (a
  system failure: Tune retries the trial from its last checkpoint), once per trial (a marker
  file ``.rs-killed-<trial id>`` beside ``$RS_TEST_FAULTS_FILE``, else in the temp dir).

How it reaches every process: this directory holds a ``sitecustomize.py``, which Python
imports at start-up from ``PYTHONPATH``. When ``$RS_TEST_FAULTS`` (a spec) or
``$RS_TEST_FAULTS_FILE`` (a file holding one, read at each trial's start, so a test can
change it while Ray's workers live on) is set, it installs an import hook that wraps
``recipe_search.tune.trial.run_trial`` as the module is imported -- in a ``recipe-search``
subprocess and in each Ray worker alike (workers inherit the driver's environment;
``recipe_search.tune.runtime.prepare_environment`` keeps the ``PYTHONPATH`` entries it finds).
:func:`process_env` gives the variables that turn it on for processes started afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

FAULTS_DIR = Path(__file__).resolve().parent
SPEC_ENV = "RS_TEST_FAULTS"
FILE_ENV = "RS_TEST_FAULTS_FILE"
TARGET = "recipe_search.tune.trial"


class InjectedFault(RuntimeError):
    """Raised by a trial given the ``raise`` fault."""


# --------------------------------------------------------------------------- for the tests


def process_env(spec: str = "", *, file: str | os.PathLike | None = None, base=None) -> dict[str, str]:
    """The variables that make processes started with them (a CLI subprocess, a Ray cluster
    and its workers) inject ``spec`` and/or the spec in ``file``: merge them into ``base``'s
    (default ``os.environ``) environment."""
    base = os.environ if base is None else base
    paths = [p for p in base.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(FAULTS_DIR)]
    env = {"PYTHONPATH": os.pathsep.join([str(FAULTS_DIR), *paths])}
    if spec:
        env[SPEC_ENV] = spec
    if file is not None:
        env[FILE_ENV] = str(file)
    return env


@contextlib.contextmanager
def injected(spec: str):
    """Inject ``spec`` into the trials started inside the block (``$RS_TEST_FAULTS_FILE``,
    set by :func:`process_env` before Ray started, names the file written here)."""
    path = Path(os.environ[FILE_ENV])
    path.write_text(spec)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- in each process


def current_spec() -> str:
    spec = [os.environ.get(SPEC_ENV, "")]
    if os.environ.get(FILE_ENV):
        try:
            spec.append(Path(os.environ[FILE_ENV]).read_text().strip())
        except OSError:
            pass
    return ",".join(filter(None, spec))


def faults_for(baseline_name: str | None, spec: str) -> list[str]:
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        who, _, what = item.partition("=")
        if who == "*" or (baseline_name is not None and who == baseline_name):
            out.append(what)
    return out


@contextlib.contextmanager
def _nan_loss():
    from trainer import losses

    cls = losses.SInfoNCELoss
    original = cls.forward

    def forward(self, *args, **kwargs):
        return original(self, *args, **kwargs) * float("nan")

    cls.forward = forward
    try:
        yield
    finally:
        cls.forward = original


@contextlib.contextmanager
def _sleep_before_epoch_reports(seconds: float):
    from ray import tune

    original = tune.report

    def report(metrics, *args, **kwargs):
        if not metrics.get("final"):
            time.sleep(seconds)
        return original(metrics, *args, **kwargs)

    tune.report = report
    try:
        yield
    finally:
        tune.report = original


@contextlib.contextmanager
def _raise_in_train(trial_id: str):
    from trainer import engine

    original = engine.train

    def train(*args, **kwargs):
        raise InjectedFault(f"injected fault in trial {trial_id}")

    engine.train = train
    try:
        yield
    finally:
        engine.train = original


def kill_marker(trial_id: str) -> Path:
    """The file that says trial ``trial_id`` was killed once already."""
    where = Path(os.environ[FILE_ENV]).parent if os.environ.get(FILE_ENV) else Path(tempfile.gettempdir())
    return where / f".rs-killed-{trial_id}"


@contextlib.contextmanager
def _kill_after_epoch(trial_id: str, epoch: int):
    from ray import tune

    original = tune.report

    def report(metrics, *args, **kwargs):
        out = original(metrics, *args, **kwargs)
        marker = kill_marker(trial_id)
        if not metrics.get("final") and int(metrics.get("epoch") or 0) == epoch and not marker.exists():
            marker.write_text(str(epoch))
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    tune.report = report
    try:
        yield
    finally:
        tune.report = original


def patch(module) -> None:
    """Wrap ``module.run_trial`` (``recipe_search.tune.trial``) with the faults of the current spec."""
    original = module.run_trial
    if getattr(original, "_rs_faults", False):
        return

    @functools.wraps(original)
    def run_trial(config, ctx):
        from ray import tune

        base = ctx.baseline_for(config)
        faults = faults_for(base.name if base is not None else None, current_spec())
        trial_id = tune.get_context().get_trial_id()
        sleep = sum(float(f.split(":", 1)[1]) for f in faults if f.startswith("sleep:"))
        with contextlib.ExitStack() as stack:
            if "raise" in faults:
                stack.enter_context(_raise_in_train(trial_id))
            for kill in (f for f in faults if f.startswith("kill:")):
                stack.enter_context(_kill_after_epoch(trial_id, int(kill.split(":", 1)[1])))
            if "nan" in faults:
                stack.enter_context(_nan_loss())
            if sleep:
                stack.enter_context(_sleep_before_epoch_reports(sleep))
            return original(config, ctx)

    run_trial._rs_faults = True
    module.run_trial = run_trial


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        patch(module)

    def __getattr__(self, name):  # get_source, get_code, ... of the real loader
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Patch ``recipe_search.tune.trial`` in this process, now or when it is imported."""
    if TARGET in sys.modules:
        patch(sys.modules[TARGET])
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
