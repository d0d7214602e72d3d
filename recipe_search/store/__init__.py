"""The recipe store: the best recipe per (backbone, dataset, fingerprint), kept in MLflow.

The store is the MLflow experiment ``recipe-store`` (:data:`config.STORE_EXPERIMENT`).
The key is ``(backbone, dataset, fingerprint)``: the *fingerprint* is a 16-hex digest
of the proxy data actually used (a digest of its images and labels) and of the budget
shape (image size, classes, per-class sizes, epochs), so two searches on "cifar10"
with different subsets or budgets never compete. Every promotion is one run, named
``<backbone>/<dataset>/<fingerprint>``, whose tags :class:`records.Promotion` writes and reads
(the key, the budget, the schema -- runs of another schema make reads fail with
:class:`StoreOutdated` --, the state ``current`` | ``superseded`` | ``withheld`` (``pending``
while being written; readers ignore it), the per-seed confirmed ``test_probe_top1`` scores, the
verdict, the recipe, the provenance, the source run and when it was promoted), with metric
``test_probe_top1`` (:data:`PRIMARY_METRIC`, the mean of the scores) and the recipe also logged
as ``recipe.json``. Reads only use ``MlflowClient.search_runs`` on tags, never artifacts.

Replacement rule, decided on validation, never on the test split (:mod:`.store_replace`):
the first promotion of a key always lands; a later one replaces the current recipe only when
the interval on its ``val_knn_top1`` lift over it lies above 0, or with ``force=True``; the
old run's state becomes ``superseded``. A verdict that serves nothing is written with state ``withheld``
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
import threading
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from .. import config
from ..config import STORE_EXPERIMENT, artifact_root_for, sqlite_path
from trainer.locks import file_lock
from ..verdict.stats import summary
from .backend import (StoreOutdated, StoreUnavailable, check_sqlite_file, outdated_error,
                      store_experiment, unavailable_error, redact, sqlite_signature)
from .. import records
from ..records import TAG_GENERATION, TAG_STATE
from .promoted import (CURRENT, PENDING, PRIMARY_METRIC, SCHEMA, SUPERSEDED, WITHHELD, PromotedRecipe,
                       PromotionResult, TrialRun, now, to_record, trial_leaderboard, validate_promotion)
from .replace import provenance_of, replacement

if TYPE_CHECKING:  # pragma: no cover
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from trainer.recipe import Recipe

__all__ = [
    "StoreUnavailable", "StoreOutdated", "PromotedRecipe", "PromotionResult", "RecipeStore", "TrialRun",
    "artifact_root_for", "sqlite_path", "PRIMARY_METRIC", "SCHEMA",
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

    def __init__(self, tracking_uri: str | None = None, experiment: str = STORE_EXPERIMENT, *,
                 create: bool = True, snapshot: str = "auto") -> None:
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
        return unavailable_error(exc, self._db, self.display_uri)

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
        if self._experiment_id is None:
            with self._lock:
                self._experiment_id = store_experiment(client, self.experiment, self.tracking_uri, create=create)
        return self._experiment_id

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
        return outdated_error(run, self.display_uri, self._db, self.experiment)

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
        return sqlite_signature(self._db) if self.snapshot == "auto" else None

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
        """The trial leaderboard of ``backbone`` (:class:`records.Trial` runs in any active experiment,
        confirmation runs included), best ``val_knn_top1`` first (runs without it last)."""
        if not records.filterable(backbone) or limit < 1:
            return []
        with self._wrap():
            return trial_leaderboard(self._connect(), backbone, limit)

    def finished_trials(self, dataset: str, limit: int = 200) -> list[TrialRun]:
        """Search-stage trials of any backbone on ``dataset`` that ran to the end, best val first."""
        with self._wrap():
            return trial_leaderboard(self._connect(), None, limit, dataset=dataset, stage=records.Trial.STAGE,
                                     status="completed") if records.filterable(dataset) and limit > 0 else []

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
        if not self.create:
            raise StoreUnavailable(f"recipe store {self.display_uri} was opened read-only")
        with self._wrap(), self._promote_lock():
            client = self._connect()
            exp = self._experiment(client, create=True)
            old = self._fresh_key(key)
            vals = {int(k): float(v) for k, v in (val_scores or {}).items()}
            decision = replacement(key, budget=budget, new=summary(scores_t), old=old, vals=vals, force=force,
                                   served=served, provenance=provenance)
            if not decision.lands:
                return PromotionResult(promoted=False, reason=decision.reason, current=old, lift=decision.lift)
            promoted_at = now()
            prov = provenance_of(provenance, backbone=backbone, dataset=dataset, fingerprint=fingerprint,
                                 budget=budget, metrics=metrics_f, source_run_id=source_run_id, scores=scores_t,
                                 promoted_at=promoted_at, force=force, decision=decision, old=old)
            verdict = prov.get("verdict")
            record = records.Promotion(
                backbone=backbone, dataset=dataset, fingerprint=fingerprint, budget=budget, recipe=recipe_dict,
                scores=scores_t, provenance=prov, state=PENDING, val_scores=vals,
                verdict=verdict.get("verdict") if isinstance(verdict, dict) else None,
                source_run_id=source_run_id, promoted_at=promoted_at)
            run_id = self._write(client, exp, record, metrics_f, served=served)
            if not served:
                return PromotionResult(promoted=False, reason=decision.reason, current=old)
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
            return PromotionResult(promoted=current.run_id == run_id, reason=decision.reason, current=current,
                                   lift=decision.lift)

    def _write(self, client: MlflowClient, exp: str, record: records.Promotion, metrics: dict, *,
               served: bool) -> str:
        """Write one promotion run (pending until written, then current or withheld); its id.
        A withheld run is finished here; a current one after the older runs are superseded."""
        from mlflow.entities import Metric

        tags = record.to_tags()  # ValueError: a recipe too long for a tag
        # keep the tag readable; the full provenance is an artifact
        full_prov_json = None if record.provenance_fits else json.dumps(record.provenance, indent=2, default=str)
        run_id = client.create_run(exp, run_name="/".join((record.backbone, record.dataset, record.fingerprint)), tags=tags).info.run_id
        try:
            ts = int(_dt.datetime.now(_dt.timezone.utc).timestamp() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, v, ts, 0) for k, v in sorted(metrics.items())])
            client.log_text(run_id, json.dumps(record.recipe, indent=2), "recipe.json")
            if full_prov_json is not None:
                client.log_text(run_id, full_prov_json, "provenance.json")
            client.set_tag(run_id, TAG_STATE, CURRENT if served else WITHHELD)
        except BaseException:
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
            raise
        if not served:
            client.set_terminated(run_id, "FINISHED")
        return run_id
