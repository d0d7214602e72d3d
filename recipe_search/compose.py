"""Turn a sampled point (or a baseline) into a valid :class:`Recipe`.

Layers, later ones win: recipe defaults, the space's fixed values, the sampled
point or the baseline's values, the budget's fixed fields, then backbone,
image size, epochs and seed. Constraints between fields that independent sampling
can break are repaired, and each repair is reported as a note:

* ``queue_size`` is raised to the keys of one step (``batch_size``, x2 if symmetric), for a
  method that reads it (MoCo-v2);
* ``smoothing_k`` is clipped to the negatives of the recipe's method (MoCo-v2: ``queue_size``);
* ``warmup_epochs`` is clipped below ``epochs``.

``distill.<field>`` keys (sampled or fixed in the space) go into the distill section;
without a teacher (``distill`` null, as in the baselines) they are dropped.

The same repairs (:func:`repair`) fit a promoted recipe to ``recipe-search train``'s
``--batch-size`` and ``--epochs``.

Anything else that is invalid raises :class:`trainer.errors.RecipeError`, which
fails the trial with that message.

>>> r, notes = compose({"batch_size": 256, "queue_size": 128}, backbone="resnet18", image_size=32,
...                    epochs=2, seed=0)
>>> r.queue_size, notes
(512, ['queue_size raised from 128 to 512 (batch_size * 2 keys per step)'])
"""

from __future__ import annotations

from typing import Any

from types import SimpleNamespace

from trainer.methods import get_method
from trainer.recipe import DEFAULT_METHOD, Recipe


def compose(values: dict[str, Any], *, backbone: str, image_size: int, epochs: int, seed: int,
            fixed: dict[str, Any] | None = None, budget_fixed: dict[str, Any] | None = None,
            ) -> tuple[Recipe, list[str]]:
    d: dict[str, Any] = {**(fixed or {}), **values, **(budget_fixed or {})}
    d.update(backbone=backbone, image_size=image_size, epochs=epochs, seed=seed)
    if d.get("distill") is None:  # no teacher (e.g. a baseline): its sampled settings do not apply
        d = {k: v for k, v in d.items() if not k.startswith("distill.")}
    d, notes = repair(d, epochs=epochs)
    return Recipe.from_dict(d), notes


def repair(values: dict[str, Any], *, epochs: int) -> tuple[dict[str, Any], list[str]]:
    """``values`` (recipe fields; missing ones take the recipe defaults) with the constraints
    between fields repaired, and a note per repair: ``queue_size`` raised to the keys of one
    step, ``smoothing_k`` clipped to ``queue_size``, ``warmup_epochs`` clipped below ``epochs``.
    Used by :func:`compose` and by ``recipe-search train`` (a promoted recipe with another
    batch size or fewer epochs).

    >>> repair({"batch_size": 64, "queue_size": 32, "symmetric": False}, epochs=1)
    ({'batch_size': 64, 'queue_size': 64, 'symmetric': False}, ['queue_size raised from 32 to 64 (batch_size keys per step)'])
    """
    d = dict(values)
    defaults = {f: Recipe.__dataclass_fields__[f].default for f in Recipe.field_names()}
    get = lambda k: d.get(k, defaults[k])  # noqa: E731
    notes: list[str] = []
    method = get_method(d.get("method") or DEFAULT_METHOD)
    symmetric = bool(get("symmetric"))
    keys = int(get("batch_size")) * (2 if symmetric else 1)
    if "queue_size" in method.fields and isinstance(get("queue_size"), int) and get("queue_size") < keys:
        notes.append(f"queue_size raised from {get('queue_size')} to {keys} "
                     f"(batch_size{' * 2' if symmetric else ''} keys per step)")
        d["queue_size"] = keys
    k = get("smoothing_k")
    if isinstance(k, int) and isinstance(get("batch_size"), int) and isinstance(get("queue_size"), int):
        n, what = method.negatives(SimpleNamespace(**{**defaults, **d}))
        if k > n:
            notes.append(f"smoothing_k clipped from {k} to {what} {n}")
            d["smoothing_k"] = n
    warm = get("warmup_epochs")
    if isinstance(warm, (int, float)) and warm > 0 and warm >= epochs:
        new = float(max(0.0, epochs - 1)) if epochs > 1 else 0.0
        notes.append(f"warmup_epochs clipped from {warm:g} to {new:g} (epochs = {epochs})")
        d["warmup_epochs"] = new
    return d, notes
