"""Pydantic response (and request) models of the recipe-search API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """Every error response: a human-readable ``detail`` plus context."""

    detail: str = Field(..., examples=["unknown backbone 'resnet99'"])
    known_backbones: list[str] | None = Field(
        None, description="On 404 for an unknown backbone: the backbones the store knows."
    )
    store: str | None = Field(None, description="On 503: the store's tracking URI (password hidden).")
    known_fingerprints: list[str] | None = Field(
        None, description="On 404 for an unknown fingerprint: the backbone's current fingerprints.")
    verdict: str | None = Field(
        None, description="On 404 for a backbone whose search served nothing: that search's verdict.")
    verdict_line: str | None = Field(None, description="The verdict in one sentence, with its intervals.")
    next: str | None = Field(None, description="On 404 for a backbone whose search served nothing: what to run "
                                               "next.")


VERDICTS = "better_than_baselines | no_significant_lift | below_floor"


class Score(BaseModel):
    """Mean ± std of one metric over the confirmation seeds."""

    mean: float
    std: float = Field(..., description="Sample standard deviation (ddof=1); 0 for one seed.")
    n: int = Field(..., description="How many seeds.")
    values: list[float] = Field(..., description="The per-seed values, in seed order.")


class LiftInterval(BaseModel):
    """A 95% t interval on a difference of means (bounds null when it has no interval: one seed)."""

    mean: float
    low: float | None = None
    high: float | None = None
    n: int
    method: str = Field("", examples=["paired t interval over seeds (95%)"])
    state: str | None = Field(None, description="For a declared comparison: rejected (the lift is shown), "
                                                "futile (no look could show it) or open.")
    mde: float | None = Field(None, description="The smallest lift this comparison could have detected (80% power).")
    seeds_to_show: int | None = Field(
        None, description="For a positive lift not shown: the fresh report seeds a one-look test at its level would "
                          "need for 80% power if the lift and spread it measured held (null: shown, not positive, "
                          "more than 200, or recorded before this figure).")


class Verdict(BaseModel):
    """What the confirmation found (provenance["verdict"])."""

    verdict: str = Field(..., description=VERDICTS)
    line: str = Field(..., description="The verdict in one sentence.")
    metric: str = Field("test_probe_top1", description="The metric every score and lift is about.")
    seeds: list[int] = Field(default_factory=list, description="The report seeds the figures come from.")
    winner: str | None = None
    score: Score | None = Field(None, description="The promoted recipe's confirmed score.")
    floor: Score | None = Field(None, description="The untrained encoder's score on the same seeds.")
    baselines: dict[str, Score] = Field(default_factory=dict)
    lift: dict[str, LiftInterval] = Field(
        default_factory=dict, description="Lift over each baseline, the best baseline and the floor.")
    served: str | None = Field(None, description="The recipe served for this verdict (null: nothing is).")
    served_role: str | None = Field(None, description="finalist | baseline")
    select_seeds: list[int] = Field(default_factory=list, description="The seeds that chose the winner (val only).")
    looks: list[int] = Field(default_factory=list, description="The report phase's looks (seed counts).")
    stop: str | None = Field(None, description="decided | futile | cap | more_seeds")
    mde: float | None = Field(None, description="The smallest lift the primary comparison could have detected.")
    comparisons: dict[str, LiftInterval] = Field(
        default_factory=dict, description="The declared comparisons (Holm-adjusted, valid under the looks).")


class ProxyShape(BaseModel):
    """What the fingerprint covers (provenance["fingerprint"])."""

    model_config = ConfigDict(extra="allow")

    digest: str
    data_digest: str | None = Field(None, description="sha256 of the proxy data's images and labels.")
    image_size: int | None = None
    classes: int | None = None
    train_per_class: int | None = None
    val_per_class: int | None = None
    test_per_class: int | None = None
    epochs: int | None = None
    budget: str | None = None


class RecipeSummary(BaseModel):
    """One current recipe: the key, its verdict and its confirmed score."""

    backbone: str
    dataset: str
    fingerprint: str = Field(..., description="16 hex: the proxy data actually used and the budget shape.")
    budget: str = Field(..., description="The budget's name (informative; not part of the key).")
    verdict: str | None = Field(None, description=VERDICTS)
    test_probe_top1: Score = Field(..., description="Confirmed linear-probe top-1 on the test split, over seeds.")
    updated_at: str = Field(..., description="When it was promoted (ISO-8601 UTC).")
    run_id: str = Field(..., description="The store run's MLflow id.")


class RunLink(BaseModel):
    """Where to look at an MLflow run."""

    run_id: str
    experiment_id: str | None = None
    url: str | None = Field(None, description="MLflow UI link (only for http(s) tracking servers).")
    hint: str | None = Field(None, description="How to open the run when the store is local.")


class RecipeDetail(BaseModel):
    backbone: str
    dataset: str
    fingerprint: str = Field(..., description="16 hex: the proxy data actually used and the budget shape.")
    budget: str
    verdict: Verdict | None = Field(
        None, description="Verdict, seeds, floor, baselines and lift intervals (null if not recorded).")
    test_probe_top1: Score = Field(..., description="Confirmed linear-probe top-1 on the test split, over seeds.")
    proxy: ProxyShape | None = Field(None, description="What the fingerprint covers.")
    metrics: dict[str, float] = Field(..., description="Final metrics; the names say their split.")
    recipe: dict[str, Any] = Field(..., description="The recipe (trainer.recipe.Recipe.to_dict()).")
    provenance: dict[str, Any]
    state: str
    updated_at: str
    run_id: str = Field(..., description="The store run's MLflow id.")
    source_run_id: str | None = Field(None, description="The winning trial's MLflow run id.")
    mlflow: RunLink


class HistoryEntry(BaseModel):
    backbone: str
    dataset: str
    fingerprint: str
    budget: str
    verdict: str | None = Field(None, description=VERDICTS)
    test_probe_top1: Score
    metrics: dict[str, float]
    state: str = Field(..., description="current | superseded")
    updated_at: str
    run_id: str
    source_run_id: str | None = None
    recipe: dict[str, Any]


class Trial(BaseModel):
    run_id: str
    run_name: str | None = None
    status: str = Field(..., description="MLflow run status (RUNNING, FINISHED, FAILED, KILLED).")
    stage: str = Field(..., description="search | confirmation")
    phase: str | None = Field(None, description="A confirmation trial's phase: select (val only, the choice) | "
                                                "report (fresh seeds, reads test); null for search trials.")
    val_knn_top1: float | None = Field(None, description="kNN top-1 on the validation split (last epoch).")
    test_probe_top1: float | None = Field(None, description="Report-phase confirmation trials only.")
    test_knn_top1: float | None = Field(None, description="Report-phase confirmation trials only.")
    params: dict[str, str] = Field(..., description="The trial's key recipe parameters.")
    search_id: str | None = None
    experiment_id: str
    start_time: str | None = None
    mlflow: RunLink


class Health(BaseModel):
    status: str = "ok"
    version: str


class Ready(BaseModel):
    status: str = "ready"
    store: str
    recipes: int = Field(..., description="How many current recipes the store holds.")


class TrialCounts(BaseModel):
    """Trials of one stage by state (MLflow's rs.status: done, pruned, failed, running, interrupted)."""

    model_config = ConfigDict(extra="allow")

    done: int = 0
    running: int = 0
    pruned: int = 0
    failed: int = 0


class BestTrial(BaseModel):
    trial_id: str | None = None
    run_id: str
    kind: str = Field(..., description="the sampler that proposed it (`tpe`, `random`, ...) or `baseline <name>`")
    val_knn_top1: float = Field(..., description="Its val kNN top-1 (the search's objective).")


class SearchProgress(BaseModel):
    """One search of a job: its id, state and what it has done so far."""

    backbone: str
    search_id: str = Field(..., description="`recipe-search run --resume --search-id` resumes it.")
    state: str = Field(..., description="pending | running | finished | interrupted | failed")
    returncode: int | None = None
    stage: str | None = Field(None, description="search | confirmation | finished (its state file)")
    trials: TrialCounts = Field(default_factory=TrialCounts, description="Search-stage trials.")
    confirmation: TrialCounts = Field(default_factory=TrialCounts, description="Confirmation runs.")
    best: BestTrial | None = Field(None, description="The best finished search trial so far (val kNN top-1).")
    floor_val_knn_top1: float | None = Field(None, description="The untrained encoder's val kNN top-1.")
    verdict: str | None = Field(None, description=VERDICTS + " (once finished)")
    verdict_line: str | None = None
    mlflow: RunLink | None = Field(None, description="The search's parent MLflow run.")
    note: str | None = None


class SearchJob(BaseModel):
    """A search job started over the API."""

    id: str
    state: str = Field(..., description="running | stopping | cancelled | interrupted | finished | failed")
    resumable: bool = Field(..., description="POST /searches/{id}/resume continues it.")
    created_at: str
    updated_at: str
    request: dict[str, Any] = Field(..., description="The typed request it was started with.")
    trials: int = Field(..., description="Trials per search (baselines included).")
    searches: list[SearchProgress]
    pid: int | None = Field(None, description="The current (or last) `recipe-search run` process.")
    runs: int = Field(0, description="How many `recipe-search run` processes it has started.")
    log: str = Field(..., description="Where its processes' log is served: `GET /searches/{id}/log` "
                                      "(`?tail=N` lines, `?follow=true` streams it until the job ends).")
    message: str | None = None
    error: str | None = None
