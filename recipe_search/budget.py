"""Budgets: how big one search is (proxy data, epochs, trials, early stopping).

* ``smoke`` -- a CPU search for the README: 10 CIFAR-10 classes x 64 images at
  32 px, 8 trials of 4 epochs, batch and queue fixed small. About 5 minutes on
  two cores, one trial per core.
* ``proxy`` -- the real proxy search for a GPU: 10 classes x 500 images at 32 px,
  30 epochs, 40 trials (the first two are the baselines), ASHA from epoch 5.
* ``tiny`` -- seconds per trial (16 px); for tests and CI only.

A budget fixes a few recipe fields (``fixed``) on top of the space, for sampled
trials and baselines alike: the data set must hold at least one batch.
"""

from __future__ import annotations

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
            "fixed": dict(self.fixed),
        }


BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        name="smoke",
        description="CPU smoke search: 10 classes x 64 images, 32 px, 4 epochs, 8 trials",
        classes=10, train_per_class=64, val_per_class=10, test_per_class=50,
        image_size=32, max_epochs=4, num_samples=8, grace_period=2, reduction_factor=2,
        gpus_per_trial=0.25,
        fixed={"batch_size": 64, "queue_size": 512},
    ),
    "proxy": Budget(
        name="proxy",
        description="GPU proxy search: 10 classes x 500 images, 32 px, 30 epochs, 40 trials",
        classes=10, train_per_class=500, val_per_class=50, test_per_class=100,
        image_size=32, max_epochs=30, num_samples=40, grace_period=5, reduction_factor=3,
        gpus_per_trial=0.25, checkpoint_every=5,  # at ASHA's rungs (5, 15, 30): see docs/capacity.md
        fixed={},
    ),
    "tiny": Budget(
        name="tiny",
        description="tests/CI: 2 classes x 32 images, 16 px, 2 epochs, 4 trials",
        classes=2, train_per_class=32, val_per_class=8, test_per_class=16,
        image_size=16, max_epochs=2, num_samples=4, grace_period=1, reduction_factor=2,
        gpus_per_trial=0.25,
        fixed={"batch_size": 16, "queue_size": 64},
    ),
}


def get_budget(name: str) -> Budget:
    try:
        return BUDGETS[name]
    except KeyError:
        raise SearchError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}") from None
