"""Orchestration of one recipe search: a search stage, then a confirmation stage, then a verdict.

One search = one backbone.

1. **Search** (Ray Tune's Tuner + ``searcher.RecipeSearcher`` (Optuna TPE) + ASHA): the
   two baselines run first, then sampled recipes; every trial is a proxy pretraining
   (``trial.run_trial``) ranked on the validation objective (val kNN top-1) by ASHA
   and the sampler alike. Nothing in this stage reads the test split.
2. **Confirmation** (``confirm.py``): the top ``confirm_k`` searched recipes and both
   baselines are trained again with ``confirm_seeds`` fresh seeds; the test split is
   read for the first time; the untrained encoder is evaluated at the same seeds.
3. **Verdict** (``verdict.py``): the winner is chosen on mean validation score, reported
   with its test mean ± std and paired intervals on its lift over each baseline and
   the floor; it is promoted into the recipe store unless it is below the floor.

Each trial is a nested MLflow run under the search's parent run (``rs.stage`` says
which stage). State lives under ``config.ray_storage_dir()``: ``<search id>/`` holds
the search stage's Tune experiment and ``recipe_search.json`` (settings, ids, stage,
the confirmation jobs once chosen), ``<search id>-confirm/`` the confirmation's Tune
experiment. ``resume=True`` continues at the stage where the search stopped: finished
trials stay finished, running ones continue from their last epoch checkpoint, and the
same MLflow runs are reused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config, events
from .baselines import BASELINES
from .budget import Budget, get_budget
from .errors import ResumeError, SearchError, SpaceError
from .promote import (TrialSummary, best_search_trial, confirmation_runs, promote_winner, provenance,
                      summarize)
from .space import SearchSpace, load_space
from .janitor import CheckpointJanitor
from .tracking import TAG_BACKBONE, Tracker, TrialLogger
from .confirm import confirmation_seeds, floor_metrics, plan_jobs, recipes_of
from .estimate import duration
from .verdict import Verdict, decide

META_FILE = "recipe_search.json"
DEFAULT_EXPERIMENT = "recipe-search"
OBJECTIVE = "objective"      # val kNN top-1, per epoch and in the final report (trial.py)
CONFIRM_SUFFIX = "-confirm"  # the confirmation stage's Tune experiment: <search id>-confirm
log = logging.getLogger(__name__)


@dataclass
class SearchSettings:
    backbone: str
    space: str | None = None
    dataset: str = "cifar10"
    data: str | None = None
    budget: str = "smoke"
    num_samples: int | None = None
    max_epochs: int | None = None
    time_budget: float | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    max_concurrent: int | None = None
    tracking_uri: str | None = None
    ray_address: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    seed: int = 0
    force: bool = False
    search_id: str | None = None
    num_cpus: int | None = None  # local Ray cluster size (None: all cores)
    download: bool = False  # let torchvision download the dataset
    study_storage: str | None = None  # SQLAlchemy URL of an Optuna RDB storage (None: in the Tune state)
    checkpoint_every: int | None = None  # epochs between persisted trial checkpoints (None: the budget's)
    train_per_class: int | None = None  # per-class sizes (None: the budget's)
    val_per_class: int | None = None
    test_per_class: int | None = None
    confirm_k: int | None = None  # finalists confirmed (None: the budget's)
    confirm_seeds: int | None = None  # fresh seeds per confirmed recipe (None: the budget's)
    yes: bool = False  # run a GPU budget on the CPU anyway
    faults: str = ""  # test hook, see trial.py

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def public_dict(self) -> dict:
        """to_dict() with the password of --study-storage masked (for MLflow)."""
        d = self.to_dict()
        if d.get("study_storage"):
            d["study_storage"] = redact_url(d["study_storage"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SearchSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class SearchOutcome:
    search_id: str
    backbone: str
    status: str  # finished | interrupted
    parent_run_id: str
    experiment_dir: str
    tracking_uri: str
    trials: list[TrialSummary] = field(default_factory=list)
    best: TrialSummary | None = None  # the best search-stage trial on the val objective
    floor: dict = field(default_factory=dict)  # {"val": metrics at the search seed, "test": {seed: metrics}}
    confirmation: list = field(default_factory=list)  # verdict.RecipeRuns
    verdict: Verdict | None = None
    fingerprint: dict = field(default_factory=dict)
    promotion: Any = None  # store.PromotionResult
    promotion_error: str | None = None
    wall_s: float = 0.0
    tune_s: float = 0.0
    search_s: float = 0.0
    confirm_s: float = 0.0
    trials_train_s: float = 0.0
    resumed: bool = False
    stage: str = "search"  # where an interrupted search stopped

    @property
    def overhead(self) -> float | None:
        """Search wall time / the sum of the trials' training time (>= 1 when serial)."""
        return self.wall_s / self.trials_train_s if self.trials_train_s > 0 else None


