"""Search spaces: YAML files over :class:`trainer.recipe.Recipe` fields.

A space file maps recipe field names to either a plain value (the field is fixed)
or a parameter to sample::

    lr: {type: loguniform, low: 0.01, high: 1.0}
    smoothing: {type: uniform, low: 0.0, high: 0.3}
    smoothing_k: {type: int, low: 0, high: 64}          # optional: log: true
    batch_size: {type: choice, values: [128, 256]}
    symmetric: true

``method`` picks the self-supervised method (``trainer.methods``; mocov2 by default); a space
that samples it gives each method its own parameters in a ``methods:`` block
(:mod:`recipe_search.space.methods`). ``extends: default`` (or a path relative to the file) starts from another space;
the keys of the extending file replace the base's. ``description:`` is free text.
``backbone``, ``epochs``, ``image_size`` and ``seed`` are set by the command line
and the budget, never by a space. ``distill`` is fixed (a teacher section as in a
recipe, or null); with a teacher fixed, ``distill.weight`` and ``distill.views`` may
be sampled or fixed like any field::

    distill: {teacher_backbone: resnet18, teacher_recipe: {epochs: 200, lr: 0.06}}
    distill.weight: {type: loguniform, low: 0.1, high: 10.0}

Every mistake raises :class:`SpaceError` naming the file and the key path, e.g.
``spaces/bad.yaml: lr.low must be > 0``.

>>> space = parse_space({"lr": {"type": "loguniform", "low": 0.01, "high": 1.0}, "symmetric": False})
>>> sorted(space.params), space.fixed
(['lr'], {'symmetric': False})
>>> parse_space({"lr": {"type": "loguniform", "low": 0, "high": 1}})
Traceback (most recent call last):
...
recipe_search.errors.SpaceError: <space>: lr.low must be > 0 for a loguniform parameter, got 0
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import RecipeError
from trainer.recipe import Distill, Recipe, check_field, coerce_value

from ..config import REPO_ROOT
from ..errors import SpaceError
from .param import Param, fmt as _fmt
from .methods import BLOCK_KEY, MethodBlock, define_by_run, method_choices, method_of, parse_methods

SPACES_ENV = "RECIPE_SEARCH_SPACES"
KINDS = ("loguniform", "uniform", "int", "choice")
META_KEYS = ("extends", "description")
# fields a space may not set, and what sets them instead
NOT_SEARCHABLE = {
    "backbone": "--backbone",
    "epochs": "--max-epochs / --budget",
    "image_size": "--budget",
    "seed": "--seed",
}
_KEYS = {
    "loguniform": ("type", "low", "high"),
    "uniform": ("type", "low", "high"),
    "int": ("type", "low", "high", "log"),
    "choice": ("type", "values"),
}
_FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}
# fields of the distill section a space may sample (given a fixed teacher): dotted names
SAMPLED_DISTILL = ("weight", "views")
_FIELDS.update({f"distill.{f.name}": f for f in dataclasses.fields(Distill) if f.name in SAMPLED_DISTILL})


def spaces_dir() -> Path:
    """``$RECIPE_SEARCH_SPACES``, else the repository's ``search_spaces/``."""
    env = os.environ.get(SPACES_ENV)
    if env:
        return Path(env)
    return REPO_ROOT / "search_spaces"


# --------------------------------------------------------------------------- types


