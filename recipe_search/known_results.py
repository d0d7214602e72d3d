"""What a search can start from: the served recipes and finished search trials known on a dataset,
read from a recipe store or from a results file.

``recipe-search export cifar10 --out cifar10-results.json`` writes what the store knows on a dataset;
``recipe-search run --warm-start-file cifar10-results.json`` starts a search in another store (another
machine, a colleague's cluster, a fresh home) from it, exactly as it would start from that store
(``warm_start.py`` reads both the same way).

The file (``FORMAT``)::

    {"format": "recipe-search.results/1", "exported_at": "...", "source": "<tracking URI, redacted>",
     "datasets": ["cifar10"],
     "served": [{"backbone": ..., "dataset": ..., "run_id": ..., "search_id": ..., "score": 0.41,
                 "recipe": {...full recipe...}}, ...],
     "trials": [{... the same fields; score: its val kNN top-1 ...}, ...]}

``served`` holds the recipes the store serves (score: confirmed test probe mean), newest first;
``trials`` the search-stage trials that ran to the end (sampled ones, not baselines; score: val kNN
top-1), best first.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import SearchError

FORMAT = "recipe-search.results/1"
KINDS = ("served", "trials")


@dataclass(frozen=True)
class KnownResult:
    """One served recipe or finished trial, and where it came from."""

    backbone: str
    dataset: str
    run_id: str
    recipe: dict
    search_id: str | None = None
    score: float | None = None  # served: confirmed test probe mean; trial: val kNN top-1


@dataclass(frozen=True)
class KnownResults:
    """The served recipes (newest first) and finished search trials (best val first) known."""

    served: list[KnownResult] = field(default_factory=list)
    trials: list[KnownResult] = field(default_factory=list)
    origin: str = "store"  # "store" | the results file's path

    def datasets(self) -> list[str]:
        return sorted({r.dataset for r in [*self.served, *self.trials]})

    def to_dict(self, source: str = "") -> dict:
        return {"format": FORMAT, "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "source": source, "datasets": self.datasets(),
                "served": [asdict(r) for r in self.served], "trials": [asdict(r) for r in self.trials]}


def from_store(store, dataset: str, *, limit: int = 200) -> KnownResults:
    """What ``store`` (a :class:`~recipe_search.store.RecipeStore`) knows on ``dataset``: the recipes
    it serves there and up to ``limit`` finished sampled search trials, best val first."""
    served = [KnownResult(backbone=r.backbone, dataset=r.dataset, run_id=r.source_run_id or r.run_id,
                          recipe=r.recipe, search_id=(r.provenance or {}).get("search_id"), score=r.metric)
              for r in store.list() if r.dataset == dataset and r.recipe]
    trials = [KnownResult(backbone=t.backbone, dataset=dataset, run_id=t.run_id, recipe=t.recipe,
                          search_id=t.search_id, score=t.val_knn_top1)
              for t in store.finished_trials(dataset, limit=limit)
              if t.backbone and t.recipe and not t.baseline and t.val_knn_top1 is not None]
    return KnownResults(served=served, trials=trials)


def write(results: KnownResults, path: str | Path, *, source: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results.to_dict(source), indent=1) + "\n")
    return path


def read(path: str | Path, flag: str = "--warm-start-file") -> KnownResults:
    """A results file written by :func:`write`; a missing, malformed or foreign file raises a
    :class:`SearchError` naming ``flag``, the file and the field at fault."""
    path = Path(path)
    if not path.is_file():
        raise SearchError(f"{flag}: {path} does not exist (write one with `recipe-search export DATASET --out FILE`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SearchError(f"{flag}: {path} is not a JSON results file: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise SearchError(f"{flag}: {path} has format {got!r}; allowed: {FORMAT!r} "
                          "(written by `recipe-search export`)")
    out: dict[str, list[KnownResult]] = {}
    for kind in KINDS:
        items = data.get(kind, [])
        if not isinstance(items, list):
            raise SearchError(f"{flag}: {path}: {kind!r} must be a list, got {type(items).__name__}")
        out[kind] = [_entry(item, f"{kind}[{i}]", flag, path) for i, item in enumerate(items)]
    return KnownResults(served=out["served"], trials=out["trials"], origin=str(path))


def _entry(item, where: str, flag: str, path: Path) -> KnownResult:
    bad = lambda what: SearchError(f"{flag}: {path}: {where}.{what}")  # noqa: E731
    if not isinstance(item, dict):
        raise SearchError(f"{flag}: {path}: {where} must be an object, got {type(item).__name__}")
    for name in ("backbone", "dataset", "run_id"):
        if not isinstance(item.get(name), str) or not item[name]:
            raise bad(f"{name} must be a non-empty string, got {item.get(name)!r}")
    if not isinstance(item.get("recipe"), dict) or not item["recipe"]:
        raise bad(f"recipe must be a recipe object (the recipe's fields), got {type(item.get('recipe')).__name__}")
    score = item.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise bad(f"score must be a number or null, got {score!r}")
    sid = item.get("search_id")
    if sid is not None and not isinstance(sid, str):
        raise bad(f"search_id must be a string or null, got {sid!r}")
    return KnownResult(backbone=item["backbone"], dataset=item["dataset"], run_id=item["run_id"],
                       recipe=item["recipe"], search_id=sid, score=None if score is None else float(score))
