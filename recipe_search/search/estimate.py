"""What a search will cost, said before it starts: the plan and a measured wall-time estimate.

One short training run (one epoch over a few batches of the proxy, with the budget's
batch size and image size, on the trials' device and thread count) measures this
machine's images/s. The estimate then counts, per epoch, the training images at that
rate plus the kNN monitor's forward pass over train + val (about a third of a training
step's cost per image: one view, no backward, no key encoder), for every trial-epoch
of the search (an upper bound: ASHA stops some trials early) and of the confirmation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ..tune.progress import duration

EVAL_COST = 1 / 3  # a monitor forward per image, relative to one training image


@dataclass
class Estimate:
    images_per_sec: float
    search_s: float  # upper bound (no early stopping)
    confirm_s: float
    lines: list[str]

    @property
    def total_s(self) -> float:
        return self.search_s + self.confirm_s


def measure_images_per_sec(recipe, proxy, device: str, threads: int, batches: int = 3) -> float:
    """Training images/s of ``recipe`` on ``device`` over ``batches`` batches of ``proxy``."""
    import torch

    from trainer import ProxyData, train

    n = min(proxy.train_x.shape[0], recipe.batch_size * batches)
    small = ProxyData(proxy.train_x[:n], proxy.train_y[:n], proxy.val_x[:0], proxy.val_y[:0],
                      proxy.test_x[:0], proxy.test_y[:0], list(proxy.class_names), proxy.source)
    probe = recipe.replace(epochs=1, warmup_epochs=0.0, batch_size=min(recipe.batch_size, n),
                           queue_size=max(recipe.queue_size, 2 * min(recipe.batch_size, n)), distill=None)
    saved = torch.get_num_threads()
    with contextlib.ExitStack() as stack:
        if device == "cpu":
            torch.set_num_threads(threads)
            stack.callback(torch.set_num_threads, saved)
        result = train(probe, small, device=device, evaluate_test=False)
    return float(result.metrics.get("images_per_sec") or 0.0)


def estimate(*, images_per_sec: float, sizes: dict, num_samples: int, max_epochs: int, confirm_jobs: int,
             concurrency: int, device: str, cpus_per_trial: float, gpus_per_trial: float,
             grace_period: int | None) -> Estimate:
    """The plan as printable lines and the estimated wall time of each stage (``grace_period``: ASHA's
    first rung, None without early stopping)."""
    ips = max(images_per_sec, 1e-6)
    train_n, val_n = sizes["train"], sizes["val"]
    epoch_s = train_n / ips + (train_n + val_n) * EVAL_COST / ips
    conc = max(1, concurrency)
    search_s = num_samples * max_epochs * epoch_s / conc
    confirm_s = confirm_jobs * max_epochs * epoch_s / conc
    each = f"{gpus_per_trial:g} GPU" if device == "cuda" else f"{cpus_per_trial:g} CPU"
    stopping = f"<= {max_epochs} epochs (ASHA from epoch {grace_period})" if grace_period else \
        f"{max_epochs} epochs (no early stopping)"
    lines = [
        f"plan: search {num_samples} trials x {stopping}, "
        f"then confirmation {confirm_jobs} runs x {max_epochs} epochs; {concurrency} at a time on {device} "
        f"({each} each)",
        f"data: {sizes['classes']} classes, {train_n} train / {val_n} val / {sizes['test']} test images "
        f"(test read only in confirmation)",
        f"measured {ips:.0f} train images/s per trial -> estimated wall time: search <= {duration(search_s)}, "
        f"confirmation ~{duration(confirm_s)}, total <= {duration(search_s + confirm_s)}",
    ]
    return Estimate(ips, search_s, confirm_s, lines)
