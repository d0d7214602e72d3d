"""The recipe store: the best recipe per (backbone, dataset, fingerprint), kept in MLflow.

The store is the MLflow experiment ``recipe-store`` (:data:`config.STORE_EXPERIMENT`).
The key is ``(backbone, dataset, fingerprint)``: the *fingerprint* is a 16-hex digest
of the proxy data actually used (a digest of its images and labels) and of the budget
shape (image size, classes, per-class sizes, epochs), so two searches on "cifar10"
with different subsets or budgets never compete. Every promotion is one run, named
``<backbone>/<dataset>/<fingerprint>``, tagged

* ``rs.backbone``, ``rs.dataset``, ``rs.fingerprint`` -- the key; ``rs.budget`` --
  the budget's name (informative only),
* ``rs.schema`` -- ``2`` (:data:`SCHEMA`); runs without it are from before metric names
  said their split and make reads fail with :class:`StoreOutdated`,
* ``rs.state`` -- ``current`` or ``superseded`` (``pending`` while a promotion is
  being written; readers ignore pending runs),
* ``rs.scores`` -- the per-seed confirmed ``test_probe_top1`` values (JSON list),
* ``rs.verdict`` -- ``better_than_baselines`` | ``no_significant_lift`` | ``below_floor``
  (``provenance["verdict"]["verdict"]``),
* ``rs.recipe`` -- the recipe as compact JSON, ``rs.provenance`` -- JSON,
* ``rs.source_run_id`` -- the winning trial's MLflow run id,
* ``rs.promoted_at`` -- ISO-8601 UTC time of the promotion,

with metric ``test_probe_top1`` (:data:`PRIMARY_METRIC`, the mean of the scores;
plus every other final metric given) and the recipe also logged as the artifact
``recipe.json``. Reads only use ``MlflowClient.search_runs`` on tags, never artifacts.

Replacement rule: the first promotion of a key always lands. After that a promotion
replaces the current recipe only when the Welch t interval (95%) on
``mean(scores) - mean(current scores)`` lies entirely above 0 -- a lift the seeds
cannot explain away -- or with ``force=True``; the old run's state becomes
``superseded``. The reason (:attr:`PromotionResult.reason`) states the interval.
Promotions into a local SQLite store are serialised across processes with a lock
file next to the database; for remote stores concurrent promoters are reconciled on
read (the newest ``current`` run of a key wins).

>>> store = RecipeStore("sqlite:////tmp/rs/mlflow.db")          # doctest: +SKIP
>>> store.promote("resnet18", "cifar10", "3f2a9c1d0b7e4a55", recipe,       # doctest: +SKIP
...               {"test_probe_top1": 0.34}, provenance, scores=[0.33, 0.34, 0.35], budget="proxy")
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence
from urllib.parse import unquote, urlparse

from . import config
from .config import STORE_EXPERIMENT
from .locks import file_lock
from .stats import Interval, Summary, summary, welch_interval

if TYPE_CHECKING:  # pragma: no cover
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from trainer.recipe import Recipe

__all__ = [
    "StoreUnavailable",
    "StoreOutdated",
    "PromotedRecipe",
    "PromotionResult",
    "RecipeStore",
    "TrialRun",
    "artifact_root_for",
    "sqlite_path",
    "TAG_BACKBONE",
    "TAG_DATASET",
    "TAG_FINGERPRINT",
    "TAG_BUDGET",
    "TAG_SCHEMA",
    "TAG_STATE",
    "TAG_RECIPE",
    "TAG_PROVENANCE",
    "TAG_SCORES",
    "TAG_VERDICT",
    "TAG_SOURCE_RUN",
    "TAG_PROMOTED_AT",
    "PRIMARY_METRIC",
    "SCHEMA",
]

TAG_BACKBONE = "rs.backbone"
TAG_DATASET = "rs.dataset"
TAG_FINGERPRINT = "rs.fingerprint"
TAG_BUDGET = "rs.budget"
TAG_SCHEMA = "rs.schema"
TAG_STATE = "rs.state"
TAG_RECIPE = "rs.recipe"
TAG_PROVENANCE = "rs.provenance"
TAG_SCORES = "rs.scores"
TAG_VERDICT = "rs.verdict"
TAG_SOURCE_RUN = "rs.source_run_id"
TAG_PROMOTED_AT = "rs.promoted_at"
TAG_SUPERSEDED_BY = "rs.superseded_by"
TAG_SUPERSEDED_AT = "rs.superseded_at"
TAG_KIND = "rs.kind"
TAG_STAGE = "rs.stage"

SCHEMA = "2"
PRIMARY_METRIC = "test_probe_top1"  # the confirmed mean over seeds
CURRENT, SUPERSEDED, PENDING = "current", "superseded", "pending"
_MAX_TAG = 8000  # MLflow's tag value limit
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:+@/ -]*$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_KEEP_IN_TAG = ("verdict", "fingerprint")  # provenance keys _shrink drops last


class StoreUnavailable(Exception):
    """The store cannot be reached or read; the message names the URI and the reason."""


class StoreOutdated(StoreUnavailable):
    """The store holds promotions of another schema (from before ``rs.schema`` 2);
    the message (one line) says how to start a fresh store."""


@dataclass(frozen=True)
class PromotedRecipe:
    backbone: str
    dataset: str
    fingerprint: str  # 16 hex: the proxy data actually used + the budget shape
    budget: str  # the budget's name (informative; not part of the key)
    recipe: dict  # Recipe.to_dict()
    metric: float  # test_probe_top1: the confirmed mean over the seeds
    scores: tuple[float, ...]  # the per-seed confirmed test_probe_top1 values
    verdict: str | None  # better_than_baselines | no_significant_lift | below_floor
    metrics: dict[str, float]
    provenance: dict
    run_id: str  # the store run's id
    source_run_id: str | None
    state: str  # "current" | "superseded"
    updated_at: str  # ISO-8601 UTC: when it was promoted

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.backbone, self.dataset, self.fingerprint)

    @property
    def score(self) -> Summary:
        """Mean ± std (n, values) of the confirmed test_probe_top1 scores."""
        return summary(self.scores)

    @property
    def verdict_line(self) -> str | None:
        """The verdict's one sentence (``provenance["verdict"]["line"]``), if any."""
        v = self.provenance.get("verdict")
        line = v.get("line") if isinstance(v, dict) else None
        return line if isinstance(line, str) else None


