"""Budgets: how big one search is (proxy data, epochs, trials, early stopping, confirmation).

* ``smoke`` -- a CPU search for the README (see its description for the sizes): a plumbing
  check, too short to learn.
* ``cpu`` -- the smallest CPU search that learns: 10 classes x 200 images, 32 px, 8 epochs,
  10 trials, about 40 minutes on 2 idle cores with its confirmation; the ``sinfonce-light``
  baseline beats the untrained floor by 4.8 val-kNN points over 5 seeds (95% interval
  [+2.0, +7.7]), ``mocov2`` does not (docs/results.md). The evidence studies
  (``bench/bench_quality.py``) run at this budget.
* ``proxy`` -- the real proxy search for a GPU: 10 classes x 500 images at 32 px,
  30 epochs, 40 trials (the first two are the baselines), ASHA from epoch 5.
* ``tiny`` -- seconds per trial (16 px); for tests and CI only.

Every budget has a confirmation stage: its ``confirm_k`` best searched recipes (by the
validation objective) and both baselines are trained again with ``confirm_seeds``
fresh seeds, and only then is the test split read. The val split decides everything
before that, so it is sized for it: :attr:`Budget.val_se` is the standard error of a
val top-1 near 50% (the worst case), printed with the budget.

A budget fixes a few recipe fields (``fixed``) on top of the space, for sampled
trials and baselines alike: the data set must hold at least one batch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from trainer.data import DataSpec

from .errors import SearchError


@dataclass(frozen=True)
class Budget:
    name: str
    description: str
    classes: int
    train_per_class: int
    val_per_class: int
    test_per_class: int
    image_size: int
    max_epochs: int
    num_samples: int
    grace_period: int
    reduction_factor: int = 3
    gpus_per_trial: float = 0.25  # when a GPU is present and --gpus-per-trial is not given
    checkpoint_every: int = 1  # epochs between the trial checkpoints persisted to Tune's storage
    fixed: dict = field(default_factory=dict)
    confirm_k: int = 3  # finalists confirmed beside both baselines
    confirm_seeds: int = 3  # fresh seeds per confirmed recipe

    @property
    def val_se(self) -> float:
        """Standard error of a val top-1 near 50% on this budget's val split (worst case)."""
        return 0.5 / math.sqrt(max(1, self.classes * self.val_per_class))

    @property
    def test_se(self) -> float:
        return 0.5 / math.sqrt(max(1, self.classes * self.test_per_class))

    def summary(self) -> str:
        return (f"{self.description}; val {self.classes}x{self.val_per_class} (SE <= {100 * self.val_se:.1f} "
                f"points), test {self.classes}x{self.test_per_class} (SE <= {100 * self.test_se:.1f}); "
                f"confirmation: top {self.confirm_k} + 2 baselines x {self.confirm_seeds} seeds")

    def with_sizes(self, **sizes: int | None) -> "Budget":
        """A copy with per-class sizes replaced (``None`` keeps the budget's)."""
        changes = {k: v for k, v in sizes.items() if v is not None}
        for k, v in changes.items():
            if k not in ("train_per_class", "val_per_class", "test_per_class"):
                raise SearchError(f"unknown budget size {k!r}")
            low = 0 if k == "val_per_class" else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise SearchError(f"--{k.replace('_', '-')} must be an integer >= {low}, got {v!r}")
        return dataclasses.replace(self, **changes)

    def data_spec(self, dataset: str, root: str | None, cache_dir: str | None = None,
                  download: bool = False) -> DataSpec:
        return DataSpec(dataset=dataset, root=root, classes=self.classes,
                        train_per_class=self.train_per_class, val_per_class=self.val_per_class,
                        test_per_class=self.test_per_class, cache_dir=cache_dir, download=download)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "classes": self.classes, "train_per_class": self.train_per_class,
            "val_per_class": self.val_per_class, "test_per_class": self.test_per_class,
            "image_size": self.image_size, "max_epochs": self.max_epochs,
            "num_samples": self.num_samples, "grace_period": self.grace_period,
            "reduction_factor": self.reduction_factor, "checkpoint_every": self.checkpoint_every,
            "fixed": dict(self.fixed), "confirm_k": self.confirm_k, "confirm_seeds": self.confirm_seeds,
        }


BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        name="smoke",
        description="CPU smoke search: 10 classes x 64 train images, 32 px, 3 epochs, 6 trials",
        classes=10, train_per_class=64, val_per_class=40, test_per_class=50,
        image_size=32, max_epochs=3, num_samples=6, grace_period=1, reduction_factor=2,
        gpus_per_trial=0.25, confirm_k=1, confirm_seeds=3,
        fixed={"batch_size": 64, "queue_size": 512},
    ),
    "cpu": Budget(
        name="cpu",
        description="CPU search that learns: 10 classes x 200 train images, 32 px, 8 epochs, 10 trials",
        classes=10, train_per_class=200, val_per_class=50, test_per_class=50,
        image_size=32, max_epochs=8, num_samples=10, grace_period=2, reduction_factor=3,
        gpus_per_trial=0.25, confirm_k=1, confirm_seeds=3,
        fixed={"batch_size": 64, "queue_size": 1024},
    ),
    "proxy": Budget(
        name="proxy",
        description="GPU proxy search: 10 classes x 500 images, 32 px, 30 epochs, 40 trials",
        classes=10, train_per_class=500, val_per_class=100, test_per_class=100,
        image_size=32, max_epochs=30, num_samples=40, grace_period=5, reduction_factor=3,
        gpus_per_trial=0.25, checkpoint_every=5,  # at ASHA's rungs (5, 15, 30): see docs/capacity.md
        fixed={},
    ),
    "tiny": Budget(
        name="tiny",
        description="tests/CI: 2 classes x 32 images, 16 px, 2 epochs, 4 trials",
        classes=2, train_per_class=32, val_per_class=8, test_per_class=16,
        image_size=16, max_epochs=2, num_samples=4, grace_period=1, reduction_factor=2,
        gpus_per_trial=0.25, confirm_k=1, confirm_seeds=2,
        fixed={"batch_size": 16, "queue_size": 64},
    ),
}


def get_budget(name: str) -> Budget:
    try:
        return BUDGETS[name]
    except KeyError:
        raise SearchError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}") from None
