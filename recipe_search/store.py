"""The recipe store: the best recipe per (backbone, dataset, fingerprint), kept in MLflow.

The store is the MLflow experiment ``recipe-store`` (:data:`config.STORE_EXPERIMENT`).
The key is ``(backbone, dataset, fingerprint)``: the *fingerprint* is a 16-hex digest
of the proxy data actually used (a digest of its images and labels) and of the budget
shape (image size, classes, per-class sizes, epochs), so two searches on "cifar10"
with different subsets or budgets never compete. Every promotion is one run, named
``<backbone>/<dataset>/<fingerprint>``, tagged (:class:`records.Promotion`; each tag's name is
the name below prefixed with rs., see :mod:`recipe_search.records`)

* ``backbone``, ``dataset``, ``fingerprint`` -- the key; ``budget`` --
  the budget's name (informative only),
* ``schema`` -- ``2`` (:data:`SCHEMA`); runs without it are from before metric names
  said their split and make reads fail with :class:`StoreOutdated`,
* ``state`` -- ``current`` or ``superseded`` (``pending`` while a promotion is
  being written; readers ignore pending runs),
* ``scores`` -- the per-seed confirmed ``test_probe_top1`` values (JSON list),
* ``verdict`` -- ``better_than_baselines`` | ``no_significant_lift`` | ``below_floor``
  (``provenance["verdict"]["verdict"]``),
* ``recipe`` -- the recipe as compact JSON, ``provenance`` -- JSON,
* ``source_run_id`` -- the winning trial's MLflow run id,
* ``promoted_at`` -- ISO-8601 UTC time of the promotion,

with metric ``test_probe_top1`` (:data:`PRIMARY_METRIC`, the mean of the scores;
plus every other final metric given) and the recipe also logged as the artifact
``recipe.json``. Reads only use ``MlflowClient.search_runs`` on tags, never artifacts.

Replacement rule, decided on validation, never on the test split: the first promotion of a
key always lands. After that a promotion replaces the current recipe only when the 95%
interval on its ``val_knn_top1`` lift over the current recipe's (``val_scores``: paired
t over the seeds both were confirmed on when they share two or more, Welch otherwise) lies
entirely above 0, or with ``force=True``; the old run's state becomes ``superseded``. A
current recipe without val evidence (from before ``val_scores``; its provenance is read
when it has the values) is kept unless forced. The reason (:attr:`PromotionResult.reason`)
states the interval. A verdict that serves nothing is written with state ``withheld``
(:meth:`RecipeStore.withheld`): it never becomes current, and says why nothing is served.
Promotions into a local SQLite store are serialised across processes with a lock
file next to the database; for remote stores concurrent promoters are reconciled on
read (the newest ``current`` run of a key wins).

Fast reads: every promotion bumps the experiment tag ``generation``. A store keeps the
current records it read last with the generation they were read at, and reads them again
only when the generation changed: an uncached read costs one ``get_experiment`` call (and
for a local SQLite store, when the file has not changed since, a ``stat``).
docs/architecture.md gives the figures and why the store stays on tags rather than
MLflow's Model Registry.

>>> store = RecipeStore("sqlite:////tmp/rs/mlflow.db")          # doctest: +SKIP
>>> store.promote("resnet18", "cifar10", "3f2a9c1d0b7e4a55", recipe,       # doctest: +SKIP
...               {"test_probe_top1": 0.34}, provenance, scores=[0.33, 0.34, 0.35], budget="proxy")
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import threading
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from . import config
from .config import STORE_EXPERIMENT
from trainer.locks import file_lock
from .stats import Interval, paired_interval, summary, welch_interval
from .store_backend import (StoreOutdated, StoreUnavailable, artifact_root_for, check_sqlite_file, describe,
                            redact, sqlite_path)
from . import records
from .records import (TAG_BACKBONE, TAG_BUDGET, TAG_DATASET, TAG_FINGERPRINT, TAG_GENERATION, TAG_PROMOTED_AT,
                      TAG_PROVENANCE, TAG_RECIPE, TAG_SCHEMA, TAG_SCORES, TAG_SOURCE_RUN, TAG_STATE, TAG_VERDICT)
from .store_records import (CURRENT, PENDING, PRIMARY_METRIC, SCHEMA, SUPERSEDED, WITHHELD, PromotedRecipe,
                            PromotionResult, TrialRun, fmt_interval, now, to_record, to_trial, validate_promotion)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from trainer.recipe import Recipe

__all__ = [
    "StoreUnavailable", "StoreOutdated", "PromotedRecipe", "PromotionResult", "RecipeStore", "TrialRun",
    "artifact_root_for", "sqlite_path", "TAG_BACKBONE", "TAG_DATASET", "TAG_FINGERPRINT", "TAG_BUDGET",
    "TAG_SCHEMA", "TAG_STATE", "TAG_RECIPE", "TAG_PROVENANCE", "TAG_SCORES", "TAG_VERDICT", "TAG_SOURCE_RUN",
    "TAG_PROMOTED_AT", "TAG_GENERATION", "PRIMARY_METRIC", "SCHEMA",
]

SNAPSHOT_MODES = ("auto", "generation", "off")  # RecipeStore(snapshot=...): see the class docstring


class RecipeStore:
    """Best recipes per backbone, kept as runs of one MLflow experiment.

    ``tracking_uri=None`` uses :func:`config.default_tracking_uri`. With
    ``create=False`` (what the API uses) the store never creates anything: a missing
    SQLite file or experiment reads as unavailable/empty instead of being created.
    Connecting is lazy, so constructing a store never fails.

    ``snapshot`` says when reads reuse the current records read last: ``auto`` (a local
    SQLite file unchanged since, else an unchanged generation tag), ``generation``
    (the tag only: one ``get_experiment`` per read, e.g. for a file whose stat cannot be
    trusted) or ``off`` (``search_runs`` on every read).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = STORE_EXPERIMENT,
        *,
        create: bool = True,
        snapshot: str = "auto",
    ) -> None:
        if snapshot not in SNAPSHOT_MODES:
            raise ValueError(f"snapshot must be one of {', '.join(SNAPSHOT_MODES)}, got {snapshot!r}")
        self.snapshot = snapshot
        self.tracking_uri = tracking_uri or config.default_tracking_uri()
        self.experiment = experiment
        self.create = create
        self._db = sqlite_path(self.tracking_uri)
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._lock = threading.RLock()
        # the current records last read, keyed by what they were read at: (generation, db stat)
        self._snapshot: tuple[str | None, tuple | None, list[PromotedRecipe]] | None = None

    def __repr__(self) -> str:
        return f"RecipeStore({redact(self.tracking_uri)!r}, experiment={self.experiment!r})"

    # -- connection --------------------------------------------------------------
    @property
    def display_uri(self) -> str:
        return redact(self.tracking_uri)

    def _connect(self) -> MlflowClient:
        """Return a client, checking the SQLite file first (cheap, every call)."""
        if self._db is not None:
            check_sqlite_file(self._db, self.display_uri, must_exist=not self.create)
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
        msg = describe(exc)
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
                        tags={records.TAG_KIND: records.STORE_EXPERIMENT},
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
            self._current_runs(fresh=True)

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
            state, schema = records.Promotion.state_of(run.data.tags)
            if state not in (CURRENT, SUPERSEDED):
                continue  # pending (being written) or not a promotion
            if schema != SCHEMA:
                raise self._outdated(run)
            rec = to_record(run)
            if rec is not None:
                out.append(rec)
        return out

    def _outdated(self, run: Run) -> StoreOutdated:
        schema = records.Promotion.state_of(run.data.tags)[1]
        tags = run.data.tags
        what = f"promotion run {run.info.run_id} ({tags.get(TAG_BACKBONE, '?')}/{tags.get(TAG_DATASET, '?')})"
        if self._db is not None:
            fresh = f"move {self._db} aside, or point RECIPE_SEARCH_HOME or --tracking-uri at a new place"
        else:
            fresh = (f"point --tracking-uri or MLFLOW_TRACKING_URI at a new store, or delete the "
                     f"experiment {self.experiment!r} there")
        if schema is None:
            found = f"from before metric names said their split (metric probe_top1, no {TAG_SCHEMA} tag)"
        else:
            found = f"of another schema ({TAG_SCHEMA} {schema!r}; this recipe-search reads {SCHEMA!r})"
        return StoreOutdated(
            f"recipe store {self.display_uri} holds promotions {found}, e.g. {what}; start a fresh "
            f"store ({fresh}) and re-run the searches"
        )

    def _current_runs(self, backbone: str | None = None, *, fresh: bool = False) -> list[PromotedRecipe]:
        """Every run tagged current (a key may briefly have two, see _currents): the snapshot
        when no promotion landed since it was read (``fresh``: always read them)."""
        recs = self._read_currents() if fresh or self.snapshot == "off" else self._snapshot_currents()
        if backbone is not None:
            recs = [r for r in recs if r.backbone == backbone]
        return recs

    def _read_currents(self) -> list[PromotedRecipe]:
        # One tag filter only: MLflow's SQL for two tag filters is ~3x slower, and the
        # current runs are few (backbones x datasets x fingerprints); filter in Python.
        # Every current run is checked, so an outdated store is refused for any backbone.
        flt = records.filter(state=CURRENT)
        return [r for r in self._records(self._search(flt)) if r.state == CURRENT]

    def _db_signature(self) -> tuple | None:
        if self._db is None or self.snapshot != "auto":
            return None
        try:
            st = self._db.stat()
        except OSError:
            return None
        wal = self._db.with_name(self._db.name + "-wal")
        wal_sig = (wal.stat().st_mtime_ns, wal.stat().st_size) if wal.exists() else None
        return (st.st_ino, st.st_size, st.st_mtime_ns, wal_sig)

    def _generation(self) -> str | None:
        """The store experiment's generation tag (:data:`records.TAG_GENERATION`) (None: no experiment, or no promotion
        by a recipe-search that bumps it: such a store is read afresh every time)."""
        client = self._connect()
        exp = self._experiment(client, create=False)
        if exp is None:
            return None
        return client.get_experiment(exp).tags.get(TAG_GENERATION)

    def _snapshot_currents(self) -> list[PromotedRecipe]:
        """The current records, read again only when a promotion landed since the last read."""
        snap = self._snapshot
        sig = self._db_signature()
        if snap is not None and sig is not None and snap[1] == sig:
            self._connect()  # the SQLite file check: a store deleted or corrupted since fails now
            return snap[2]  # a local SQLite file that has not changed at all: nothing landed
        generation = self._generation()
        if snap is not None and generation is not None and snap[0] == generation:
            self._snapshot = (generation, sig, snap[2])
            return snap[2]
        recs = self._read_currents()
        # read the generation *before* the records: a promotion landing in between bumps it
        # again after this read, so the next read sees a newer generation and reads afresh
        self._snapshot = (generation, sig, recs) if generation is not None or sig is not None else None
        return recs

    def _bump_generation(self, client: MlflowClient, exp: str) -> None:
        client.set_experiment_tag(exp, TAG_GENERATION, now())

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

    def _fresh_key(self, key: tuple[str, str, str]) -> PromotedRecipe | None:
        recs = [r for r in self._current_runs(key[0], fresh=True) if r.key == key]
        return max(recs, key=lambda r: (r.updated_at, r.run_id)) if recs else None

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
        flt = records.filter(backbone=backbone) if records.filterable(backbone) else ""
        with self._wrap():
            recs = [r for r in self._records(self._search(flt)) if r.backbone == backbone]
        return self._newest_first(recs)

    def withheld(self, backbone: str) -> PromotedRecipe | None:
        """The newest verdict of ``backbone`` that served nothing (None: there is none)."""
        if not records.filterable(backbone):
            return None
        with self._wrap():
            recs = [to_record(r) for r in self._search(records.filter(state=WITHHELD))]
        recs = [r for r in recs if r is not None and r.backbone == backbone]
        return self._newest_first(recs)[0] if recs else None

    def backbones(self) -> list[str]:
        """Backbones that have a current recipe, sorted."""
        return sorted({r.backbone for r in self.list()})

    def trials(self, backbone: str, limit: int = 20) -> list[TrialRun]:
        """The trial leaderboard of ``backbone``: trial runs (:class:`records.Trial`)
        of ``backbone`` in any active experiment, best ``val_knn_top1``
        first (runs without it last). Confirmation trials are included (``stage``)."""
        if not records.filterable(backbone) or limit < 1:
            return []
        flt = records.filter(kind=records.TRIAL, backbone=backbone)
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
        rows = [to_trial(r) for r in runs]
        rows.sort(key=lambda t: (t.val_knn_top1 is not None, t.val_knn_top1 or 0.0), reverse=True)
        return rows[:limit]


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
        val_scores: dict | None = None,
        served: bool = True,
        budget: str = "",
        source_run_id: str | None = None,
        force: bool = False,
    ) -> PromotionResult:
        """Make ``recipe`` the current one for (backbone, dataset, fingerprint).

        ``scores`` are its per-seed confirmed ``test_probe_top1`` values (reported, never
        compared) and ``metrics["test_probe_top1"]`` their mean; ``val_scores`` its per-seed
        ``val_knn_top1`` (``{seed: value}``). It lands when the key has no current recipe,
        when the interval on its val lift over the current recipe's lies above 0 (see the
        module docstring), or with ``force``. ``served=False`` records a verdict that serves
        nothing (state ``withheld``; the current recipe stays). Returns what is current
        afterwards and why (the reason states the interval)."""
        recipe_dict, metrics_f, scores_t, key = validate_promotion(
            backbone, dataset, fingerprint, budget, recipe, metrics, scores)
        new = summary(scores_t)
        if not self.create:
            raise StoreUnavailable(f"recipe store {self.display_uri} was opened read-only")
        with self._wrap(), self._promote_lock():
            client = self._connect()
            exp = self._experiment(client, create=True)
            old = self._fresh_key(key)
            lift: Interval | None = None
            vals = {int(k): float(v) for k, v in (val_scores or {}).items()}
            if not served:
                reason = (f"nothing served for {'/'.join(key)}: {(provenance or {}).get('withheld_because') or 'the verdict supports no recipe'}"
                          + ("" if old is None else f"; the current recipe (store run {old.run_id}) stays"))
            elif old is None:
                reason = (f"first recipe for {'/'.join(key)} (budget {budget or '-'}): "
                          f"{PRIMARY_METRIC} {new.fmt(3)} over {new.n} seed{'s' * (new.n != 1)}")
            else:
                lift = val_lift(vals, old.val_scores)
                head = ("no val_knn_top1 interval against the current recipe (it needs 2+ per-seed val scores on "
                        f"both sides; a recipe promoted before {records.TAG_VAL_SCORES} may have none)"
                        if lift is None else f"val_knn_top1 lift over the current recipe {fmt_interval(lift)}")
                if lift is None and not force:
                    return PromotionResult(promoted=False, reason=f"{head}; kept the current recipe (store run "
                                           f"{old.run_id}); --force replaces it", current=old)
                if lift is None:
                    reason = f"{head}; forced: replaced"
                elif lift.low > 0:
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
            promoted_at = now()
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
            record = records.Promotion(
                backbone=backbone, dataset=dataset, fingerprint=fingerprint, budget=budget, recipe=recipe_dict,
                scores=scores_t, provenance=prov, state=PENDING, val_scores=vals, verdict=verdict_name,
                source_run_id=source_run_id, promoted_at=promoted_at)
            tags = record.to_tags()  # ValueError: a recipe too long for a tag
            # keep the tag readable; the full provenance is an artifact
            full_prov_json = None if record.provenance_fits else json.dumps(prov, indent=2, default=str)
            run = client.create_run(exp, run_name="/".join(key), tags=tags)
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
                client.set_tag(run_id, TAG_STATE, CURRENT if served else WITHHELD)
            except BaseException:
                with contextlib.suppress(Exception):
                    client.set_terminated(run_id, "FAILED")
                raise
            if not served:
                client.set_terminated(run_id, "FINISHED")
                return PromotionResult(promoted=False, reason=reason, current=old)
            # Supersede every older current run of the key (not just `old`), never a newer one.
            for rec in self._current_runs(backbone, fresh=True):
                if rec.key == key and rec.run_id != run_id and rec.updated_at <= promoted_at:
                    for tag, value in records.Promotion.state_tags(SUPERSEDED, superseded_by=run_id,
                                                                   at=promoted_at).items():
                        client.set_tag(rec.run_id, tag, value)
            client.set_terminated(run_id, "FINISHED")
            self._bump_generation(client, exp)
            self._snapshot = None
            current = self._fresh_key(key)
            assert current is not None
            return PromotionResult(promoted=current.run_id == run_id, reason=reason, current=current,
                                   lift=lift)


def val_lift(new: dict | None, old: dict | None) -> Interval | None:
    """The 95% interval on ``val_knn_top1`` lift of ``new`` over ``old`` (``{seed: value}``):
    paired over the seeds they share when they share 2+, Welch otherwise; None without 2+
    values on each side."""
    if not new or not old:
        return None
    shared = sorted(set(new) & set(old))
    if len(shared) >= 2:
        return paired_interval([new[s] for s in shared], [old[s] for s in shared])
    if len(new) >= 2 and len(old) >= 2:
        return welch_interval(list(new.values()), list(old.values()))
    return None
