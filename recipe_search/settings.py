"""A search's settings, declared once.

:class:`SearchSettings` is what the user asked for. Each field carries its option (help, bounds,
command-line form) in its metadata, and everything else is derived from that one declaration:

* the ``recipe-search run`` options (:func:`cli_parameters`, read by ``cli.py``);
* the checks of the values (:meth:`SearchSettings.check`, called by ``plan()``): one message
  shape, one error type (:class:`~recipe_search.errors.SearchError`), the flag named;
* the command line of a search started by the API's job manager (:meth:`SearchSettings.to_argv`);
* what MLflow records (:meth:`SearchSettings.public_dict`, the parent run's ``settings.json``)
  and ``--resume`` restores (:meth:`SearchSettings.from_dict`).

Adding an option is adding a field here; a test checks that the command line, the argv and the
settings round-trip.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .errors import SearchError
from .study_storage import redact_url
from .samplers import DEFAULT as DEFAULT_SAMPLER, cli_help as sampler_help

# Each retry restarts from the last epoch checkpoint, so it costs at most the epochs since it
# (plus start-up). Two retries ride out a lost node and one more loss during the retry; a trial
# that dies a third time is more likely killed by itself (memory) than by bad luck.
DEFAULT_MAX_RETRIES = 2

DEFAULT_EXPERIMENT = "recipe-search"


@dataclass(frozen=True)
class Opt:
    """A setting's option: its help, its bounds and its command-line form."""

    help: str
    low: float | None = None  # the smallest allowed value (inclusive)
    above: float | None = None  # values must be greater than this
    integer: bool = False  # an int option (bounds say "an integer >= ...")
    flag: str | None = None  # a boolean's switch ("--force", "--early-stopping/--no-early-stopping")
    parse: Callable[[str], Any] | None = None  # command-line text -> value (None: typer converts)
    show: Callable[[Any], str] = str  # value -> command-line text
    cli: bool = True  # a `recipe-search run` option (the backbone is repeated there: its own option)

    def switch(self, name: str) -> str:
        return self.flag or f"--{name.replace('_', '-')}"


def setting(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"opt": Opt(help, **kw)})


def _looks(text: str | None) -> list[int] | None:
    """``--report-looks 3,5,8`` as a list (check() tests the sequence; a non-integer fails here)."""
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SearchError(f"--report-looks must be comma-separated seed counts (e.g. 3,5,8), got {text!r}") from None