@dataclass(frozen=True)
class TrialRun:
    """One trial as logged to MLflow (tags ``rs.kind=trial``, ``rs.backbone``).

    Search trials log ``val_knn_top1`` only; confirmation trials (``rs.stage``
    ``confirmation``) also log ``test_probe_top1`` and ``test_knn_top1``."""

    run_id: str
    run_name: str | None
    experiment_id: str
    status: str  # MLflow run status: RUNNING | FINISHED | FAILED | KILLED | SCHEDULED
    stage: str  # "search" | "confirmation" (tag rs.stage; search when absent)
    val_knn_top1: float | None
    test_probe_top1: float | None
    test_knn_top1: float | None
    metrics: dict[str, float]
    params: dict[str, str]
    search_id: str | None
    start_time: str | None  # ISO-8601 UTC


@dataclass(frozen=True)
class PromotionResult:
    promoted: bool
    reason: str
    current: PromotedRecipe  # what is current for the key after the call
    lift: Interval | None = None  # Welch interval vs the previous current recipe (None for the first)


# --------------------------------------------------------------------------- helpers


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for other stores / in-memory."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    rest = tracking_uri[len("sqlite:") :]
    if not rest.startswith("///"):
        return None
    path = unquote(rest[3:].split("?", 1)[0])
    if path in ("", ":memory:"):
        return None
    return Path(path).resolve()


def _is_local_file_store(tracking_uri: str) -> bool:
    scheme = urlparse(tracking_uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1)  # "" / file: / windows drive


def artifact_root_for(tracking_uri: str) -> str | None:
    """Artifact location for new experiments in a local (SQLite/file) store, else None.

    For SQLite it is ``artifacts/`` next to the database file, which for the default
    URI is exactly :func:`config.default_artifact_root`; servers choose their own.
    """
    db = sqlite_path(tracking_uri)
    if db is not None:
        if db == (config.home() / "mlflow.db"):
            return config.default_artifact_root()
        return (db.parent / "artifacts").as_uri()
    if tracking_uri.startswith("sqlite:") or _is_local_file_store(tracking_uri):
        return config.default_artifact_root()
    return None


