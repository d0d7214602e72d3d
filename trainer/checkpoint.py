"""Mid-run checkpoints: written atomically, validated on load."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import CheckpointError
from .recipe import Recipe


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` via a temp file + rename, so a kill never leaves half a file."""
    tmp = Path(str(path) + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, recipe: Recipe) -> dict:
    """Load a resume checkpoint and check that it belongs to ``recipe``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as e:  # noqa: BLE001 - corrupt files raise many types
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or unreadable ({e}); "
                              "delete it to start the run afresh") from None
    if not isinstance(state, dict) or "recipe" not in state:
        raise CheckpointError(f"{str(path)!r} is not a trainer checkpoint")
    saved = state["recipe"]
    current = recipe.to_dict()
    diff = sorted(k for k in current if saved.get(k) != current[k] and k != "epochs")
    if diff:
        raise CheckpointError(f"checkpoint {str(path)!r} was written by another recipe "
                              f"(fields differ: {', '.join(diff)}); use another --out or delete it")
    return state
