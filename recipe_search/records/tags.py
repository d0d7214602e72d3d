"""The MLflow tag names every recipe-search run carries, and the filter strings that find runs by them.

These names are the stored format: existing stores are read by them, so a value here never
changes (a new tag gets a new name). Everything else reads and writes them through the
records of :mod:`recipe_search.records` or through :func:`filter`.
"""

from __future__ import annotations

import re

# -- every run of a search: the key the search's runs share -------------------------
TAG_KIND = "rs.kind"  # search | trial | promotion | train (runs); searches | store (experiments)
TAG_SEARCH = "rs.search_id"
TAG_BACKBONE = "rs.backbone"
TAG_DATASET = "rs.dataset"
TAG_BUDGET = "rs.budget"
TAG_FINGERPRINT = "rs.fingerprint"
TAG_VERSION = "rs.version"  # the recipe-search version that trained a run
TAG_STATUS = "rs.status"
TAG_RETRIES = "rs.retries"  # a trial run: times Tune retried it after a system failure (retries.py)
TAG_RETRY_REASON = "rs.retry_reason"  # a trial run: the latest such failure, one line
RETRY_PREFIX = "rs.retry."  # a parent run: one tag per retried trial, rs.retry.<trial id>
TAG_ERROR = "rs.error"
TAG_STAGE = "rs.stage"  # trial: search | confirmation; parent: where the search stands
# -- a search's parent run -----------------------------------------------------------
TAG_VERDICT = "rs.verdict"
TAG_VERDICT_LINE = "rs.verdict_line"
TAG_WINNER = "rs.winner"
TAG_SERVED = "rs.served"
TAG_STOP = "rs.stop"
TAG_WINNER_RUN = "rs.winner_run_id"
TAG_BEST_TRIAL = "rs.best_trial_id"
TAG_BEST_RUN = "rs.best_run_id"
TAG_PROMOTED = "rs.promoted"  # true | false
TAG_PROMOTION = "rs.promotion"  # the promotion's reason (or its error)
# -- a trial run (search stage or confirmation) -----------------------------------------
TAG_TRIAL = "rs.trial_id"
TAG_BASELINE = "rs.baseline"
TAG_RECIPE = "rs.recipe"  # also a promotion's recipe
TAG_POINT = "rs.point"
TAG_SEED = "rs.seed"
TAG_NOTES = "rs.notes"
TAG_SAMPLER = "rs.sampler"  # a sampled trial: the label of the sampler that drew it (samplers.py)
TAG_ADOPTED = "rs.adopted_from"  # an orphan run adopted under a new trial id after a crash
TAG_REUSED = "rs.reused_from"  # a confirmation run carrying an earlier search's figures (reuse.py)
TAG_JOB = "rs.job"  # a confirmation run's recipe name
TAG_PHASE = "rs.phase"  # a confirmation run's phase: select (val only) | report (reads test)
# -- a promotion (the recipe store) ----------------------------------------------------
TAG_SCHEMA = "rs.schema"
TAG_STATE = "rs.state"
TAG_PROVENANCE = "rs.provenance"
TAG_SCORES = "rs.scores"
TAG_VAL_SCORES = "rs.val_scores"  # {seed: val_knn_top1}: the evidence a replacement is decided on
TAG_SOURCE_RUN = "rs.source_run_id"
TAG_PROMOTED_AT = "rs.promoted_at"
TAG_SUPERSEDED_BY = "rs.superseded_by"
TAG_SUPERSEDED_AT = "rs.superseded_at"
TAG_GENERATION = "rs.generation"  # experiment tag: bumped by every promotion (readers re-read on change)
# -- a training run of a promoted recipe (recipe-search train) -----------------------------
TAG_STORE_RUN = "rs.store_run_id"
# -- a quality study's run (bench/bench_quality.py) ------------------------------------
TAG_STUDY = "rs.study"
TAG_ROLE = "rs.role"
TAG_NAME = "rs.name"
# -- MLflow's own ---------------------------------------------------------------------
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"

# the values of TAG_KIND
SEARCH, TRIAL, PROMOTION, TRAIN = "search", "trial", "promotion", "train"
SEARCHES_EXPERIMENT, STORE_EXPERIMENT = "searches", "store"

FILTER_TAGS = {  # filter(...) keyword -> tag
    "kind": TAG_KIND, "search_id": TAG_SEARCH, "trial_id": TAG_TRIAL, "backbone": TAG_BACKBONE,
    "dataset": TAG_DATASET, "fingerprint": TAG_FINGERPRINT, "version": TAG_VERSION, "status": TAG_STATUS,
    "stage": TAG_STAGE, "phase": TAG_PHASE, "state": TAG_STATE, "study": TAG_STUDY,
}
FILTER_ATTRIBUTES = {"run_status": "attributes.status"}  # MLflow's RUNNING | FINISHED | FAILED | KILLED
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:+@/ -]*$")


def filterable(value: str) -> bool:
    """Whether ``value`` can stand in a filter string (a quoted literal MLflow parses as written)."""
    return isinstance(value, str) and bool(_SAFE_VALUE.match(value))


def filter(**where: str) -> str:  # noqa: A001 - records.filter(kind="trial", ...) reads as intended
    """An MLflow ``search_runs`` filter string: every keyword (a key of :data:`FILTER_TAGS` or
    :data:`FILTER_ATTRIBUTES`) equal to its value, joined by ``and``, in the order given.

    ``filter(kind="trial", search_id="abc")`` -> ``tags.`rs.kind` = 'trial' and tags.`rs.search_id` = 'abc'``.
    A value that cannot be expressed safely (a quote, a backslash, ...) raises ValueError, so a
    filter never silently matches more than asked; :func:`filterable` tells beforehand."""
    parts = []
    for key, value in where.items():
        if key in FILTER_TAGS:
            column = f"tags.`{FILTER_TAGS[key]}`"
        elif key in FILTER_ATTRIBUTES:
            column = FILTER_ATTRIBUTES[key]
        else:
            raise TypeError(f"filter() got an unknown keyword {key!r}; known: "
                            f"{', '.join([*FILTER_TAGS, *FILTER_ATTRIBUTES])}")
        if not filterable(value):
            raise ValueError(f"filter(): {key}={value!r} cannot be expressed in an MLflow filter string")
        parts.append(f"{column} = '{value}'")
    return " and ".join(parts)


def reused_tag(phase_key: str) -> str:
    """The parent run's tag that says how many confirmation runs of one phase were reused:
    ``confirmations`` (the select phase) -> ``rs.confirmations_reused``, ``report-5`` ->
    ``rs.report-5_reused``."""
    return f"rs.{phase_key}_reused"