# --------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """Everything resolved from settings before Ray starts (all user errors surface here)."""

    settings: SearchSettings
    budget: Budget
    space: SearchSpace
    data: Any  # trainer.data.DataSpec (fitted to the data by prepare_data)
    num_samples: int
    max_epochs: int
    checkpoint_every: int
    tracking_uri: str
    confirm_k: int
    confirm_seeds: int
    data_notes: list = field(default_factory=list)  # what prepare_data had to shrink


def plan(settings: SearchSettings) -> Plan:
    """Validate settings; raise RecipeError / DataError / SpaceError / SearchError."""
    from trainer.recipe import check_backbone

    check_backbone(settings.backbone)
    budget = get_budget(settings.budget).with_sizes(train_per_class=settings.train_per_class,
                                                     val_per_class=settings.val_per_class,
                                                     test_per_class=settings.test_per_class)
    for name, low in (("num_samples", 1), ("max_epochs", 1), ("max_concurrent", 1), ("confirm_k", 0),
                      ("confirm_seeds", 2)):
        v = getattr(settings, name)
        if v is not None and (not isinstance(v, int) or v < low):
            raise SearchError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {v!r}")
    for name in ("gpus_per_trial", "cpus_per_trial", "time_budget"):
        v = getattr(settings, name)
        if v is not None and (not math.isfinite(v) or v < 0 or (v == 0 and name != "gpus_per_trial")):
            op = ">= 0" if name == "gpus_per_trial" else "> 0"
            raise SearchError(f"--{name.replace('_', '-')} must be {op}, got {v!r}")
    if settings.study_storage is not None:
        check_study_storage_url(settings.study_storage)
    space = load_space(settings.space, settings.backbone).with_fixed(budget.fixed)
    if not space.params:
        raise SpaceError(f"{space.sources[-1] if space.sources else '<space>'}: the space has no sampled "
                         "parameters (every field is fixed); nothing to search")
    num_samples = settings.num_samples or budget.num_samples
    if num_samples < len(BASELINES):
        raise SearchError(f"--num-samples must be >= {len(BASELINES)} (the baselines run first), "
                          f"got {num_samples}")
    if settings.checkpoint_every is not None and settings.checkpoint_every < 0:
        raise SearchError(f"--checkpoint-every must be >= 0 (epochs; 0: no mid-trial checkpoints), "
                          f"got {settings.checkpoint_every}")
    if settings.data is not None and "://" not in settings.data:  # trials run in other directories
        settings.data = os.path.abspath(os.path.expanduser(settings.data))
    data = budget.data_spec(settings.dataset, settings.data, download=settings.download)
    return Plan(settings=settings, budget=budget, space=space, data=data, num_samples=num_samples,
                max_epochs=settings.max_epochs or budget.max_epochs,
                checkpoint_every=budget.checkpoint_every if settings.checkpoint_every is None
                else settings.checkpoint_every,
                tracking_uri=settings.tracking_uri or config.default_tracking_uri(),
                confirm_k=budget.confirm_k if settings.confirm_k is None else settings.confirm_k,
                confirm_seeds=budget.confirm_seeds if settings.confirm_seeds is None else settings.confirm_seeds)


def prepare_data(plan_: Plan):
    """Fit the budget's per-class sizes to what the data holds (down to the trainer's minimum;
    ``plan_.data`` and ``plan_.data_notes`` say what was used), then decode (and cache) the
    proxy once, in this process: a bad --data fails here, before Ray starts, and trials
    never race to build the cache. Returns the ``ProxyData``."""
    from trainer.data import fit_spec, load_proxy

    fitted, notes = fit_spec(plan_.data, plan_.budget.image_size, plan_.settings.seed)
    plan_.data, plan_.data_notes = fitted, list(notes)
    return load_proxy(plan_.data, plan_.budget.image_size, plan_.settings.seed)


# --------------------------------------------------------------------------- Optuna RDB storage