def _redact(uri: str) -> str:
    """Hide a password in ``scheme://user:pass@host`` URIs."""
    return re.sub(r"(://[^:/@]+:)[^@/]+@", r"\1***@", uri)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _quote(value: str) -> str | None:
    """A filter-string literal for ``value``, or None when it cannot be expressed safely."""
    if _SAFE_VALUE.match(value):
        return f"'{value}'"
    return None


_checked: dict[Path, tuple] = {}  # path -> stat signature of the last file that passed


def _check_sqlite_file(path: Path, uri: str, *, must_exist: bool) -> None:
    """Fail fast on a missing or corrupt SQLite file (MLflow would retry for minutes).

    The full check (open it with sqlite3) runs again only when the file changed."""
    try:
        st = path.stat()
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        sig = None
    if sig is not None and _checked.get(path) == sig:
        return
    _checked.pop(path, None)
    if not path.exists():
        if must_exist:
            raise StoreUnavailable(f"no store at {path}: run `recipe-search run` first")
        return
    if path.is_dir():
        raise StoreUnavailable(f"store at {path} is a directory, not an SQLite database ({uri})")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise StoreUnavailable(f"cannot read store at {path}: {e.strerror}") from None
    if not head:
        if must_exist:
            raise StoreUnavailable(f"no store at {path} (empty file): run `recipe-search run` first")
        return
    if head != _SQLITE_MAGIC:
        raise StoreUnavailable(f"store at {path} is corrupt: not an SQLite database ({uri})")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=20)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise StoreUnavailable(f"store at {path} is corrupt: {e} ({uri})") from None
    if sig is not None:
        _checked[path] = sig


def _shrink(prov: dict) -> str:
    """Compact provenance JSON under the tag limit: the largest values are replaced by a
    pointer to the ``provenance.json`` artifact, which holds the full provenance (the
    verdict and the fingerprint go last)."""
    out = dict(prov)
    note = "<too long for a tag: see artifact provenance.json>"
    order = sorted(out, key=lambda k: (k in _KEEP_IN_TAG, -len(json.dumps(out[k], default=str))))
    for key in order:
        text = json.dumps(out, separators=(",", ":"), default=str)
        if len(text) <= _MAX_TAG - 100:
            break
        out[key] = note
    out["truncated"] = True
    return json.dumps(out, separators=(",", ":"), default=str)


