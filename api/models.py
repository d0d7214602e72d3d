"""Pydantic response (and request) models of the recipe-search API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints


class ErrorBody(BaseModel):
    """Every error response: a human-readable ``detail`` plus context."""

    detail: str = Field(..., examples=["unknown backbone 'resnet99'"])
    known_backbones: list[str] | None = Field(
        None, description="On 404 for an unknown backbone: the backbones the store knows."
    )
    store: str | None = Field(None, description="On 503: the store's tracking URI (password hidden).")


class RecipeSummary(BaseModel):
    backbone: str
    dataset: str
    budget: str
    metric: float = Field(..., description="Linear-probe top-1 accuracy (probe_top1) of the recipe.")
    updated_at: str = Field(..., description="When it was promoted (ISO-8601 UTC).")


class RunLink(BaseModel):
    """Where to look at an MLflow run."""

    run_id: str
    experiment_id: str | None = None
    url: str | None = Field(None, description="MLflow UI link (only for http(s) tracking servers).")
    hint: str | None = Field(None, description="How to open the run when the store is local.")


class RecipeDetail(BaseModel):
    backbone: str
    dataset: str
    budget: str
    metric: float
    metrics: dict[str, float]
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
    budget: str
    metric: float
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
    probe_top1: float | None = None
    knn_top1: float | None = None
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


class SearchRequest(BaseModel):
    """Arguments appended to ``recipe-search run`` (no shell is involved)."""

    args: list[Annotated[str, StringConstraints(max_length=4096, pattern=r"^[^\x00]*$")]] = Field(
        default_factory=list, max_length=64, examples=[["--help"]]
    )


class SearchJob(BaseModel):
    id: str
    pid: int
    command: list[str]
    log: str
    status: str = Field(..., description="running | exited")
    returncode: int | None = None
    started_at: str
