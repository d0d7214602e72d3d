"""The read API's response bodies from the store's records: pydantic models, serialised once.

``render`` turns a model (or a list of them) into a cacheable ``Rendered`` with a strong ETag;
the other helpers map a ``PromotedRecipe``/``TrialRun`` and its provenance onto the models of
``api/models.py``, leaving out what does not fit the contract (no inf/nan in JSON).
``NotFound`` is what a read raises for an unknown backbone or a missing recipe; ``not_found``
and ``unavailable`` are the 404 and 503 bodies.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from recipe_search.store import PromotedRecipe, StoreOutdated, StoreUnavailable

from .models import ErrorBody, ProxyShape, RecipeSummary, Score, Verdict

KEY_PARAMS = (
    "optimizer", "lr", "batch_size", "epochs", "weight_decay", "warmup_epochs", "temperature",
    "smoothing", "smoothing_k", "smoothing_ramp", "queue_size", "key_momentum",
    "crop_min_scale", "jitter_strength", "blur_p", "solarize_p", "proj_out_dim", "image_size",
)
JSON = "application/json"


@dataclass(frozen=True)
class Rendered:
    """A cached, fully serialised response."""

    status: int
    body: bytes
    etag: str | None
    headers: tuple[tuple[str, str], ...] = ()


def render(status: int, payload: BaseModel | list[BaseModel], headers: dict | None = None) -> Rendered:
    if isinstance(payload, list):
        body = b"[" + b",".join(p.model_dump_json(exclude_none=False).encode() for p in payload) + b"]"
    else:
        body = payload.model_dump_json(exclude_none=isinstance(payload, ErrorBody)).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:40] + '"' if status == 200 else None
    return Rendered(status, body, etag, tuple((headers or {}).items()))


class NotFound(Exception):
    def __init__(self, detail: str, known: list[str], fingerprints: list[str] | None = None,
                 withheld: PromotedRecipe | None = None) -> None:
        self.detail, self.known, self.fingerprints, self.withheld = detail, known, fingerprints, withheld


def not_found(e: NotFound) -> Rendered:
    """The 404 body: the known backbones/fingerprints, and a withheld search's verdict and next step."""
    held = e.withheld
    return render(404, ErrorBody(
        detail=e.detail, known_backbones=e.known, known_fingerprints=e.fingerprints,
        verdict=held.verdict if held else None, verdict_line=held.verdict_line if held else None,
        next=next_step(held.provenance) if held else None))


def unavailable(e: StoreUnavailable, display_uri: str) -> Rendered:
    """The 503 body; an outdated store does not heal by waiting: no Retry-After."""
    retry = {} if isinstance(e, StoreOutdated) else {"Retry-After": "5"}
    return render(503, ErrorBody(detail=str(e), store=display_uri), retry)


def score(r: PromotedRecipe) -> Score:
    s = r.score
    return Score(mean=s.mean, std=s.std, n=s.n, values=list(s.values))


def summary(r: PromotedRecipe) -> RecipeSummary:
    return RecipeSummary(backbone=r.backbone, dataset=r.dataset, fingerprint=r.fingerprint, budget=r.budget,
                         verdict=r.verdict, test_probe_top1=score(r), updated_at=r.updated_at, run_id=r.run_id)


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no inf/nan)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def verdict(provenance: dict) -> Verdict | None:
    """provenance["verdict"] as a model; a part that does not fit the contract is left out."""
    v = provenance.get("verdict")
    if not isinstance(v, dict):
        return None
    v = finite(v)
    try:
        return Verdict.model_validate(v)
    except ValidationError:
        pass
    try:  # keep what fits: the verdict and its line at least
        return Verdict.model_validate({k: v[k] for k in ("verdict", "line", "metric", "seeds", "winner") if k in v})
    except ValidationError:
        return None


def next_step(provenance: dict) -> str:
    """What to run next, from a withheld verdict's provenance."""
    why = provenance.get("withheld_because") or ""
    return why.split("next: ", 1)[1] if "next: " in why else (
        "run a longer search (recipe-search run --budget cpu, or --budget proxy on a GPU) or add report seeds "
        "(--report-looks)")


def proxy(provenance: dict) -> ProxyShape | None:
    p = provenance.get("fingerprint")
    if not isinstance(p, dict):
        return None
    try:
        return ProxyShape.model_validate(finite(p))
    except ValidationError:
        return None


def key_params(params: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, value in params.items():
        short = name.replace("/", ".").rsplit(".", 1)[-1]
        if short in KEY_PARAMS:
            out[short if short not in out else name] = value
    if not out:  # unknown naming: give everything, bounded
        out = dict(sorted(params.items())[:32])
    return out