@dataclass(frozen=True)
class SearchSpace:
    """Sampled parameters and fixed values over recipe fields."""

    params: dict[str, Param] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    description: str = ""
    methods: dict[str, MethodBlock] = field(default_factory=dict)  # what applies only to one method

    def block(self, values: dict) -> MethodBlock:
        """What applies to the method of ``values`` (a point or a recipe dict): its ``methods:`` block."""
        return self.methods.get(method_of(values, self.fixed)) or MethodBlock()

    def method_choices(self) -> tuple[str, ...]:
        """The methods this space's trials can run (``method``'s values, else the fixed one)."""
        return method_choices(self.params, self.fixed)

    def fixed_for(self, values: dict) -> dict:
        """The fixed values for a trial running ``values``: the space's and its method's."""
        return {**self.fixed, **self.block(values).fixed}

    def sampler_space(self):
        """What Ray's ``OptunaSearch(space=...)`` samples: :meth:`optuna_space` for a space without
        ``methods:``; else a define-by-run function (each method's parameters only when it is drawn)."""
        if not self.methods:
            return self.optuna_space()
        return define_by_run(self.params, self.fixed, self.methods)

    @property
    def name(self) -> str:
        return Path(self.sources[-1]).stem if self.sources else "<inline>"

    def optuna_space(self, values: dict | None = None) -> dict:
        """``{field: optuna distribution}`` of the top-level parameters (with ``values``: and of its
        method's), for :class:`ray.tune.search.optuna.OptunaSearch` and for telling Optuna a point."""
        params = {**self.params, **(self.block(values).params if values is not None else {})}
        return {name: p.distribution() for name, p in params.items()}

    def point(self, values: dict) -> dict:
        """``values`` (e.g. a baseline recipe) as a point of this space, projected into it."""
        out = {}
        for name, p in {**self.params, **self.block(values).params}.items():
            v = values[name] if name in values else _FIELDS[name].default
            out[name] = p.project(v)
        return out

    def outside(self, values: dict) -> list[str]:
        """Why ``values`` (a full recipe dict, e.g. what a baseline ran with) is not a point of
        this space: one line per sampled field out of its domain or fixed field that differs;
        empty when it is a point."""
        reasons = []
        for name, p in {**self.params, **self.block(values).params}.items():
            v = _get_dotted(values, name)
            if not p.contains(v):
                reasons.append(f"{name}={v!r} outside {p.describe()}")
        for name, fixed in self.fixed_for(values).items():
            v = _get_dotted(values, name)
            if v != fixed and not (name == "distill" and v is None and not fixed):
                reasons.append(f"{name}={v!r} but the space fixes {fixed!r}")
        return reasons

    def values_in(self, values: dict) -> dict:
        """The sampled fields' values in ``values`` (a full recipe dict; dotted names read
        from nested sections), unprojected: with ``outside(values)`` empty, a point."""
        return {name: _get_dotted(values, name) for name in {**self.params, **self.block(values).params}}

    def with_fixed(self, values: dict) -> "SearchSpace":
        """A copy with ``values`` fixed (sampled parameters of those names are dropped)."""
        params = {k: p for k, p in self.params.items() if k not in values}
        methods = {m: MethodBlock({k: p for k, p in b.params.items() if k not in values},
                                  {k: v for k, v in b.fixed.items() if k not in values}) for m, b in self.methods.items()}
        return dataclasses.replace(self, params=params, fixed={**self.fixed, **values}, methods=methods)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {k: p.to_dict() for k, p in self.params.items()}
        out.update(self.fixed)
        if self.methods:
            out[BLOCK_KEY] = {m: b.to_dict() for m, b in self.methods.items()}
        return out

    def to_yaml(self) -> str:
        import yaml

        head = f"# resolved from: {', '.join(self.sources) or '<inline>'}\n"
        return head + yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------- loading


def resolve_space_path(space: str | os.PathLike | None, backbone: str | None = None) -> Path:
    """``space`` as a path (a bare name looks in :func:`spaces_dir`), else the backbone's
    override ``<backbone>.yaml``, else ``default.yaml``."""
    root = spaces_dir()
    if space is not None:
        p = Path(space)
        if p.exists():
            return p
        for cand in (root / p, root / f"{p}.yaml"):
            if cand.exists():
                return cand
        known = sorted(x.stem for x in root.glob("*.yaml")) if root.is_dir() else []
        hint = f"; known spaces in {root}: {', '.join(known)}" if known else ""
        raise SpaceError(f"search space {str(space)!r} not found{hint}")
    if backbone:
        cand = root / f"{backbone.split('.')[0]}.yaml"
        if cand.exists():
            return cand
    default = root / "default.yaml"
    if not default.exists():
        raise SpaceError(f"no default search space: {default} does not exist")
    return default


