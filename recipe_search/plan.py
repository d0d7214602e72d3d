"""The plan of a search, resolved from its settings before Ray starts.

:class:`~recipe_search.settings.SearchSettings` (declared in :mod:`recipe_search.settings`,
re-exported here) is what the user asked for. :func:`plan` validates it against the budget, the
space and the data and returns a :class:`Plan`: every user error (bad recipe, space, data,
option) surfaces here, before anything runs. :func:`prepare_data` then fits the budget's
per-class sizes to the data and decodes the proxy once, in the driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import config
from .baselines import baselines_for
from .budget import Budget, get_budget
from .errors import SearchError, SpaceError
from .paths import absolute_uri, resolve_settings
from .study_storage import check_study_storage_url
from .samplers import get_sampler
from .verdict.sequential import check_looks
from .settings import DEFAULT_EXPERIMENT, SearchSettings
from .space import SearchSpace, load_space

__all__ = ["DEFAULT_EXPERIMENT", "Plan", "SearchSettings", "plan", "prepare_data"]

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
    settings.check()  # every bound of recipe_search/settings.py, by flag
    looks = tuple(budget.report_looks if settings.report_looks is None else settings.report_looks)
    try:
        check_looks(looks)
    except (TypeError, ValueError):
        raise SearchError(f"--report-looks must be increasing seed counts starting at >= 2 (e.g. 3,5,8), "
                          f"got {settings.report_looks!r}") from None
    get_sampler(settings.sampler)  # a SearchError naming the choices if unknown
    if settings.study_storage is not None:
        check_study_storage_url(settings.study_storage)
    if settings.warm_start_file is not None:
        check_warm_start_file(settings)
    space = load_space(settings.space, settings.backbone).with_fixed(budget.fixed)
    if not space.params:
        raise SpaceError(f"{space.sources[-1] if space.sources else '<space>'}: the space has no sampled "
                         "parameters (every field is fixed); nothing to search")
    num_samples = settings.num_samples or budget.num_samples
    n_baselines = len(baselines_for(space))
    if num_samples < n_baselines:
        raise SearchError(f"--num-samples must be >= {n_baselines} (the baselines run first), "
                          f"got {num_samples}")
    data = budget.data_spec(settings.dataset, settings.data, download=settings.download)
    return Plan(settings=settings, budget=budget, space=space, data=data, num_samples=num_samples,
                max_epochs=settings.max_epochs or budget.max_epochs,
                checkpoint_every=budget.checkpoint_every if settings.checkpoint_every is None
                else settings.checkpoint_every,
                tracking_uri=settings.tracking_uri or absolute_uri(config.default_tracking_uri()),
                confirm_k=budget.confirm_k if settings.confirm_k is None else settings.confirm_k,
                confirm_seeds=budget.confirm_seeds if settings.confirm_seeds is None else settings.confirm_seeds,
                report_looks=looks)


def check_warm_start_file(settings: SearchSettings) -> None:
    """--warm-start-file: a readable results file holding the dataset the warm start reads, and a warm
    start to read it (a SearchError naming the flag otherwise)."""
    from . import known_results

    if not settings.warm_start:
        raise SearchError("--warm-start-file and --no-warm-start contradict each other: drop one")
    known = known_results.read(settings.warm_start_file)
    source = settings.warm_start_from or settings.dataset
    if not known.datasets():
        raise SearchError(f"--warm-start-file: {settings.warm_start_file} holds no results (its store had none on "
                          "the dataset exported): nothing to start from; drop the option")
    if source not in known.datasets():
        raise SearchError(f"--warm-start-file: {settings.warm_start_file} holds results on "
                          f"{', '.join(known.datasets())}, none on {source} (the dataset the warm start reads); "
                          f"pass --warm-start-from {known.datasets()[0]} to start from them")


def prepare_data(plan_: Plan):
    """Fit the budget's per-class sizes to what the data holds (down to the trainer's minimum;
    ``plan_.data`` and ``plan_.data_notes`` say what was used), then decode (and cache) the
    proxy once, in this process: a bad --data fails here, before Ray starts, and trials
    never race to build the cache. Returns the ``ProxyData``."""
    from trainer.data import fit_spec, load_proxy

    fitted, notes = fit_spec(plan_.data, plan_.budget.image_size, plan_.settings.seed)
    plan_.data, plan_.data_notes = fitted, list(notes)
    return load_proxy(plan_.data, plan_.budget.image_size, plan_.settings.seed)