def _finite_float(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _fmt_interval(iv: Interval) -> str:
    if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return f"{iv.mean:+.3f} [no interval: needs 2+ seeds on both sides]"
    return iv.fmt(3)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    return msg[:500]


# --------------------------------------------------------------------------- store


class RecipeStore:
    """Best recipes per backbone, kept as runs of one MLflow experiment.

    ``tracking_uri=None`` uses :func:`config.default_tracking_uri`. With
    ``create=False`` (what the API uses) the store never creates anything: a missing
    SQLite file or experiment reads as unavailable/empty instead of being created.
    Connecting is lazy, so constructing a store never fails.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = STORE_EXPERIMENT,
        *,
        create: bool = True,
    ) -> None:
        self.tracking_uri = tracking_uri or config.default_tracking_uri()
        self.experiment = experiment
        self.create = create
        self._db = sqlite_path(self.tracking_uri)
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"RecipeStore({_redact(self.tracking_uri)!r}, experiment={self.experiment!r})"

    # -- connection --------------------------------------------------------------
    @property
    def display_uri(self) -> str:
        return _redact(self.tracking_uri)

    def _connect(self) -> MlflowClient:
        """Return a client, checking the SQLite file first (cheap, every call)."""
        if self._db is not None:
            _check_sqlite_file(self._db, self.display_uri, must_exist=not self.create)
            if self.create:
                self._db.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._client is None:
                try:
                    from mlflow.tracking import MlflowClient

                    client = MlflowClient(tracking_uri=self.tracking_uri)
                    client._tracking_client.store  # build the store now: errors surface here
                except StoreUnavailable:
                    raise
                except Exception as e:  # noqa: BLE001 - anything from MLflow/SQLAlchemy/requests
                    raise self._unavailable(e) from e
                self._client = client
            return self._client

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        msg = _describe(exc)
        low = msg.lower()
        where = str(self._db) if self._db is not None else self.display_uri
        if "not a database" in low or "malformed" in low or "corrupt" in low:
            return StoreUnavailable(f"store at {where} is corrupt: {msg}")
        if "no such table" in low or "out-of-date database schema" in low:
            return StoreUnavailable(f"store at {where} is not a usable MLflow database: {msg}")
        return StoreUnavailable(f"recipe store {self.display_uri} unavailable: {msg}")

    @contextlib.contextmanager
    def _wrap(self) -> Iterator[None]:
        try:
            yield
        except StoreUnavailable:
            raise
        except (ValueError, TypeError) as e:
            if type(e).__module__.startswith(("mlflow", "sqlalchemy")):
                raise self._unavailable(e) from e
            raise
        except Exception as e:  # noqa: BLE001
            raise self._unavailable(e) from e

    def _experiment(self, client: MlflowClient, *, create: bool) -> str | None:
        if self._experiment_id is not None:
            return self._experiment_id
        with self._lock:
            exp = client.get_experiment_by_name(self.experiment)
            if exp is not None and exp.lifecycle_stage != "active":
                if not create:
                    return None
                client.restore_experiment(exp.experiment_id)
            if exp is None:
                if not create:
                    return None
                from mlflow.exceptions import MlflowException

                try:
                    exp_id = client.create_experiment(
                        self.experiment,
                        artifact_location=artifact_root_for(self.tracking_uri),
                        tags={TAG_KIND: "store"},
                    )
                except MlflowException:  # created concurrently by another process
                    exp = client.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
                    exp_id = exp.experiment_id
            else:
                exp_id = exp.experiment_id
            self._experiment_id = exp_id
            return exp_id

    @property
    def experiment_id(self) -> str | None:
        """The store experiment's id (None if it does not exist yet)."""
        with self._wrap():
            client = self._connect()
            return self._experiment(client, create=False)

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store can be read."""
        with self._wrap():
            client = self._connect()
            client.get_experiment_by_name(self.experiment)

    def run_url(self, run_id: str, experiment_id: str | None = None) -> str | None:
        """The MLflow UI link to a run when the tracking URI is an http(s) server."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        exp = experiment_id or self.experiment_id
        base = self.tracking_uri.rstrip("/")
        return f"{base}/#/experiments/{exp}/runs/{run_id}"

    @property
    def client(self) -> MlflowClient:
        """The underlying MlflowClient (connected; raises StoreUnavailable)."""
        with self._wrap():
            return self._connect()

    def check_schema(self) -> None:
        """Raise :class:`StoreOutdated` when the store holds promotions of another
        schema, :class:`StoreUnavailable` when it cannot be read (a missing or empty
        store passes). Searches call it before training anything."""
        with self._wrap():
            self._current_runs()

    # -- reads -----------------------------------------------------------------------
    def _search(self, filter_string: str) -> list[Run]:
        client = self._connect()
        exp = self._experiment(client, create=False)
        if exp is None:
            return []
        runs: list[Run] = []
        token = None
        while True:
            page = client.search_runs(
                [exp], filter_string=filter_string, max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _records(self, runs: Iterable[Run]) -> list[PromotedRecipe]:
        """Promotion records of ``runs`` (current or superseded); refuses other schemas."""
        out = []
        for run in runs:
            tags = run.data.tags
            if tags.get(TAG_STATE) not in (CURRENT, SUPERSEDED):
                continue  # pending (being written) or not a promotion
            if tags.get(TAG_SCHEMA) != SCHEMA:
                raise self._outdated(run)
            rec = self._to_record(run)
            if rec is not None:
                out.append(rec)
        return out

    def _outdated(self, run: Run) -> StoreOutdated:
        tags = run.data.tags
        schema = tags.get(TAG_SCHEMA)
        what = f"promotion run {run.info.run_id} ({tags.get(TAG_BACKBONE, '?')}/{tags.get(TAG_DATASET, '?')})"
        if self._db is not None:
            fresh = f"move {self._db} aside, or point RECIPE_SEARCH_HOME or --tracking-uri at a new place"
        else:
            fresh = (f"point --tracking-uri or MLFLOW_TRACKING_URI at a new store, or delete the "
                     f"experiment {self.experiment!r} there")
        if schema is None:
            found = "from before metric names said their split (metric probe_top1, no rs.schema tag)"
        else:
            found = f"of another schema (rs.schema {schema!r}; this recipe-search reads {SCHEMA!r})"
        return StoreOutdated(
            f"recipe store {self.display_uri} holds promotions {found}, e.g. {what}; start a fresh "
            f"store ({fresh}) and re-run the searches"
        )

    def _current_runs(self, backbone: str | None = None) -> list[PromotedRecipe]:
        """Every run tagged current (a key may briefly have two, see _currents)."""
        # One tag filter only: MLflow's SQL for two tag filters is ~3x slower, and the
        # current runs are few (backbones x datasets x fingerprints); filter in Python.
        # Every current run is checked, so an outdated store is refused for any backbone.
        flt = f"tags.`{TAG_STATE}` = '{CURRENT}'"
        recs = [r for r in self._records(self._search(flt)) if r.state == CURRENT]
        if backbone is not None:
            recs = [r for r in recs if r.backbone == backbone]
        return recs

    def _currents(self, backbone: str | None = None) -> list[PromotedRecipe]:
        recs = self._current_runs(backbone)
        # Concurrent promoters into a remote store may leave two `current` runs for a
        # key: the newest wins.
        best: dict[tuple[str, str, str], PromotedRecipe] = {}
        for rec in recs:
            old = best.get(rec.key)
            if old is None or (rec.updated_at, rec.run_id) > (old.updated_at, old.run_id):
                best[rec.key] = rec
        return list(best.values())

    @staticmethod
    def _newest_first(recs: Iterable[PromotedRecipe]) -> list[PromotedRecipe]:
        return sorted(recs, key=lambda r: (r.updated_at, r.run_id), reverse=True)

    def fingerprints(self, backbone: str, dataset: str | None = None) -> list[PromotedRecipe]:
        """The current recipe of every fingerprint of ``backbone`` (on ``dataset`` when
        given), newest first."""
        with self._wrap():
            recs = [r for r in self._currents(backbone) if dataset is None or r.dataset == dataset]
        return self._newest_first(recs)

    def get(
        self, backbone: str, dataset: str | None = None, fingerprint: str | None = None
    ) -> PromotedRecipe | None:
        """The current recipe for ``backbone``: the most recently promoted one when it has
        several datasets/fingerprints, unless ``dataset`` / ``fingerprint`` narrow it."""
        recs = [r for r in self.fingerprints(backbone, dataset)
                if fingerprint is None or r.fingerprint == fingerprint]
        return recs[0] if recs else None

    def get_key(self, backbone: str, dataset: str, fingerprint: str) -> PromotedRecipe | None:
        """The current recipe for exactly one (backbone, dataset, fingerprint)."""
        with self._wrap():
            for rec in self._currents(backbone):
                if rec.key == (backbone, dataset, fingerprint):
                    return rec
        return None

    def list(self) -> list[PromotedRecipe]:
        """All current recipes, sorted by backbone and dataset, newest first within."""
        with self._wrap():
            recs = self._newest_first(self._currents())
        return sorted(recs, key=lambda r: (r.backbone, r.dataset))  # stable: keeps newest first

    def history(self, backbone: str) -> list[PromotedRecipe]:
        """Every promotion of ``backbone`` (current and superseded), newest first."""
        q = _quote(backbone)
        flt = f"tags.`{TAG_BACKBONE}` = {q}" if q is not None else ""
        with self._wrap():
            recs = [r for r in self._records(self._search(flt)) if r.backbone == backbone]
        return self._newest_first(recs)

    def backbones(self) -> list[str]:
        """Backbones that have a current recipe, sorted."""
        return sorted({r.backbone for r in self.list()})

    def trials(self, backbone: str, limit: int = 20) -> list[TrialRun]:
        """The trial leaderboard of ``backbone``: runs tagged ``rs.kind=trial`` and
        ``rs.backbone=<backbone>`` in any active experiment, best ``val_knn_top1``
        first (runs without it last). Confirmation trials are included (``stage``)."""
        q = _quote(backbone)
        if q is None or limit < 1:
            return []
        flt = f"tags.`{TAG_KIND}` = 'trial' and tags.`{TAG_BACKBONE}` = {q}"
        with self._wrap():
            client = self._connect()
            exp_ids: list[str] = []
            token = None
            while True:
                page = client.search_experiments(max_results=1000, page_token=token)
                exp_ids.extend(e.experiment_id for e in page)
                token = page.token
                if not token:
                    break
            runs: list[Run] = []
            for i in range(0, len(exp_ids), 100):
                runs.extend(client.search_runs(
                    exp_ids[i : i + 100], filter_string=flt, max_results=min(limit, 50000),
                    order_by=["metrics.val_knn_top1 DESC", "attributes.start_time DESC"],
                ))
        rows = [self._to_trial(r) for r in runs]
        rows.sort(key=lambda t: (t.val_knn_top1 is not None, t.val_knn_top1 or 0.0), reverse=True)
        return rows[:limit]

    @staticmethod
    def _to_trial(run: Run) -> TrialRun:
        metrics = {k: float(v) for k, v in run.data.metrics.items() if math.isfinite(v)}
        start = run.info.start_time
        return TrialRun(
            run_id=run.info.run_id,
            run_name=run.info.run_name,
            experiment_id=run.info.experiment_id,
            status=run.info.status,
            stage=run.data.tags.get(TAG_STAGE) or "search",
            val_knn_top1=metrics.get("val_knn_top1"),
            test_probe_top1=metrics.get("test_probe_top1"),
            test_knn_top1=metrics.get("test_knn_top1"),
            metrics=metrics,
            params=dict(run.data.params),
            search_id=run.data.tags.get("rs.search_id") or run.data.tags.get("mlflow.parentRunId"),
            start_time=None if not start else _dt.datetime.fromtimestamp(
                start / 1000, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        )

    @staticmethod
    def _to_record(run: Run) -> PromotedRecipe | None:
        tags = run.data.tags
        try:
            backbone = tags[TAG_BACKBONE]
            fingerprint = tags[TAG_FINGERPRINT]
            recipe = json.loads(tags[TAG_RECIPE])
            metrics = {k: float(v) for k, v in run.data.metrics.items()}
            metric = metrics[PRIMARY_METRIC]
            scores = tuple(float(s) for s in json.loads(tags[TAG_SCORES]))
            if not scores or not isinstance(recipe, dict):
                return None
        except (KeyError, ValueError, TypeError):
            return None  # not a (finished) promotion run: ignore
        try:
            provenance = json.loads(tags.get(TAG_PROVENANCE) or "{}")
        except ValueError:
            provenance = {"error": "provenance tag is not valid JSON"}
        if not isinstance(provenance, dict):
            provenance = {"error": "provenance tag is not a JSON object"}
        updated = tags.get(TAG_PROMOTED_AT)
        if not updated:
            start = run.info.start_time or 0
            updated = (
                _dt.datetime.fromtimestamp(start / 1000, _dt.timezone.utc)
                .isoformat(timespec="microseconds")
                .replace("+00:00", "Z")
            )
        return PromotedRecipe(
            backbone=backbone,
            dataset=tags.get(TAG_DATASET, ""),
            fingerprint=fingerprint,
            budget=tags.get(TAG_BUDGET, ""),
            recipe=recipe,
            metric=metric,
            scores=scores,
            verdict=tags.get(TAG_VERDICT) or None,
            metrics=metrics,
            provenance=provenance,
            run_id=run.info.run_id,
            source_run_id=tags.get(TAG_SOURCE_RUN) or None,
            state=tags.get(TAG_STATE, ""),
            updated_at=updated,
        )

    # -- writes ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _promote_lock(self) -> Iterator[None]:
        """Serialise promotions: a thread lock, plus a lock file for SQLite stores."""
        with self._lock:
            if self._db is None:
                yield
                return
            with file_lock(self._db.with_name(self._db.name + ".promote.lock")):
                yield

    def promote(
        self,
        backbone: str,
        dataset: str,
        fingerprint: str,
        recipe: "Recipe | dict",
        metrics: dict,
        provenance: dict,
        *,
        scores: Sequence[float],
        budget: str = "",
        source_run_id: str | None = None,
        force: bool = False,
    ) -> PromotionResult:
        """Make ``recipe`` the current one for (backbone, dataset, fingerprint).

        ``scores`` are its per-seed confirmed ``test_probe_top1`` values and
        ``metrics["test_probe_top1"]`` their mean. It lands when the key has no current
        recipe, when the Welch t interval (95%) on the lift over the current recipe's
        scores lies above 0, or with ``force``. Returns what is current afterwards and
        why (the reason states the interval)."""
        recipe_dict, metrics_f, scores_t, key = self._validate(
            backbone, dataset, fingerprint, budget, recipe, metrics, scores)
        new = summary(scores_t)
        if not self.create:
            raise StoreUnavailable(f"recipe store {self.display_uri} was opened read-only")
        with self._wrap(), self._promote_lock():
            client = self._connect()
            exp = self._experiment(client, create=True)
            old = self.get_key(*key)
            lift: Interval | None = None
            if old is None:
                reason = (f"first recipe for {'/'.join(key)} (budget {budget or '-'}): "
                          f"{PRIMARY_METRIC} {new.fmt(3)} over {new.n} seed{'s' * (new.n != 1)}")
            else:
                lift = welch_interval(scores_t, old.scores)
                head = (f"{PRIMARY_METRIC} {new.fmt(3)} vs current {old.score.fmt(3)}: lift "
                        f"{_fmt_interval(lift)}")
                if lift.low > 0:
                    reason = f"{head} ({lift.method}); replaced"
                elif force:
                    reason = f"{head} ({lift.method}); forced: replaced"
                else:
                    why = ("" if not math.isfinite(lift.high) else
                           " is below 0" if lift.high < 0 else " includes 0")
                    return PromotionResult(
                        promoted=False,
                        reason=(f"{head}{why} ({lift.method}); kept the current recipe (store run "
                                f"{old.run_id})"),
                        current=old,
                        lift=lift,
                    )
            promoted_at = _now()
            prov = dict(provenance or {})
            prov.setdefault("backbone", backbone)
            prov.setdefault("dataset", dataset)
            prov.setdefault("budget", budget)
            prov.setdefault("metrics", metrics_f)
            prov.setdefault("source_run_id", source_run_id)
            prov["store_key"] = {"backbone": backbone, "dataset": dataset, "fingerprint": fingerprint}
            prov["scores"] = list(scores_t)
            prov["promoted_at"] = promoted_at
            prov["forced"] = bool(force)
            prov["promotion_reason"] = reason
            prov["previous"] = None if old is None else {
                "run_id": old.run_id, PRIMARY_METRIC: old.metric, "scores": list(old.scores),
                "lift": lift.to_dict() if lift is not None else None,
            }
            verdict = prov.get("verdict")
            verdict_name = verdict.get("verdict") if isinstance(verdict, dict) else None
            recipe_json = json.dumps(recipe_dict, separators=(",", ":"), sort_keys=False)
            prov_json = json.dumps(prov, separators=(",", ":"), default=str)
            if len(recipe_json) > _MAX_TAG:
                raise ValueError(
                    f"recipe JSON ({len(recipe_json)} chars) is longer than MLflow's tag limit "
                    f"of {_MAX_TAG} characters"
                )
            full_prov_json = None
            if len(prov_json) > _MAX_TAG:  # keep the tag readable; the full one is an artifact
                full_prov_json = json.dumps(prov, indent=2, default=str)
                prov_json = _shrink(prov)
            run = client.create_run(
                exp,
                run_name="/".join(key),
                tags={
                    TAG_KIND: "promotion",
                    TAG_SCHEMA: SCHEMA,
                    TAG_BACKBONE: backbone,
                    TAG_DATASET: dataset,
                    TAG_FINGERPRINT: fingerprint,
                    TAG_BUDGET: budget,
                    TAG_STATE: PENDING,
                    TAG_RECIPE: recipe_json,
                    TAG_PROVENANCE: prov_json,
                    TAG_SCORES: json.dumps(list(scores_t)),
                    TAG_VERDICT: str(verdict_name or "")[:250],
                    TAG_SOURCE_RUN: source_run_id or "",
                    TAG_PROMOTED_AT: promoted_at,
                },
            )
            run_id = run.info.run_id
            try:
                from mlflow.entities import Metric

                ts = int(_dt.datetime.now(_dt.timezone.utc).timestamp() * 1000)
                client.log_batch(
                    run_id, metrics=[Metric(k, v, ts, 0) for k, v in sorted(metrics_f.items())]
                )
                client.log_text(run_id, json.dumps(recipe_dict, indent=2), "recipe.json")
                if full_prov_json is not None:
                    client.log_text(run_id, full_prov_json, "provenance.json")
                client.set_tag(run_id, TAG_STATE, CURRENT)
            except BaseException:
                with contextlib.suppress(Exception):
                    client.set_terminated(run_id, "FAILED")
                raise
            # Supersede every older current run of the key (not just `old`), never a newer one.
            for rec in self._current_runs(backbone):
                if rec.key == key and rec.run_id != run_id and rec.updated_at <= promoted_at:
                    client.set_tag(rec.run_id, TAG_STATE, SUPERSEDED)
                    client.set_tag(rec.run_id, TAG_SUPERSEDED_BY, run_id)
                    client.set_tag(rec.run_id, TAG_SUPERSEDED_AT, promoted_at)
            client.set_terminated(run_id, "FINISHED")
            current = self.get_key(*key)
            assert current is not None
            return PromotionResult(promoted=current.run_id == run_id, reason=reason, current=current,
                                   lift=lift)

    @staticmethod
    def _validate(
        backbone: str, dataset: str, fingerprint: str, budget: str, recipe: Any, metrics: dict,
        scores: Sequence[float],
    ) -> tuple[dict, dict[str, float], tuple[float, ...], tuple[str, str, str]]:
        for name, value in (("backbone", backbone), ("dataset", dataset)):
            if not isinstance(value, str) or not value or "/" in value or len(value) > 250:
                raise ValueError(f"{name} must be a non-empty string without '/', got {value!r}")
        if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
            raise ValueError(f"fingerprint must be 16 lowercase hex digits, got {fingerprint!r}")
        if not isinstance(budget, str) or len(budget) > 250:
            raise ValueError(f"budget must be a string (the budget's name), got {budget!r}")
        from trainer.recipe import Recipe

        if isinstance(recipe, Recipe):
            rec = recipe
        else:
            rec = Recipe.from_dict(dict(recipe))  # validates; raises RecipeError
        if rec.backbone != backbone:
            raise ValueError(f"recipe.backbone is {rec.backbone!r} but promoting for {backbone!r}")
        if isinstance(scores, (str, bytes)) or not isinstance(scores, Iterable):
            raise ValueError(f"scores must be the per-seed {PRIMARY_METRIC} values, got {scores!r}")
        scores_t = tuple(_finite_float(s) for s in scores)
        if not scores_t or any(s is None for s in scores_t):
            raise ValueError(
                f"scores must be one or more finite per-seed {PRIMARY_METRIC} values, got {scores!r}")
        metrics_f: dict[str, float] = {}
        for k, v in (metrics or {}).items():
            f = _finite_float(v)  # non-numeric extras belong in provenance
            if f is not None:
                metrics_f[str(k)] = f
        if PRIMARY_METRIC not in metrics_f:
            raise ValueError(
                f"metrics must contain a finite {PRIMARY_METRIC!r} (the confirmed mean), got "
                f"{(metrics or {}).get(PRIMARY_METRIC)!r}"
            )
        mean = summary(scores_t).mean  # type: ignore[arg-type]
        if abs(metrics_f[PRIMARY_METRIC] - mean) > 1e-6:
            raise ValueError(
                f"metrics[{PRIMARY_METRIC!r}] = {metrics_f[PRIMARY_METRIC]!r} is not the mean of the "
                f"scores ({mean!r})"
            )
        return rec.to_dict(), metrics_f, scores_t, (backbone, dataset, fingerprint)  # type: ignore[return-value]
