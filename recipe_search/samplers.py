"""The Optuna samplers a search can name (``--sampler``): name -> :class:`Sampler`.

A sampler entry says what the search's sampled (non-baseline) trials are called in MLflow,
the progress view and the report (:attr:`Sampler.label`), how its Optuna sampler is built
from the search's seed, startup-trial count and concurrency (:meth:`Sampler.build`), and
whether it is model-based (it learns from the results it is told: TPE) or a control that
ignores them (random). A new sampler is one entry in :data:`SAMPLERS`.

>>> get_sampler("random").model_based, label(None)
(False, 'tpe')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import SearchError


def _tpe(seed: int, n_startup: int, constant_liar: bool) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, constant_liar=constant_liar)


def _tpe_multivariate(seed: int, n_startup: int, constant_liar: bool) -> Any:
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, constant_liar=constant_liar,
                                          multivariate=True, group=True)


def _local(seed: int, n_startup: int, constant_liar: bool) -> Any:
    from .incumbent import IncumbentSampler

    return IncumbentSampler(_tpe(seed, n_startup, constant_liar), share=0.5, radius=0.1, seed=seed + 1)


def _gp(seed: int, n_startup: int, constant_liar: bool) -> Any:
    import optuna

    # Gaussian-process BO (Optuna's own, on torch); parameters outside the space every trial shares
    # (a method's own, drawn only with it) come from a seeded random sampler
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup, warn_independent_sampling=False,
                                     independent_sampler=optuna.samplers.RandomSampler(seed=seed))


def _random(seed: int, n_startup: int, constant_liar: bool) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@dataclass(frozen=True)
class Sampler:
    name: str  # what --sampler names it
    label: str  # what its sampled trials are called (MLflow run names, progress view, report)
    model_based: bool  # learns from the results it is told (False: a control that ignores them)
    make: Callable[[int, int, bool], Any]  # (seed, n_startup, constant_liar) -> optuna.samplers.BaseSampler
    help: str = ""  # the CLI's note beside the name

    def build(self, seed: int, n_startup: int, constant_liar: bool) -> Any:
        """The Optuna sampler: ``n_startup`` random trials first and ``constant_liar`` (for trials
        running at once) apply to a model-based sampler; a model-free one takes only ``seed``."""
        return self.make(seed, n_startup, constant_liar)


SAMPLERS: dict[str, Sampler] = {
    "tpe": Sampler("tpe", "tpe", model_based=True, make=_tpe),
    "tpe-mv": Sampler("tpe-mv", "tpe-mv", model_based=True, make=_tpe_multivariate,
                      help="multivariate TPE: the parameters modelled jointly, grouped by method"),
    "local": Sampler("local", "local", model_based=True, make=_local,
                     help="half the trials near the incumbent (baselines, warm start and trials so far), half TPE's"),
    "gp": Sampler("gp", "gp", model_based=True, make=_gp,
                  help="Gaussian-process Bayesian optimisation (Optuna's GPSampler)"),
    "random": Sampler("random", "random", model_based=False, make=_random, help="a random-search control"),
}
DEFAULT = "tpe"  # the CLI's default, and what a search recorded before --sampler existed used
DEFAULT_LABEL = SAMPLERS[DEFAULT].label


def get_sampler(name: str) -> Sampler:
    """The registered sampler ``name``; a :class:`SearchError` naming the choices otherwise."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise SearchError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}") from None


def label(name: str | None) -> str:
    """What the sampled trials of a search with sampler ``name`` are called (``None``: a record
    without the sampler, from before ``--sampler``: the default's)."""
    s = SAMPLERS.get(name or DEFAULT)
    return s.label if s is not None else str(name)  # a name this version does not know: as recorded


def cli_help() -> str:
    """``tpe | tpe-mv (...) | local (...) | random (a random-search control)``."""
    return " | ".join(f"{s.name} ({s.help})" if s.help else s.name for s in SAMPLERS.values())