def redact_url(url: str) -> str:
    """The URL with its password masked (``***``); unparseable URLs are returned unchanged."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


def check_study_storage_url(url: str) -> None:
    """A well-formed SQLAlchemy URL whose driver is installed (SearchError otherwise)."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception as e:  # noqa: BLE001 - sqlalchemy.exc.ArgumentError
        raise SearchError(f"--study-storage {url!r} is not a SQLAlchemy URL (e.g. "
                          f"postgresql://user:pass@host:5432/db or sqlite:///optuna.db): {e}") from None
    try:
        u.get_dialect()
    except Exception as e:  # noqa: BLE001 - NoSuchModuleError
        raise SearchError(f"--study-storage {redact_url(url)}: unknown database dialect: {e}") from None


def open_study_storage(url: str):
    """optuna.storages.RDBStorage for ``url``; connection/driver failures raise SearchError."""
    import optuna

    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as e:  # noqa: BLE001 - ImportError (no driver), OperationalError, ...
        raise SearchError(f"--study-storage {redact_url(url)} unavailable: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from None


def study_name(search_id: str) -> str:
    return f"recipe-search:{search_id}"


def _existing_study(storage, name: str):
    """The study ``name`` in ``storage`` with its trials left RUNNING by a dead driver marked
    FAIL (they are asked again), or None when there is no such study."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if t.state == TrialState.RUNNING:
            try:
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except Exception:  # noqa: BLE001 - already finished by someone else
                pass
    return study


# --------------------------------------------------------------------------- state on disk


def storage_dir() -> Path:
    return config.ray_storage_dir()


def new_search_id(backbone: str) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{backbone.replace('/', '_')}-{stamp}-{secrets.token_hex(2)}"


def _write_meta(path: Path, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    os.replace(tmp, path)


def _read_meta(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def list_searches() -> list[dict]:
    """Every search with saved state, newest first."""
    root = storage_dir()
    out = []
    if root.is_dir():
        for meta_path in root.glob(f"*/{META_FILE}"):
            meta = _read_meta(meta_path)
            if meta:
                meta["dir"] = str(meta_path.parent)
                out.append(meta)
    return sorted(out, key=lambda m: m.get("created", ""), reverse=True)


def find_resumable(backbone: str, experiment: str, search_id: str | None = None) -> dict | None:
    for meta in list_searches():
        if search_id is not None:
            if meta.get("search_id") == search_id:
                return meta
            continue
        if (meta.get("backbone") == backbone and meta.get("experiment") == experiment
                and meta.get("status") != "finished"):
            return meta
    if search_id is not None:
        raise ResumeError(f"no saved search {search_id!r} under {storage_dir()}")
    return None


# --------------------------------------------------------------------------- Ray


def prepare_environment() -> None:
    """Environment for Ray and its workers (set before Ray starts)."""
    root = str(Path(__file__).resolve().parent.parent)
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


def _quiet_libraries() -> None:
    import mlflow  # noqa: F401 - configures its loggers on import; override after
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="optuna")
    warnings.filterwarnings("ignore", message=".*is out of range for distribution.*")


def _resources(plan_: Plan, ray) -> tuple[float, float, int, str, list[str]]:
    """(cpus_per_trial, gpus_per_trial, max_concurrent, device, notes)."""
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


# --------------------------------------------------------------------------- the search


def run_search(settings: SearchSettings, *, resume: bool = False, console=None, progress: bool = True,
               on_note=None) -> SearchOutcome:
    """Run (or resume) one search; returns its outcome after promotion."""
    t_start = time.monotonic()
    prepare_environment()
    _quiet_libraries()
    note = on_note or (lambda msg: None)
    meta: dict | None = None
    cross_driver = False
    if resume:
        try:
            meta = find_resumable(settings.backbone, settings.experiment, settings.search_id)
        except ResumeError:
            if not (settings.study_storage and settings.search_id):
                raise
            # another driver: no Tune state here, but the study and the MLflow runs are shared
            meta, cross_driver = None, True
            note(f"no saved state of search {settings.search_id} here: continuing its Optuna study "
                 f"from {redact_url(settings.study_storage)} and its MLflow runs")
        if cross_driver:
            pass
        elif meta is None:
            note(f"no unfinished search of {settings.backbone} to resume: starting a new one")
        else:
            saved = SearchSettings.from_dict(meta["settings"])
            saved.ray_address = settings.ray_address
            if settings.study_storage:  # a moved database (or a password given again)
                saved.study_storage = settings.study_storage
            settings = saved
            note(f"resuming search {meta['search_id']} (started {meta.get('created', '?')}) "
                 "with its saved settings")
    p = plan(settings)
    s = p.settings
    search_id = meta["search_id"] if meta else (s.search_id or new_search_id(s.backbone))
    s.search_id = search_id
    exp_dir = storage_dir() / search_id
    meta_path = exp_dir / META_FILE
    if meta is None and meta_path.exists():
        raise SearchError(f"search {search_id!r} already exists in {exp_dir}; use --resume to continue it")
    with _exclusive(exp_dir, search_id):
        return _run(p, meta, meta_path, exp_dir, resume=meta is not None or cross_driver, console=console,
                    progress=progress,
                    note=note, t_start=t_start)


@contextlib.contextmanager
def _exclusive(exp_dir: Path, search_id: str):
    """One process per search: a lock file in its directory (released by the OS on a crash)."""
    import fcntl

    exp_dir.mkdir(parents=True, exist_ok=True)
    with open(exp_dir / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            raise SearchError(f"search {search_id} is running in another process (pid {pid})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(p: Plan, meta: dict | None, meta_path: Path, exp_dir: Path, *, resume: bool, console, progress: bool,
         note, t_start: float) -> SearchOutcome:
    from .estimate import estimate, measure_images_per_sec
    from .fingerprint import fingerprint, mlflow_dataset
    from .trial import TrialContext

    s = p.settings
    search_id = s.search_id
    proxy = prepare_data(p)
    storage = open_study_storage(s.study_storage) if s.study_storage else None  # before any MLflow write
    for n in p.data_notes:
        note(f"data: {n}")
    fp = fingerprint(proxy, dataset=s.dataset, budget=s.budget, image_size=p.budget.image_size,
                     epochs=p.max_epochs, spec=p.data)
    stage = (meta or {}).get("stage", "search")
    from .store import RecipeStore

    RecipeStore(p.tracking_uri).check_schema()  # an outdated recipe store fails now, not after the search

    with ray_session(s.ray_address, s.num_cpus) as ray:
        cpt, gpt, conc, device, notes = _resources(p, ray)  # before any MLflow write
        if s.ray_address:  # a cluster: every node must read the data and share the Tune storage
            from .nodes import check_nodes

            note(f"checking the Ray nodes (data {s.data or s.dataset}, Tune storage {storage_dir()})")
            notes += check_nodes(ray, storage_dir(), None if p.data.dataset == "synthetic" else p.data,
                                 p.budget.image_size, s.seed)
        ctx = TrialContext(
            backbone=s.backbone, space=p.space, budget_fixed=dict(p.budget.fixed),
            image_size=p.budget.image_size, max_epochs=p.max_epochs, seed=s.seed, data=p.data,
            device=device, threads=max(1, int(cpt)), baselines=BASELINES,
            extra={"faults": s.faults}, checkpoint_every=p.checkpoint_every)
        floor_recipe = ctx.recipe_for({"baseline": BASELINES[-1].name})[0]
        seeds = confirmation_seeds(s.seed, p.confirm_seeds)
        confirm_jobs = (p.confirm_k + len(BASELINES)) * len(seeds)
        if meta is None or device == "cpu":
            ips = measure_images_per_sec(floor_recipe, proxy, device, ctx.threads)
            est = estimate(images_per_sec=ips, sizes=proxy.sizes(), num_samples=p.num_samples,
                           max_epochs=p.max_epochs, confirm_jobs=confirm_jobs, concurrency=conc, device=device,
                           cpus_per_trial=cpt, gpus_per_trial=gpt, grace_period=p.budget.grace_period)
            for line in [p.budget.summary(), *est.lines]:
                note(line)
            if device == "cpu" and p.budget.name == "proxy" and not s.yes:
                raise SearchError(f"--budget proxy is sized for a GPU and this cluster has none: estimated "
                                  f"{duration(est.total_s)} on the CPU; pass --yes to run it anyway, or use "
                                  "--budget smoke")

        tracker = Tracker(p.tracking_uri, s.experiment)
        base_tags = {TAG_BACKBONE: s.backbone, "rs.dataset": s.dataset, "rs.budget": s.budget,
                     "rs.fingerprint": fp["digest"]}
        parent_params = {"backbone": s.backbone, "dataset": s.dataset, "data": s.data, "budget": s.budget,
                         "num_samples": p.num_samples, "max_epochs": p.max_epochs, "seed": s.seed,
                         "space": ",".join(p.space.sources), "time_budget": s.time_budget,
                         "image_size": p.budget.image_size, "confirm_k": p.confirm_k,
                         "confirm_seeds": ",".join(map(str, seeds)), "fingerprint": fp["digest"],
                         **{f"budget.{k}": v for k, v in p.budget.to_dict().items()
                            if k not in ("name", "max_epochs", "num_samples", "confirm_k", "confirm_seeds")},
                         **{f"data.{k}": v for k, v in fp["sizes"].items()}}
        dataset = mlflow_dataset(fp, s.data)
        try:
            parent_run_id = tracker.parent_run(search_id, name=f"search-{search_id}",
                                               tags={**base_tags, "rs.status": "running"}, params=parent_params)
            if meta is None:
                tracker.log_text(parent_run_id, p.space.to_yaml(), "space.yaml")
                tracker.log_dict(parent_run_id, s.public_dict(), "settings.json")
                tracker.log_dataset(parent_run_id, dataset)
        except Exception as e:  # noqa: BLE001 - MLflow/SQLAlchemy errors: the store is unusable
            from .store import StoreUnavailable

            raise StoreUnavailable(f"MLflow tracking store {p.tracking_uri} unavailable: "
                                   f"{type(e).__name__}: {e}") from None
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        meta = {**(meta or {"created": now}), "search_id": search_id, "backbone": s.backbone,
                "experiment": s.experiment, "tracking_uri": p.tracking_uri, "parent_run_id": parent_run_id,
                "status": "running", "stage": stage, "settings": s.to_dict(), "updated": now,
                "fingerprint": fp["digest"]}
        meta.pop("dir", None)
        _write_meta(meta_path, meta)
        for n in notes:
            note(n)

        # the untrained floor on val, at the search's seed: shown beside every trial
        floor = {"val": meta.get("floor_val") or floor_metrics(floor_recipe, proxy, [s.seed],
                                                                evaluate_test=False)[s.seed]}
        if "floor_val" not in meta:
            meta["floor_val"] = floor["val"]
            _write_meta(meta_path, meta)
            tracker.log_metrics(parent_run_id, {f"floor_{k}": v for k, v in floor["val"].items()
                                                if k.startswith("val_")})

        outcome = SearchOutcome(search_id=search_id, backbone=s.backbone, status="finished",
                                parent_run_id=parent_run_id, experiment_dir=str(exp_dir),
                                tracking_uri=p.tracking_uri, floor=floor, fingerprint=fp)
        runner = _StageRunner(p, ctx, tracker, parent_run_id, base_tags, dataset, conc, cpt, gpt, device,
                              console, progress, floor)
        t_tune = time.monotonic()
        if stage == "search":
            outcome.resumed, interrupted = runner.search(exp_dir, resume, storage, note)
            outcome.search_s = time.monotonic() - t_tune
            if interrupted:
                return _stop(outcome, tracker, meta, meta_path, t_start, "search")
            trials = summarize(tracker, search_id)
            named = [(b.name, ctx.recipe_for({"baseline": b.name})[0].to_dict()) for b in BASELINES]
            meta.update(stage="confirmation", seeds=seeds,
                        jobs=plan_jobs(trials, named, p.confirm_k, seeds))
            _write_meta(meta_path, meta)
            resume = False
        jobs, seeds = meta["jobs"], meta["seeds"]
        t_confirm = time.monotonic()
        floor["test"] = {int(k): v for k, v in (meta.get("floor_test") or {}).items()}
        if not floor["test"]:  # the first read of the test split: the floor at the confirmation seeds
            floor["test"] = floor_metrics(floor_recipe, proxy, seeds, evaluate_test=True)
            meta["floor_test"] = floor["test"]
            _write_meta(meta_path, meta)
        restored, interrupted = runner.confirm(exp_dir.with_name(search_id + CONFIRM_SUFFIX), jobs,
                                               resume and stage == "confirmation", note)
        outcome.resumed |= restored
        outcome.confirm_s = time.monotonic() - t_confirm
        outcome.tune_s = time.monotonic() - t_tune
        if interrupted:
            return _stop(outcome, tracker, meta, meta_path, t_start, "confirmation")

    trials = summarize(tracker, search_id)
    outcome.trials = trials
    outcome.best = best_search_trial(trials)
    outcome.trials_train_s = sum(float(t.metrics.get("trial_time_s") or 0.0) for t in trials)
    outcome.confirmation = confirmation_runs(trials, recipes_of(jobs))
    outcome.verdict = decide(outcome.confirmation, floor["test"], seeds)
    if outcome.verdict is None:
        outcome.promotion_error = "no confirmed recipe completed every seed: no verdict, nothing to promote"
    elif outcome.verdict.verdict == "below_floor":
        outcome.promotion_error = ("not promoted: the best confirmed recipe is not above the untrained "
                                   "floor")
    else:
        prov = provenance(backbone=s.backbone, dataset=s.dataset, budget=s.budget, verdict=outcome.verdict,
                          confirmation=outcome.confirmation, fingerprint=fp, search_id=search_id,
                          parent_run_id=parent_run_id, experiment=s.experiment,
                          space=",".join(p.space.sources),
                          settings={"num_samples": p.num_samples, "max_epochs": p.max_epochs,
                                    "seed": s.seed, "data": s.data, "image_size": p.budget.image_size,
                                    "confirm_k": p.confirm_k, "confirm_seeds": seeds})
        from .store import RecipeStore, StoreUnavailable

        try:
            outcome.promotion = promote_winner(RecipeStore(p.tracking_uri), backbone=s.backbone,
                                               dataset=s.dataset, budget=s.budget, verdict=outcome.verdict,
                                               confirmation=outcome.confirmation, provenance=prov,
                                               source_run_id=_winner_run(trials, outcome.verdict.winner),
                                               force=s.force)
        except StoreUnavailable as e:
            outcome.promotion_error = str(e)
    outcome.wall_s = time.monotonic() - t_start
    _finish_parent(tracker, outcome)
    meta.update(status="finished", stage="finished",
                updated=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    _write_meta(meta_path, meta)
    return outcome


def _winner_run(trials: list[TrialSummary], winner: str) -> str | None:
    """The search-stage MLflow run of the recipe named ``winner`` (a trial id or a baseline)."""
    for t in trials:
        if t.stage == "search" and (t.trial_id == winner or t.baseline == winner):
            return t.run_id
    return None


def _stop(outcome: SearchOutcome, tracker: Tracker, meta: dict, meta_path: Path, t_start: float,
          stage: str) -> SearchOutcome:
    """An interrupted search: its trials as they stand, the parent run KILLED, resumable at ``stage``."""
    outcome.status, outcome.stage = "interrupted", stage
    outcome.trials = summarize(tracker, outcome.search_id)
    outcome.best = best_search_trial(outcome.trials)
    outcome.wall_s = time.monotonic() - t_start
    _finish_parent(tracker, outcome)
    meta.update(status="interrupted", updated=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    _write_meta(meta_path, meta)
    return outcome


class _StageRunner:
    """Runs the two Tune experiments of a search with the same trainable, resources and listeners."""

    def __init__(self, p: Plan, ctx, tracker: Tracker, parent_run_id: str, tags: dict, dataset, conc: int,
                 cpt: float, gpt: float, device: str, console, progress: bool, floor: dict):
        self.p, self.ctx, self.tracker, self.parent_run_id = p, ctx, tracker, parent_run_id
        self.tags, self.dataset, self.conc, self.device = tags, dataset, conc, device
        self.console, self.progress, self.floor = console, progress, floor
        self.resources = {"cpu": cpt, "gpu": gpt} if gpt > 0 else {"cpu": cpt}
        self.trainable = None

    def _make_trainable(self, finished: tuple[dict, dict]):
        """The trainable with the context shipped to the workers (the trials a crash finished
        already: re-reported, not re-run)."""
        from ray import tune

        from .trial import run_trial

        ctx = dataclasses.replace(self.ctx, extra={**self.ctx.extra, "finished": finished[0],
                                                   "finished_points": finished[1]})
        self.trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), self.resources)

    def _fit(self, key: str, title: str, num: int, make_tuner, finished: tuple[dict, dict]) -> tuple[bool, bool]:
        """Run one Tune experiment with the MLflow logger, progress view and janitor listening."""
        from .progress import ProgressView

        search_id = self.p.settings.search_id
        self._make_trainable(finished)
        logger = TrialLogger(self.tracker, parent_run_id=self.parent_run_id, search_id=search_id,
                             ctx=self.ctx, tags=self.tags, dataset=self.dataset)
        view = ProgressView(title=title, num_samples=num, max_epochs=self.p.max_epochs,
                            max_concurrent=self.conc, ctx=self.ctx, console=self.console,
                            enabled=self.progress, floor=self.floor.get("val"),
                            log_path=storage_dir() / search_id / "progress.log")
        events.register(key, [logger, view, CheckpointJanitor()])
        events.INTERRUPTED.clear()
        try:
            tuner, restored = make_tuner()
            tuner.fit()
        finally:
            view.stop()
            events.unregister(key)
        interrupted = events.INTERRUPTED.is_set()
        if interrupted:
            logger.mark_interrupted(logger.trials)
        return restored, interrupted

    def _run_config(self, name: str, key: str):
        from ray import tune

        return tune.RunConfig(name=name, storage_path=str(storage_dir()), verbose=0,
                              callbacks=[events.TuneBridge(key)],
                              checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                              failure_config=tune.FailureConfig(max_failures=0, fail_fast=False))

    def search(self, exp_dir: Path, resume: bool, storage, note) -> tuple[bool, bool]:
        import optuna
        from ray import tune

        from .asha import BaselineSafeASHA
        from .searcher import RecipeSearcher

        p, s = self.p, self.p.settings

        def make():
            if resume and tune.Tuner.can_restore(str(exp_dir)):
                return tune.Tuner.restore(str(exp_dir), trainable=self.trainable, resume_unfinished=True,
                                          resume_errored=False, restart_errored=False), True
            n_startup = min(10, max(3, p.num_samples // 4))
            baselines = [(b.name, baseline_point(p.space, self.ctx, b.name)) for b in BASELINES]
            for name, point in baselines:
                if point is None:
                    note(f"baseline {name} is not a point of the space: the sampler is not told its result")
            num_samples, study_kwargs, sampler_seed = p.num_samples, {}, s.seed
            if storage is not None:
                study_kwargs = dict(storage=storage, study_name=study_name(s.search_id))
                existing = _existing_study(storage, study_name(s.search_id)) if resume else None
                if existing is not None:  # resumed on another driver: the study goes on
                    from optuna.trial import TrialState

                    done = len(existing.get_trials(deepcopy=False, states=(
                        TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))
                    if existing.trials:  # the baselines ran already (those outside the space untold)
                        done += sum(1 for _, point in baselines if point is None)
                        baselines = []
                    num_samples = max(1, p.num_samples - done)
                    sampler_seed = s.seed + done  # a fresh RNG stream: not the first driver's points again
                    note(f"Optuna study {study_name(s.search_id)}: {done} trials done, {num_samples} to go")
            searcher = RecipeSearcher(
                space=p.space.optuna_space(), metric=OBJECTIVE, mode="max",
                sampler=optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=n_startup,
                                                   constant_liar=self.conc > 1),
                baselines=baselines, **study_kwargs)
            scheduler = BaselineSafeASHA(time_attr="epoch", metric=OBJECTIVE, mode="max", max_t=p.max_epochs,
                                         grace_period=min(p.budget.grace_period, p.max_epochs),
                                         reduction_factor=p.budget.reduction_factor, stop_last_trials=False)
            return tune.Tuner(
                self.trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=num_samples,
                                            max_concurrent_trials=self.conc, time_budget_s=s.time_budget,
                                            reuse_actors=True),
                run_config=self._run_config(s.search_id, s.search_id)), False

        title = (f"search {s.search_id}  ({s.budget}, {p.num_samples} trials, {p.max_epochs} epochs, "
                 f"{self.device}, {self.conc} at a time; objective val kNN top-1)")
        finished = _finished_trials(self.tracker, s.search_id, "search") if resume else ({}, {})
        return self._fit(s.search_id, title, p.num_samples, make, finished)

    def confirm(self, exp_dir: Path, jobs: list[dict], resume: bool, note) -> tuple[bool, bool]:
        from ray import tune

        s = self.p.settings
        key = s.search_id + CONFIRM_SUFFIX

        def make():
            if resume and tune.Tuner.can_restore(str(exp_dir)):
                return tune.Tuner.restore(str(exp_dir), trainable=self.trainable, resume_unfinished=True,
                                          resume_errored=False, restart_errored=False), True
            return tune.Tuner(
                self.trainable, param_space={"job": tune.grid_search(jobs)},
                tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=self.conc, reuse_actors=True),
                run_config=self._run_config(key, key)), False

        names = sorted({j["name"] for j in jobs})
        note(f"confirmation: {', '.join(names)} x seeds {sorted({j['seed'] for j in jobs})} "
             f"(the test split is read from here on)")
        title = f"confirmation {s.search_id}  ({len(jobs)} runs, {self.p.max_epochs} epochs, fresh seeds)"
        # always: a search continued from another driver re-confirms the same jobs by adoption
        finished = _finished_trials(self.tracker, s.search_id, "confirmation")
        return self._fit(key, title, len(jobs), make, finished)


def baseline_point(space: SearchSpace, ctx, name: str) -> dict | None:
    """What baseline ``name`` runs with as a point of ``space`` (None when it is not one)."""
    recipe = ctx.recipe_for({"baseline": name})[0].to_dict()
    if space.outside(recipe):
        return None
    from .space import _get_dotted

    return {k: _get_dotted(recipe, k) for k in space.params}


def _finished_trials(tracker: Tracker, search_id: str, stage: str) -> tuple[dict, dict]:
    """Final metrics of the trials of ``stage`` already completed in MLflow, by trial id and by point."""
    by_id, by_point = {}, {}
    for t in summarize(tracker, search_id):
        if t.stage == stage and t.status == "completed" and t.objective is not None:
            final = {k: v for k, v in t.metrics.items() if isinstance(v, float) and math.isfinite(v)}
            by_id[t.trial_id] = final
            if t.point:
                by_point[t.point] = final
    return by_id, by_point


def _finish_parent(tracker: Tracker, o: SearchOutcome) -> None:
    counts: dict[str, int] = {}
    for t in o.trials:
        key = f"{'confirm' if t.stage == 'confirmation' else 'trials'}_{t.status}"
        counts[key] = counts.get(key, 0) + 1
    metrics: dict[str, Any] = dict(counts)
    metrics.update(search_wall_s=o.wall_s, tune_wall_s=o.tune_s, search_stage_s=o.search_s,
                   confirm_stage_s=o.confirm_s, trials_train_s=o.trials_train_s, overhead_ratio=o.overhead)
    if o.best is not None:
        metrics["best_search_val_knn_top1"] = o.best.objective
    tags: dict[str, Any] = {"rs.status": o.status, "rs.stage": o.stage if o.status == "interrupted" else "finished"}
    v = o.verdict
    if v is not None:
        metrics.update(floor_test_probe_top1=v.floor.mean, floor_test_probe_top1_std=v.floor.std,
                       winner_test_probe_top1=v.score.mean, winner_test_probe_top1_std=v.score.std)
        for r in o.confirmation:
            for m in ("test_probe_top1", "test_knn_top1", "val_knn_top1"):
                sm = r.summary(m, v.seeds)
                if sm is not None:
                    metrics[f"confirm_{r.name}_{m}"] = sm.mean
                    metrics[f"confirm_{r.name}_{m}_std"] = sm.std
        for name, iv in v.lift.items():
            metrics.update({f"lift_{name}": iv.mean, f"lift_{name}_low": iv.low, f"lift_{name}_high": iv.high})
        tags.update({"rs.verdict": v.verdict, "rs.verdict_line": v.line, "rs.winner": v.winner,
                     "rs.winner_run_id": _winner_run(o.trials, v.winner)})
        tracker.log_dict(o.parent_run_id, v.to_dict(), "verdict.json")
    tracker.log_metrics(o.parent_run_id, metrics)
    if o.best is not None:
        tags.update({"rs.best_trial_id": o.best.trial_id, "rs.best_run_id": o.best.run_id})
    if o.promotion is not None:
        tags.update({"rs.promoted": str(o.promotion.promoted).lower(), "rs.promotion": o.promotion.reason})
    elif o.promotion_error:
        tags.update({"rs.promoted": "false", "rs.promotion": o.promotion_error})
    tracker.set_tags(o.parent_run_id, tags)
    tracker.log_dict(o.parent_run_id, [dataclasses.asdict(t) for t in o.trials], "leaderboard.json")
    tracker.terminate(o.parent_run_id, "KILLED" if o.status == "interrupted" else "FINISHED")
