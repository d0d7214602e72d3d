"""A search's settings, and the plan resolved from them before Ray starts.

:class:`SearchSettings` is what the user asked for (the CLI's options; saved in the search's
meta file and restored by ``--resume``). :func:`plan` validates it against the budget, the
space and the data and returns a :class:`Plan`: every user error (bad recipe, space, data,
option) surfaces here, before anything runs. :func:`prepare_data` then fits the budget's
per-class sizes to the data and decodes the proxy once, in the driver.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from . import config
from .baselines import baselines_for
from .budget import Budget, get_budget
from .errors import SearchError, SpaceError
from .paths import absolute_uri, resolve_settings
from .runtime import check_study_storage_url, redact_url
from .samplers import DEFAULT as DEFAULT_SAMPLER, get_sampler
from .sequential import check_looks
from .space import SearchSpace, load_space

DEFAULT_EXPERIMENT = "recipe-search"


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
    confirm_seeds: int | None = None  # select phase: fresh seeds per confirmed recipe (None: the budget's)
    report_looks: list[int] | None = None  # report phase: seed counts of its looks (None: the budget's)
    yes: bool = False  # run a GPU budget on the CPU anyway
    sampler: str = DEFAULT_SAMPLER  # a name in samplers.SAMPLERS: tpe (Optuna TPESampler) | random (RandomSampler)
    early_stopping: bool = True  # ASHA on the validation objective (False: every trial runs all epochs)
    reuse_confirmations: bool = True  # confirmation jobs an earlier search finished are not re-trained (reuse.py)

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
        """Settings saved by any version (unknown keys, e.g. a retired option, are dropped)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


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
    report_looks: tuple[int, ...]
    data_notes: list = field(default_factory=list)  # what prepare_data had to shrink

    @property
    def first_rung(self) -> int | None:
        """ASHA's first rung (the budget's grace period, at most the epochs); None without early stopping."""
        return min(self.budget.grace_period, self.max_epochs) if self.settings.early_stopping else None


def plan(settings: SearchSettings) -> Plan:
    """Validate settings; raise RecipeError / DataError / SpaceError / SearchError."""
    from trainer.recipe import check_backbone

    check_backbone(settings.backbone)
    resolve_settings(settings)  # trials run in other directories (and nodes): every path absolute
    budget = get_budget(settings.budget).with_sizes(train_per_class=settings.train_per_class,
                                                     val_per_class=settings.val_per_class,
                                                     test_per_class=settings.test_per_class)
    for name, low in (("num_samples", 1), ("max_epochs", 1), ("max_concurrent", 1), ("confirm_k", 0),
                      ("confirm_seeds", 2)):
        v = getattr(settings, name)
        if v is not None and (not isinstance(v, int) or v < low):
            raise SearchError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {v!r}")
    looks = tuple(budget.report_looks if settings.report_looks is None else settings.report_looks)
    try:
        check_looks(looks)
    except (TypeError, ValueError):
        raise SearchError(f"--report-looks must be increasing seed counts starting at >= 2 (e.g. 3,5,8), "
                          f"got {settings.report_looks!r}") from None
    for name in ("gpus_per_trial", "cpus_per_trial", "time_budget"):
        v = getattr(settings, name)
        if v is not None and (not math.isfinite(v) or v < 0 or (v == 0 and name != "gpus_per_trial")):
            op = ">= 0" if name == "gpus_per_trial" else "> 0"
            raise SearchError(f"--{name.replace('_', '-')} must be {op}, got {v!r}")
    get_sampler(settings.sampler)  # a SearchError naming the choices if unknown
    if settings.study_storage is not None:
        check_study_storage_url(settings.study_storage)
    space = load_space(settings.space, settings.backbone).with_fixed(budget.fixed)
    if not space.params:
        raise SpaceError(f"{space.sources[-1] if space.sources else '<space>'}: the space has no sampled "
                         "parameters (every field is fixed); nothing to search")
    num_samples = settings.num_samples or budget.num_samples
    n_baselines = len(baselines_for(space))
    if num_samples < n_baselines:
        raise SearchError(f"--num-samples must be >= {n_baselines} (the baselines run first), "
                          f"got {num_samples}")
    if settings.checkpoint_every is not None and settings.checkpoint_every < 0:
        raise SearchError(f"--checkpoint-every must be >= 0 (epochs; 0: no mid-trial checkpoints), "
                          f"got {settings.checkpoint_every}")
    data = budget.data_spec(settings.dataset, settings.data, download=settings.download)
    return Plan(settings=settings, budget=budget, space=space, data=data, num_samples=num_samples,
                max_epochs=settings.max_epochs or budget.max_epochs,
                checkpoint_every=budget.checkpoint_every if settings.checkpoint_every is None
                else settings.checkpoint_every,
                tracking_uri=settings.tracking_uri or absolute_uri(config.default_tracking_uri()),
                confirm_k=budget.confirm_k if settings.confirm_k is None else settings.confirm_k,
                confirm_seeds=budget.confirm_seeds if settings.confirm_seeds is None else settings.confirm_seeds,
                report_looks=looks)


def prepare_data(plan_: Plan):
    """Fit the budget's per-class sizes to what the data holds (down to the trainer's minimum;
    ``plan_.data`` and ``plan_.data_notes`` say what was used), then decode (and cache) the
    proxy once, in this process: a bad --data fails here, before Ray starts, and trials
    never race to build the cache. Returns the ``ProxyData``."""
    from trainer.data import fit_spec, load_proxy

    fitted, notes = fit_spec(plan_.data, plan_.budget.image_size, plan_.settings.seed)
    plan_.data, plan_.data_notes = fitted, list(notes)
    return load_proxy(plan_.data, plan_.budget.image_size, plan_.settings.seed)
