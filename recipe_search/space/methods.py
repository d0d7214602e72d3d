"""Parameters that apply only when a method is chosen: a space's ``methods:`` block.

A space may sample ``method`` like any choice field and give each method its own parameters
and fixed values, which apply only to the trials that chose it::

    method: {type: choice, values: [mocov2, simclr]}
    methods:
      mocov2:                                   # only MoCo-v2 trials sample these
        queue_size: {type: choice, values: [1024, 2048, 4096]}
        key_momentum: {type: uniform, low: 0.9, high: 0.999}
      simclr:
        temperature: {type: loguniform, low: 0.1, high: 1.0}

A field written under ``methods.<name>`` leaves the top level (it applies to that method only);
the same field may be sampled under several methods only with one range (Optuna knows a parameter
by its name). A field that only some methods read (``trainer.methods.METHODS[name].fields``, e.g.
MoCo-v2's ``queue_size``) may not be sampled at the top level of a space that samples ``method``,
nor under another method. Sampling is define-by-run (:func:`define_by_run`): Optuna samples the
top-level parameters, then those of the method it drew, so TPE models each method's parameters on
the trials that chose that method. A space without ``methods:`` is sampled exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from trainer.methods import METHODS
from trainer.recipe import DEFAULT_METHOD

from ..errors import SpaceError

BLOCK_KEY = "methods"


@dataclass(frozen=True)
class MethodBlock:
    """What applies when one method is chosen: its sampled parameters and fixed values."""

    params: dict = field(default_factory=dict)  # field -> space.Param
    fixed: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**{k: p.to_dict() for k, p in self.params.items()}, **self.fixed}


def method_choices(params: dict, fixed: dict) -> tuple[str, ...]:
    """The methods a space's trials can run: the ``method`` parameter's values, else the fixed one."""
    if "method" in params:
        return tuple(params["method"].values)
    return (fixed.get("method", DEFAULT_METHOD),)


def method_of(values: dict, fixed: dict) -> str:
    """The method of ``values`` (a sampled point or a recipe dict), else the space's fixed one."""
    return values.get("method") or fixed.get("method") or DEFAULT_METHOD


def parse_methods(block: Any, params: dict, fixed: dict, inherited: dict, source: str,
                  entry: Callable[[str, Any], tuple[str, Any]]) -> dict[str, MethodBlock]:
    """The ``methods:`` mapping of one file over ``inherited`` (its base's blocks; a method named
    here replaces its inherited block). Fields it names leave ``params`` / ``fixed`` (changed in
    place). ``entry(field, spec)`` is the space's check of one key: ``("param", Param)`` or
    ``("fixed", value)``, raising :class:`SpaceError` naming the key."""
    blocks = dict(inherited)
    if block is not None:
        if not isinstance(block, dict):
            raise SpaceError(f"{source}: {BLOCK_KEY} must map method names to their parameters, got {block!r}")
        for name, spec in block.items():
            blocks[name] = _block(name, spec, source, entry)
    choices = method_choices(params, fixed)
    for name, b in blocks.items():
        if name not in choices:
            raise SpaceError(f"{source}: {BLOCK_KEY}.{name}: the space's method never takes {name!r} "
                             f"(it takes {', '.join(choices)}); add it to method's values or drop the block")
        for key in (*b.params, *b.fixed):
            params.pop(key, None)
            fixed.pop(key, None)
    _check_ranges(blocks, source)
    if len(choices) > 1:
        _check_top_level(params, choices, source)
    return blocks


def _block(name: Any, spec: Any, source: str, entry) -> MethodBlock:
    if name not in METHODS:
        raise SpaceError(f"{source}: {BLOCK_KEY}.{name}: unknown method; allowed: {', '.join(METHODS)}")
    if spec is None:
        return MethodBlock()
    if not isinstance(spec, dict):
        raise SpaceError(f"{source}: {BLOCK_KEY}.{name} must map recipe fields to values or parameters, got {spec!r}")
    params, fixed = {}, {}
    for key, value in spec.items():
        where = f"{BLOCK_KEY}.{name}.{key}"
        if key in (BLOCK_KEY, "method", "extends", "description") or str(key).startswith("distill"):
            raise SpaceError(f"{source}: {where} cannot be set per method (only plain recipe fields can)")
        owners = [m for m, cls in METHODS.items() if key in cls.fields]
        if owners and name not in owners:
            raise SpaceError(f"{source}: {where}: {key} applies to {', '.join(owners)} only, not {name}")
        try:
            kind, checked = entry(key, value)
        except SpaceError as e:
            raise SpaceError(f"{source}: {BLOCK_KEY}.{name}: {str(e).removeprefix(f'{source}: ')}") from None
        (params if kind == "param" else fixed)[key] = checked
    return MethodBlock(params, fixed)


def _check_ranges(blocks: dict[str, MethodBlock], source: str) -> None:
    seen: dict[str, tuple[str, Any]] = {}
    for name, b in blocks.items():
        for key, p in b.params.items():
            if key in seen and seen[key][1] != p:
                raise SpaceError(f"{source}: {BLOCK_KEY}.{name}.{key} is sampled under {BLOCK_KEY}.{seen[key][0]} "
                                 f"with another range; a field sampled under several methods needs one range")
            seen.setdefault(key, (name, p))


def _check_top_level(params: dict, choices: tuple[str, ...], source: str) -> None:
    for key in params:
        owners = [m for m in choices if key in METHODS[m].fields]
        if owners and len(owners) < len(choices):
            raise SpaceError(f"{source}: {key} applies to {', '.join(owners)} only: sample it under "
                             f"{BLOCK_KEY}.{owners[0]} so that the other methods' trials do not")


def suggest(trial, name: str, p) -> Any:
    """Sample parameter ``p`` (a ``space.Param``) on an Optuna ``trial`` under ``name``."""
    if p.kind == "choice":
        return trial.suggest_categorical(name, list(p.values))
    if p.kind == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(name, float(p.low), float(p.high), log=p.kind == "loguniform")


@dataclass(frozen=True)
class DefineByRun:
    """The define-by-run function for Ray's ``OptunaSearch(space=...)`` (picklable: the searcher is
    checkpointed): the top-level parameters, then the chosen method's (fixed values are applied when
    the trial's recipe is composed)."""

    params: dict
    fixed: dict
    blocks: dict

    def __call__(self, trial) -> None:
        for name, p in self.params.items():
            suggest(trial, name, p)
        block = self.blocks.get(method_of(trial.params, self.fixed))
        for name, p in (block.params if block else {}).items():
            suggest(trial, name, p)
        return None


def define_by_run(params: dict, fixed: dict, blocks: dict[str, MethodBlock]) -> DefineByRun:
    """:class:`DefineByRun` over a space's top-level parameters, fixed values and method blocks."""
    return DefineByRun(dict(params), dict(fixed), dict(blocks))