def load_space(space: str | os.PathLike | None = None, backbone: str | None = None) -> SearchSpace:
    """Load and validate a space file (see :func:`resolve_space_path`), following ``extends``."""
    return _load(resolve_space_path(space, backbone), ())


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)


def _load(path: Path, chain: tuple[Path, ...]) -> SearchSpace:
    import yaml

    path = path.resolve()
    where = _display(path)
    if path in chain:
        cycle = " -> ".join(_display(p) for p in (*chain, path))
        raise SpaceError(f"{where}: extends forms a cycle: {cycle}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpaceError(f"{where}: cannot read search space: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpaceError(f"{where}: not valid YAML: {problem}{at}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpaceError(f"{where}: a search space must be a mapping of recipe fields, "
                         f"got {type(data).__name__}")
    base = None
    if "extends" in data:
        ext = data["extends"]
        if not isinstance(ext, str) or not ext.strip():
            raise SpaceError(f"{where}: extends must be the name or path of another space, got {ext!r}")
        cand = (path.parent / ext) if ext.endswith((".yaml", ".yml")) else (path.parent / f"{ext}.yaml")
        if not cand.exists():
            cand = spaces_dir() / (ext if ext.endswith((".yaml", ".yml")) else f"{ext}.yaml")
        if not cand.exists():
            raise SpaceError(f"{where}: extends: space {ext!r} not found")
        base = _load(cand, (*chain, path))
    return parse_space(data, where, base)


def parse_space(data: dict, source: str = "<space>", base: SearchSpace | None = None) -> SearchSpace:
    """Validate a space mapping (already parsed from YAML) on top of ``base``."""
    params = dict(base.params) if base else {}
    fixed = dict(base.fixed) if base else {}
    blocks = _copy_blocks(base)
    for key, spec in data.items():
        if key in META_KEYS or key == BLOCK_KEY:
            continue
        kind, value = _entry(key, spec, source)
        if kind == "param":
            params[key] = value
            fixed.pop(key, None)
        else:
            fixed[key] = value
            params.pop(key, None)
        for b in blocks.values():  # a top-level key replaces the base's per-method one
            b.params.pop(key, None), b.fixed.pop(key, None)
    methods = parse_methods(data.get(BLOCK_KEY), params, fixed, blocks, source,
                            lambda k, v: _entry(k, v, ""))
    dotted = sorted(k for k in (*params, *fixed) if k.startswith("distill."))
    if fixed.get("distill") is None:
        if "distill" in data and dotted:  # this file removed the teacher: drop its settings
            for k in dotted:
                params.pop(k, None)
                fixed.pop(k, None)
        elif dotted:
            raise SpaceError(f"{source}: {', '.join(dotted)} needs a teacher: fix the distill section "
                             "(distill: {teacher_backbone: ...} or {teacher_checkpoint: ...})")
    description = data.get("description", base.description if base else "")
    sources = (*(base.sources if base else ()), source)
    return SearchSpace(params=params, fixed=fixed, sources=sources, description=str(description or ""),
                       methods=methods)


def _copy_blocks(base: SearchSpace | None) -> dict[str, MethodBlock]:
    return {m: MethodBlock(dict(b.params), dict(b.fixed)) for m, b in (base.methods if base else {}).items()}


def _entry(key: Any, spec: Any, source: str) -> tuple[str, Any]:
    """One key of a space: ``("param", Param)`` or ``("fixed", value)``; SpaceError naming it."""
    at = f"{source}: " if source else ""
    if not isinstance(key, str):
        raise SpaceError(f"{at}keys must be recipe field names, got {key!r}")
    if key in NOT_SEARCHABLE:
        raise SpaceError(f"{at}{key} cannot be set in a search space (it is set by {NOT_SEARCHABLE[key]})")
    if key not in _FIELDS:
        if key.startswith("distill."):
            raise SpaceError(f"{at}{key} cannot be set in a search space; of the distill section only "
                             f"{', '.join('distill.' + n for n in SAMPLED_DISTILL)} may be (the teacher is fixed in distill:)")
        allowed = [n for n in _FIELDS if n not in NOT_SEARCHABLE]
        close = difflib.get_close_matches(key, allowed, n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise SpaceError(f"{at}unknown recipe field {key!r}{hint}; allowed: {', '.join(allowed)}")
    try:
        if key == "distill":  # a fixed teacher section (or null); not sampled
            return "fixed", _distill(spec)
        return ("param", _param(key, spec)) if isinstance(spec, dict) else ("fixed", _value(key, key, spec))
    except SpaceError as e:
        raise SpaceError(f"{at}{e}") from None


# --------------------------------------------------------------------------- validation


def _param(name: str, spec: dict) -> Param:
    f = _FIELDS[name]
    kind = spec.get("type")
    if kind is None:
        raise SpaceError(f"{name}.type is missing; use one of {', '.join(KINDS)} "
                         f"(or a plain value to fix {name})")
    if kind not in KINDS:
        raise SpaceError(f"{name}.type must be one of {', '.join(KINDS)}, got {kind!r}")
    extra = [k for k in spec if k not in _KEYS[kind]]
    if extra:
        raise SpaceError(f"{name}.{extra[0]} is not a key of a {kind} parameter "
                         f"(allowed: {', '.join(_KEYS[kind])})")
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{name}.values must be a non-empty list, got {values!r}")
        checked = tuple(_value(name, f"{name}.values[{i}]", v) for i, v in enumerate(values))
        if len(set(checked)) != len(checked):
            raise SpaceError(f"{name}.values has duplicates: {values!r}")
        return Param(name, kind, values=checked)
    if f.type in ("bool", "str"):
        choices = f.metadata.get("choices")
        allowed = f" ({', '.join(choices)})" if choices else ""
        raise SpaceError(f"{name} is a {f.type} field: use type choice{allowed} or a plain value, not {kind}")
    if kind == "int" and f.type != "int":
        raise SpaceError(f"{name} is a float field: use type uniform or loguniform, not int")
    if kind != "int" and f.type == "int":
        raise SpaceError(f"{name} is an integer field: use type int or choice, not {kind}")
    for bound in ("low", "high"):
        if bound not in spec:
            raise SpaceError(f"{name}.{bound} is missing")
    low = _value(name, f"{name}.low", spec["low"], bounds=False)
    high = _value(name, f"{name}.high", spec["high"], bounds=False)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{name}.log must be true or false, got {log!r}")
    if (kind == "loguniform" or log) and low <= 0:
        what = "a loguniform parameter" if kind == "loguniform" else "an int parameter with log: true"
        raise SpaceError(f"{name}.low must be > 0 for {what}, got {_fmt(low)}")
    if not high > low:
        raise SpaceError(f"{name}.high must be > {name}.low ({_fmt(low)}), got {_fmt(high)} "
                         f"(use a plain value to fix {name})")
    low, high = _value(name, f"{name}.low", low), _value(name, f"{name}.high", high)
    return Param(name, kind, low=low, high=high, log=bool(log))


def _distill(spec: Any) -> dict | None:
    from trainer.errors import RecipeError
    from trainer.recipe import Distill

    if spec is None:
        return None
    try:
        return Distill.from_dict(spec).to_dict()
    except RecipeError as e:
        msg = str(e)
        raise SpaceError(msg if msg.startswith("distill") else f"distill: {msg}") from None


def _value(name: str, path: str, value: Any, *, bounds: bool = True) -> Any:
    """Field ``name``'s value (reported as ``path``), checked by the recipe's own rule
    (:func:`trainer.recipe.check_field`, the one place a recipe value is validated);
    ``bounds=False``: its type only (a range's ``low`` before it is compared with ``high``)."""
    value = coerce_value(_FIELDS[name].type, value)
    try:
        check_field(_FIELDS[name], value, path, bounds=bounds)
    except RecipeError as e:
        raise SpaceError(str(e)) from None
    return value


def _get_dotted(values: dict, name: str) -> Any:
    head, dot, tail = name.partition(".")
    if not dot:
        return values.get(name, _FIELDS[name].default if name in _FIELDS else None)
    nested = values.get(head)
    nested = nested.to_dict() if hasattr(nested, "to_dict") else (nested or {})
    return nested.get(tail)