@dataclass
class SearchSettings:
    backbone: str = field(metadata={"opt": Opt("timm backbone; repeat for several", cli=False)})
    space: str | None = setting(None, "search-space YAML (default: search_spaces/<backbone>.yaml or default.yaml)")
    dataset: str = setting("cifar10", "cifar10 | cifar100 | stl10 | imagefolder | synthetic")
    data: str | None = setting(None, "data root: folder or .tar.gz (default $RECIPE_SEARCH_DATA)")
    download: bool = setting(False, "let torchvision download the dataset", flag="--download")
    budget: str = setting("smoke", "smoke (CPU plumbing check, minutes) | cpu (CPU search that learns, ~40 min) | "
                                   "proxy (GPU) | tiny (tests)")
    num_samples: int | None = setting(None, "trials, baselines included", low=1, integer=True)
    max_epochs: int | None = setting(None, "epochs per trial (ASHA's max_t)", low=1, integer=True)
    time_budget: float | None = setting(None, "stop starting/running trials after this many seconds", above=0)
    gpus_per_trial: float | None = setting(None, "fractional GPUs per trial, e.g. 0.25 (0: CPU)", low=0)
    cpus_per_trial: float | None = setting(None, "CPUs per trial", above=0)
    max_concurrent: int | None = setting(None, "trials running at once", low=1, integer=True)
    tracking_uri: str | None = setting(None, "MLflow tracking URI (default: SQLite in $RECIPE_SEARCH_HOME)")
    ray_address: str | None = setting(None, "join this Ray cluster instead of starting one")
    experiment: str = setting(DEFAULT_EXPERIMENT, "MLflow experiment of the search runs")
    seed: int = setting(0, "seed of the sampler and of every trial", low=0, integer=True)
    sampler_seed: int | None = setting(
        None, "the sampler's own seed (default: --seed); the trials and the confirmation train on --seed's seeds "
              "either way, so searches that differ only in it draw other recipes on the same training seeds",
        low=0, integer=True)
    force: bool = setting(False, "promote the best trial even if not better", flag="--force")
    search_id: str | None = setting(None, "name the search (or pick the one to --resume)")
    num_cpus: int | None = setting(None, "CPUs of the local Ray cluster (default: all)", low=1, integer=True)
    study_storage: str | None = setting(
        None, "SQLAlchemy URL of an Optuna RDB storage for the study, e.g. postgresql://user:pass@host/db "
              "(--resume --search-id ID then works from another driver); default: kept in Tune's state")
    checkpoint_every: int | None = setting(
        None, "epochs between the trial checkpoints written to Tune's storage; 0: none until the trial ends "
              "(a killed search re-runs its running trials); default: the budget's (proxy 5, others 1)",
        low=0, integer=True)
    max_retries: int = setting(
        DEFAULT_MAX_RETRIES, "times a trial lost to a system failure (its node lost, its worker killed) is retried "
                             "from its last checkpoint; an error of the recipe itself is never retried",
        low=0, integer=True)
    train_per_class: int | None = setting(None, "proxy train images per class (default: the budget's; lowered "
                                                "to what the data has)", low=1, integer=True)
    val_per_class: int | None = setting(None, "val images per class, held out of train (selection)",
                                        low=1, integer=True)
    test_per_class: int | None = setting(None, "test images per class (read only by confirmation)",
                                         low=1, integer=True)
    confirm_k: int | None = setting(None, "finalists confirmed beside the baselines (default: the budget's)",
                                    low=0, integer=True)
    confirm_seeds: int | None = setting(None, "select phase: fresh seeds per confirmed recipe, >= 2, val only "
                                              "(default: the budget's)", low=2, integer=True)
    report_looks: list[int] | None = setting(
        None, "report phase: seed counts at which the verdict is tested, e.g. 3,5,8 (default: the budget's)",
        parse=_looks, show=lambda v: ",".join(map(str, v)))
    yes: bool = setting(False, "run a GPU budget (proxy) on the CPU anyway", flag="--yes")
    sampler: str = setting(DEFAULT_SAMPLER, f"Optuna sampler: {sampler_help()}")
    early_stopping: bool = setting(True, "ASHA stops poor trials early on the validation objective",
                                   flag="--early-stopping/--no-early-stopping")
    race: bool = setting(
        False, "select phase as a race: seeds in rounds of 1, 2, 4, ...; a finalist whose mean val over the "
               "seeds so far is below the best baseline's stops (the baselines run every seed)", flag="--race")
    reuse_confirmations: bool = setting(
        True, "a confirmation run or search-stage baseline an earlier search of the experiment finished (same "
              "data, budget, recipe, seed and version) is reported again, not re-trained",
        flag="--reuse-confirmations/--no-reuse-confirmations")
    warm_start: bool = setting(
        True, "start the sampler from other backbones' results in the store on this dataset (their served "
              "recipes and best trials, run first and to the end; at most a third of the sampled trials)",
        flag="--warm-start/--no-warm-start")
    warm_start_from: str | None = setting(
        None, "the dataset whose results the warm start reads (default: this search's --dataset)")
    warm_start_file: str | None = setting(
        None, "read the warm start's results from this file (written by `recipe-search export`: another store's "
              "served recipes and finished trials) instead of the store")

    # -- derived forms ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def public_dict(self) -> dict:
        """to_dict() with the passwords of --study-storage and --tracking-uri masked (for MLflow)."""
        d = self.to_dict()
        for name in ("study_storage", "tracking_uri"):
            if d.get(name):
                d[name] = redact_url(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SearchSettings":
        """Settings saved by any version (unknown keys, e.g. a retired option, are dropped)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_argv(self) -> list[str]:
        """The ``recipe-search run`` options that give these settings (defaults left out)."""
        argv = ["--backbone", self.backbone]
        for f, opt in options():
            value = getattr(self, f.name)
            if not opt.cli or value == f.default:
                continue
            if isinstance(value, bool):
                on, _, off = opt.switch(f.name).partition("/")
                argv.append(on if value else off)
            else:
                argv += [opt.switch(f.name), opt.show(value)]
        return argv

    def check(self) -> None:
        """Every bounded value within its bounds: a :class:`SearchError` naming the flag."""
        for f, opt in options():
            value = getattr(self, f.name)
            if value is None or (opt.low is None and opt.above is None):
                continue
            flag = opt.switch(f.name)
            if opt.integer and (isinstance(value, bool) or not isinstance(value, int)):
                raise SearchError(f"{flag} must be an integer, got {value!r}")
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SearchError(f"{flag} must be a finite number, got {value!r}")
            if opt.low is not None and value < opt.low:
                raise SearchError(f"{flag} must be >= {opt.low:g}, got {value!r}")
            if opt.above is not None and value <= opt.above:
                raise SearchError(f"{flag} must be > {opt.above:g}, got {value!r}")


def options() -> list[tuple[dataclasses.Field, Opt]]:
    """The settings' fields with their options, in declaration order."""
    return [(f, f.metadata["opt"]) for f in dataclasses.fields(SearchSettings)]


def cli_parameters() -> list[inspect.Parameter]:
    """The ``recipe-search run`` parameters of every setting (typer options), for a command
    whose signature is built from them (see ``cli.run``)."""
    import typer

    params = []
    for f, opt in options():
        if not opt.cli:
            continue
        decls = [opt.flag] if opt.flag else []
        annotation: Any = Optional[str] if opt.parse else _annotation(f)
        default = typer.Option(f.default, *decls, help=opt.help)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=annotation))
    return params


def _annotation(f: dataclasses.Field) -> Any:
    kinds = {"str": str, "int": int, "float": float, "bool": bool}
    text = str(f.type).replace(" ", "")
    base, optional = text.split("|")[0], text.endswith("|None")
    t = kinds[base]
    return Optional[t] if optional else t


def from_cli(backbone: str, values: dict[str, Any]) -> SearchSettings:
    """The settings of one backbone from the ``run`` command's option values."""
    kw = {}
    for f, opt in options():
        if opt.cli:
            v = values[f.name]
            kw[f.name] = opt.parse(v) if opt.parse and v is not None else v
    return SearchSettings(backbone=backbone, **kw)
