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

Every budget has a confirmation stage in two phases on disjoint fresh seeds
(``verdict.py``): *select* -- its ``confirm_k`` best searched recipes (by the validation
objective) and both baselines are trained again with ``confirm_seeds`` seeds and the winner
is chosen on val; *report* -- the winner and the reference baseline are trained on new
seeds in ``report_looks`` (e.g. 3, 5, 8: seeds are added until the declared comparisons are
decided, ``sequential.py``), and only these runs read the test split. ``test_per_class=0``
is the whole test split (10,000 images for CIFAR-10: the test images' standard error is
~0.4 points, against 1.6-3.0 points of seed noise). The val split decides everything before
that, so it is sized for it: :attr:`Budget.val_se` is the standard error of a val top-1 near
50% (the worst case), printed with the budget.

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
    confirm_seeds: int = 3  # select phase: fresh seeds per confirmed recipe (val only)
    report_looks: tuple = (3, 5, 8)  # report phase: seed counts at which the verdict is tested
    # the share of verdicts decided at each look, for the plan's estimate of a confirmation's cost (the rest at
    # the last); empty: all at the first. Read off the verdict simulation (bench/simulate_verdicts.py,
    # docs/results/verdict_simulation.json), or off the verdicts measured at the budget
    report_stop_share: tuple = ()
    needs_gpu: bool = False  # sized for a GPU: a CPU cluster runs it only with --yes

    @property
    def val_se(self) -> float:
        """Standard error of a val top-1 near 50% on this budget's val split (worst case)."""
        return 0.5 / math.sqrt(max(1, self.classes * self.val_per_class))

    def test_se(self, test_images: int | None = None) -> float:
        """Standard error of a test top-1 near 50% (``test_images``: the real count, needed when
        ``test_per_class`` is 0, the whole split)."""
        n = test_images if test_images else self.classes * self.test_per_class
        return 0.5 / math.sqrt(max(1, n))

    def summary(self, test_images: int | None = None) -> str:
        test = (f"{self.classes}x{self.test_per_class}" if self.test_per_class else
                "the whole split" + (f" ({test_images})" if test_images else ""))
        se = f" (SE <= {100 * self.test_se(test_images):.1f})" if self.test_per_class or test_images else ""
        looks = ", ".join(map(str, self.report_looks))
        return (f"{self.description}; val {self.classes}x{self.val_per_class} (SE <= {100 * self.val_se:.1f} "
                f"points), test {test}{se}; confirmation: select on val (top {self.confirm_k} + 2 baselines x "
                f"{self.confirm_seeds} seeds), report on test (winner + reference baseline, seeds added at "
                f"{looks} until decided)")

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
            "report_looks": list(self.report_looks),
        }


# verdicts decided at looks 3, 5, 8 of the cpu budget, simulated from its measured seed noise (the mean over a true
# lift of 0, +3 and +6 points: 0.26/0.46/0.28, 0.20/0.46/0.34, 0.12/0.49/0.39; docs/results/verdict_simulation.json)
CPU_STOP_SHARE = (0.19, 0.47, 0.34)

BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        name="smoke",
        description="CPU smoke search: 10 classes x 64 train images, 32 px, 3 epochs, 6 trials",
        classes=10, train_per_class=64, val_per_class=40, test_per_class=200,
        image_size=32, max_epochs=3, num_samples=6, grace_period=1, reduction_factor=2,
        gpus_per_trial=0.25, confirm_k=1, confirm_seeds=2, report_looks=(3, 5),
        report_stop_share=(1.0,),  # every smoke verdict measured was futile at the first look (docs/speed.md s4)
        fixed={"batch_size": 64, "queue_size": 512},
    ),
    "cpu": Budget(
        name="cpu",
        description="CPU search that learns: 10 classes x 200 train images, 32 px, 8 epochs, 10 trials",
        classes=10, train_per_class=200, val_per_class=100, test_per_class=0,
        image_size=32, max_epochs=8, num_samples=10, grace_period=2, reduction_factor=3,
        gpus_per_trial=0.25, confirm_k=1, confirm_seeds=3, report_looks=(3, 5, 8),
        report_stop_share=CPU_STOP_SHARE,
        fixed={"batch_size": 64, "queue_size": 1024},
    ),
    "proxy": Budget(
        name="proxy",
        description="GPU proxy search: 10 classes x 500 images, 32 px, 30 epochs, 40 trials",
        classes=10, train_per_class=500, val_per_class=200, test_per_class=0, report_looks=(3, 5, 8, 12),
        report_stop_share=CPU_STOP_SHARE,  # a stand-in: no proxy verdict measured yet
        image_size=32, max_epochs=30, num_samples=40, grace_period=5, reduction_factor=3,
        gpus_per_trial=0.25, checkpoint_every=5,  # at ASHA's rungs (5, 15, 30): see docs/capacity.md
        fixed={}, needs_gpu=True,
    ),
    "tiny": Budget(
        name="tiny",
        description="tests/CI: 2 classes x 32 images, 16 px, 2 epochs, 4 trials",
        classes=2, train_per_class=32, val_per_class=8, test_per_class=16,
        image_size=16, max_epochs=2, num_samples=4, grace_period=1, reduction_factor=2,
        gpus_per_trial=0.25, confirm_k=1, confirm_seeds=2, report_looks=(2,),
        fixed={"batch_size": 16, "queue_size": 64},
    ),
}


def get_budget(name: str) -> Budget:
    try:
        return BUDGETS[name]
    except KeyError:
        raise SearchError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}") from None
