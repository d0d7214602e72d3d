"""The read routes: ``/recipes``, ``/recipes/{backbone}`` (+ ``/fingerprints``, ``/trials``,
``/history``), ``/healthz`` and ``/readyz``; their bodies come from ``api/reads.py``.

``router(reads)`` returns them as an ``APIRouter``; every one answers through ``reads.respond``
(per-key TTL cache, strong ETag, 304 on ``If-None-Match``, 404/503 JSON bodies).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path as PathParam, Query, Request
from fastapi.responses import Response

from .models import ErrorBody, Health, HistoryEntry, Ready, RecipeDetail, RecipeSummary, Trial
from .reads import Reads

ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "The store is missing, corrupt, unreachable or outdated "
                                             "(promotions from before rs.schema 2)."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown backbone (lists the known ones), or no recipe for "
                                             "the dataset/fingerprint (lists the backbone's fingerprints)."},
    **ERRORS,
}
BackboneParam = PathParam(..., description="timm model name, e.g. resnet18")
DatasetParam = Query(None, description="Only recipes promoted on this dataset.")
FingerprintParam = Query(None, pattern=r"^[0-9a-fA-F]{16}$",
                         description="Pick the recipe of this fingerprint (16 hex digits, see "
                                     "/recipes/{backbone}/fingerprints).")


def router(reads: Reads) -> APIRouter:
    """The read routes over ``reads``, in the order the OpenAPI schema lists them."""
    r = APIRouter()
    _recipe_routes(r, reads)
    _backbone_routes(r, reads)
    _ops_routes(r, reads)
    return r


def _recipe_routes(r: APIRouter, reads: Reads) -> None:
    @r.get("/recipes", response_model=list[RecipeSummary], responses=ERRORS, tags=["recipes"])
    async def list_recipes(request: Request) -> Response:
        """Every current recipe: one per (backbone, dataset, fingerprint), with its verdict and
        confirmed test_probe_top1 (mean ± std over the seeds)."""
        return await reads.respond(request, ("list",), reads.recipes)

    @r.get("/recipes/{backbone}", response_model=RecipeDetail, responses=NOT_FOUND, tags=["recipes"])
    async def get_recipe(
        request: Request,
        backbone: str = BackboneParam,
        dataset: str | None = DatasetParam,
        fingerprint: str | None = FingerprintParam,
    ) -> Response:
        """The current recipe of a backbone (the newest one unless ``dataset``/``fingerprint`` pick
        one): recipe JSON, verdict with seeds, floor and lift intervals, the confirmed
        test_probe_top1 per seed, the fingerprint, metrics, provenance and its MLflow run."""
        fp = fingerprint.lower() if fingerprint is not None else None
        return await reads.respond(request, ("recipe", backbone, dataset, fp),
                                   lambda: reads.recipe(backbone, dataset, fp))

    @r.get("/recipes/{backbone}/fingerprints", response_model=list[RecipeSummary], responses=NOT_FOUND,
           tags=["recipes"])
    async def get_fingerprints(
        request: Request, backbone: str = BackboneParam, dataset: str | None = DatasetParam,
    ) -> Response:
        """Which fingerprints (proxy data + budget shape) have a current recipe for the backbone,
        newest first: dataset, budget, verdict, confirmed test_probe_top1 and promotion time."""
        return await reads.respond(request, ("fingerprints", backbone, dataset),
                                   lambda: reads.fingerprints(backbone, dataset))


def _backbone_routes(r: APIRouter, reads: Reads) -> None:
    @r.get("/recipes/{backbone}/trials", response_model=list[Trial], responses=NOT_FOUND, tags=["recipes"])
    async def get_trials(
        request: Request,
        backbone: str = BackboneParam,
        limit: int = Query(20, ge=1, le=1000, description="How many trials (best first)."),
    ) -> Response:
        """The trial leaderboard: the backbone's trials in MLflow, best val_knn_top1 first.
        Confirmation trials (stage ``confirmation``) carry their phase; those of the report phase
        also carry test_probe_top1 and test_knn_top1 (the select phase never reads test)."""
        return await reads.respond(request, ("trials", backbone, limit), lambda: reads.trials(backbone, limit))

    @r.get("/recipes/{backbone}/history", response_model=list[HistoryEntry], responses=NOT_FOUND,
           tags=["recipes"])
    async def get_history(request: Request, backbone: str = BackboneParam) -> Response:
        """Every promotion of the backbone (current and superseded), newest first."""
        return await reads.respond(request, ("history", backbone), lambda: reads.history(backbone))


def _ops_routes(r: APIRouter, reads: Reads) -> None:
    @r.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz(request: Request) -> Response:
        """Liveness: 200 whenever the process is up."""
        return await reads.respond(request, ("healthz",), reads.health)

    @r.get("/readyz", response_model=Ready, responses=ERRORS, tags=["ops"])
    async def readyz(request: Request) -> Response:
        """Readiness: 200 when the store can be read, else 503 with the reason."""
        return await reads.respond(request, ("readyz",), reads.ready)
