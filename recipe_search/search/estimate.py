"""What a search will cost, said before it starts: the plan and a measured wall-time estimate.

Short training runs on the proxy (a warm-up, then a few batches with the budget's batch and image
size, on the trials' device and thread count, their kNN monitor over a few val images) measure this
machine's training images/s (of the measured recipe, and of its one-sided variant) and the seconds
per image of an evaluation forward pass. The cost model is the
profile of a trial (docs/speed.md, section 1: the training step is ~84 % of a ``cpu`` trial, the
kNN monitor ~13 %, the final evaluation ~3 %), plus the start of each run:

* a run of ``E`` epochs costs ``start + E * train / ips + M * f * (2 train + val) + final``, where
  ``f * (2 train + val)`` is the monitor of an epoch (precise BN statistics over the train
  images, then train and val features), run every epoch of a search trial (``M = E``) and after
  the last only in a confirmation run (``M = 1``), and ``final`` the linear probe, plus, in a run
  that reads the test split, precise BN and the test features;
* ``start`` (:data:`START_S`): a trial's worker, its imports, the model built, the data read from the
  node's cache, and Tune's per-trial bookkeeping, measured on the 2-core development machine;
* the search stage runs every baseline to the end and a sampled trial, under ASHA, past each rung
  with the chance Ray's cut-off leaves it given the results recorded there before it (above
  ``1 / reduction_factor`` in a small search; :func:`expected_epochs`);
* the confirmation runs the select phase, then the report phase's expected seeds (the budget's
  share of verdicts decided at each look, read off the verdict simulation: at the ``cpu`` budget
  5.6 seeds of looks 3, 5, 8), at most its last look, and the untrained floor's evaluation per seed;
* runs share the cluster ``concurrency`` at a time; ``fixed`` (:data:`SEARCH_START_S`) is Ray's
  start and the driver's work between stages.

The estimate says both the expected wall time and the bound (no trial stopped, every look).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

from ..tune.progress import duration

# Measured on the 2-core development machine (docs/speed.md section 4, a smoke search on idle cores):
# a trial's duration outside its training and monitor is 3-5 s (its probe included), and Tune
# adds ~2.5 s per trial between them; Ray's start and the floor are ~5 s before the first trial.
START_S = 4.0  # a run's start (worker, imports, model, data from the cache, Tune's bookkeeping), seconds
SEARCH_START_S = 10.0  # Ray's start and the driver's work between the stages, seconds
PROBE_VAL = 256  # val images the measuring run's monitor extracts (fewer: its fixed costs dominate)


@dataclass(frozen=True)
class Rates:
    """What the measuring run found: training images/s, seconds per evaluation image, probe seconds
    per train image."""

    images_per_sec: float
    eval_s_per_image: float
    probe_s_per_image: float = 0.0
    one_sided_images_per_sec: float = 0.0  # a recipe whose loss is not symmetric (one pass per pair); 0: the same
    cold_s: float = 0.0  # a run's first step beyond a steady one (kernels' and allocator's set-up)

    def rate(self, symmetric: bool = True) -> float:
        """Training images/s of a symmetric recipe, or of a one-sided one."""
        return self.images_per_sec if symmetric or not self.one_sided_images_per_sec else self.one_sided_images_per_sec


@dataclass
class Estimate:
    images_per_sec: float
    search_s: float  # expected (ASHA stops trials as its rungs say)
    confirm_s: float  # expected (the report phase's expected seeds)
    lines: list[str]
    search_max_s: float = 0.0  # no trial stopped
    confirm_max_s: float = 0.0  # every look
    eval_s_per_image: float = 0.0

    @property
    def total_s(self) -> float:
        return self.search_s + self.confirm_s + SEARCH_START_S

    @property
    def total_max_s(self) -> float:
        return self.search_max_s + self.confirm_max_s + SEARCH_START_S

    def metrics(self) -> dict[str, float]:
        """The parent run's record of the plan's estimate (compared with ``search_wall_s`` afterwards)."""
        return {"estimate_s": self.total_s, "estimate_max_s": self.total_max_s,
                "estimate_search_s": self.search_s, "estimate_confirm_s": self.confirm_s,
                "estimate_images_per_sec": self.images_per_sec, "estimate_eval_ms_per_image": 1000 * self.eval_s_per_image}


def measure(recipe, proxy, device: str, threads: int, batches: int = 3) -> Rates:
    """Training images/s of ``recipe`` on ``device`` over ``batches`` batches of ``proxy`` (and of its
    one-sided variant when its loss is symmetric), the seconds per image of its monitor's evaluation
    passes and of its linear probe, and a run's cold start, as a trial sees them (the faster of two
    measuring runs): a one-batch warm-up run first (a process's first training pays for its kernels'
    set-up: a cold measurement read half the trials' rate), its step beyond a steady one kept as
    ``cold_s``. Measured in this process, one run at a time: trials run in their own processes, and
    two of them on two cores train at the rate of one alone (docs/speed.md, section 4)."""
    import torch

    from trainer import ProxyData, train

    n = min(proxy.train_x.shape[0], recipe.batch_size * batches)
    nv = min(proxy.val_x.shape[0], PROBE_VAL)
    small = ProxyData(proxy.train_x[:n], proxy.train_y[:n], proxy.val_x[:nv], proxy.val_y[:nv],
                      proxy.test_x[:0], proxy.test_y[:0], list(proxy.class_names), proxy.source)
    probe = recipe.replace(epochs=1, warmup_epochs=0.0, batch_size=min(recipe.batch_size, n),
                           queue_size=max(recipe.queue_size, 2 * min(recipe.batch_size, n)), distill=None)
    b = probe.batch_size
    warm = ProxyData(small.train_x[:b], small.train_y[:b], small.val_x[:b], small.val_y[:b],
                     small.test_x, small.test_y, list(proxy.class_names), proxy.source)
    saved = torch.get_num_threads()
    with contextlib.ExitStack() as stack:
        if device == "cpu":
            torch.set_num_threads(threads)
            stack.callback(torch.set_num_threads, saved)
        first = train(probe, warm, device=device, evaluate_test=False).metrics
        m = train(probe, small, device=device, evaluate_test=False).metrics
        one = train(probe.replace(symmetric=False), small, device=device, evaluate_test=False).metrics \
            if probe.symmetric else m
        again = train(probe, small, device=device, evaluate_test=False).metrics  # the faster of two: a
        if float(again.get("images_per_sec") or 0.0) > float(m.get("images_per_sec") or 0.0):  # busy start
            m = again  # (Ray's own processes starting beside it) reads slow, not the trials' rate
    ips = float(m.get("images_per_sec") or 0.0)
    cold = max(0.0, float(first.get("train_time_s") or 0.0) - b / ips) if ips else 0.0
    eval_images = 2 * n + nv  # precise BN over the train images, then train and val features
    per_image = float(m.get("knn_time_s") or 0.0) / eval_images if nv else ips and 1 / (3 * ips)
    return Rates(ips, per_image, float(m.get("probe_time_s") or 0.0) / n,
                 float(one.get("images_per_sec") or 0.0), cold)


def _cutoff(recorded: list[float], q: float) -> float:
    """Ray's ASHA cut-off: the ``q`` quantile of the results recorded at a rung (numpy's linear rule)."""
    v = sorted(recorded)
    pos = q * (len(v) - 1)
    lo = int(pos)
    return v[lo] + (pos - lo) * (v[min(lo + 1, len(v) - 1)] - v[lo])


def expected_epochs(max_epochs: int, grace_period: int | None, reduction_factor: int, *, sampled: int = 0,
                    baselines: int = 0, sims: int = 2000, seed: int = 0) -> float:
    """A sampled trial's expected epochs under ASHA (rungs at ``grace * rf**k`` epochs), every epoch
    without early stopping. ``sampled=0``: the large-search limit, past each rung with chance ``1/rf``.

    Otherwise Ray's rule played out ``sims`` times (seeded: the same figure every time) for a search
    whose ``baselines`` run first and reach every rung (never stopped, they set the cut-offs) and whose
    ``sampled`` trials follow in turn: a trial's result at a rung is recorded there and it stops when it
    is below the ``1 - 1/rf`` quantile of the results recorded before it (the first goes on). A trial
    keeps its rank from rung to rung (a recipe's early val kNN ranks like its end: docs/results.md,
    section 2). A small search promotes more than ``1/rf`` of its trials: the ``cpu`` budget's 8
    sampled trials average ~4.2 epochs of 8, not the limit's 3.6 (tests/test_estimate.py checks it
    against Ray's own scheduler)."""
    if not grace_period or grace_period >= max_epochs:
        return float(max_epochs)
    rungs = []
    rung = grace_period
    while rung < max_epochs:
        rungs.append(rung)
        rung *= reduction_factor
    if sampled <= 0:
        total, reached, p = 0.0, 0, 1.0
        for rung in rungs:
            total += p * (rung - reached)
            reached, p = rung, p / reduction_factor
        return total + p * (max_epochs - reached)
    rng, q, total = random.Random(seed), 1 - 1 / reduction_factor, 0
    for _ in range(sims):
        recorded = [[rng.random() for _ in range(baselines)]]
        recorded += [list(recorded[0]) for _ in rungs[1:]]  # the baselines reach every rung
        for _ in range(sampled):
            score, reached, epochs = rng.random(), 0, max_epochs
            for k, rung in enumerate(rungs):
                cut = _cutoff(recorded[k], q) if recorded[k] else None
                recorded[k].append(score)
                if cut is not None and score < cut:
                    epochs = rung
                    break
            total += epochs
    return total / (sims * sampled)


def expected_seeds(looks: list[int] | tuple[int, ...], stop_share: tuple[float, ...] | list[float] = ()) -> float:
    """The report phase's expected seeds: ``looks[i]`` with chance ``stop_share[i]``, the rest of the
    chance at the last look (no share: the first look)."""
    if not stop_share:
        return float(looks[0])
    shares = [max(0.0, float(x)) for x in stop_share[:len(looks)]]
    rest = max(0.0, 1.0 - sum(shares))
    return sum(p * n for p, n in zip(shares, looks)) + rest * looks[-1]


def run_seconds(rates: Rates, sizes: dict, epochs: float, *, test: bool, symmetric: bool = True,
                monitored: float | None = None) -> float:
    """One run of ``epochs`` epochs (``test``: it reads the test split at the end; ``symmetric``: its
    loss runs both views through the query encoder, twice a one-sided run's training; ``monitored``:
    the epochs with a kNN monitor, all by default, 1 for a confirmation run)."""
    ips = max(rates.rate(symmetric), 1e-6)
    train_n, val_n = sizes["train"], sizes["val"]
    monitor_s = rates.eval_s_per_image * (2 * train_n + val_n)
    final_s = rates.probe_s_per_image * train_n
    if test:
        final_s += rates.eval_s_per_image * (train_n + sizes["test"])
    watched = epochs if monitored is None else min(epochs, monitored)
    return START_S + rates.cold_s + epochs * train_n / ips + watched * monitor_s + final_s


def estimate(*, rates: Rates | float, sizes: dict, num_samples: int, baselines: int = 0, max_epochs: int,
             select_jobs: int, report_looks: tuple[int, ...] | list[int] = (), concurrency: int, device: str,
             cpus_per_trial: float, gpus_per_trial: float, grace_period: int | None,
             reduction_factor: int = 3, one_sided_baselines: int = 0, select_seeds: int = 0,
             report_stop_share: tuple[float, ...] | list[float] = (), kept: int = 0) -> Estimate:
    """The plan as printable lines and the estimated wall time of each stage, expected and at most
    (``grace_period``: ASHA's first rung, None without early stopping). Sampled trials cost as the
    measured recipe; ``one_sided_baselines`` of the ``baselines`` train one-sided (at the rate
    measured for that), in the search and in each of the ``select_seeds`` seeds of the select phase,
    and the report phase's reference baseline costs their mean. ``report_stop_share``: the share of
    verdicts decided at each of the ``report_looks`` (the budget's, from the verdict simulation; the
    rest at the last look; empty: all at the first) gives the report phase's expected seeds. ``kept``:
    the warm start's points, which like the baselines run first and are never stopped early."""
    if not isinstance(rates, Rates):
        rates = Rates(float(rates), 1 / (3 * max(float(rates), 1e-6)))
    conc = max(1, concurrency)
    kept = min(kept, max(0, num_samples - baselines))
    sampled = max(0, num_samples - baselines - kept)
    one_sided = min(one_sided_baselines, baselines)
    full = run_seconds(rates, sizes, max_epochs, test=False)
    full_one = run_seconds(rates, sizes, max_epochs, test=False, symmetric=False)
    asha = run_seconds(rates, sizes, expected_epochs(max_epochs, grace_period, reduction_factor, sampled=sampled,
                                                     baselines=baselines + kept), test=False)
    search_s = ((baselines - one_sided + kept) * full + one_sided * full_one + sampled * asha) / conc
    search_max_s = ((num_samples - one_sided) * full + one_sided * full_one) / conc
    looks = list(report_looks) or [0]
    select_one = min(select_jobs, one_sided * select_seeds)

    def confirm_run(test: bool, symmetric: bool = True) -> float:  # monitored after its last epoch only
        return run_seconds(rates, sizes, max_epochs, test=test, symmetric=symmetric, monitored=1)

    select_s = (select_jobs - select_one) * confirm_run(False) + select_one * confirm_run(False, symmetric=False)
    report = confirm_run(True)
    share = one_sided / baselines if baselines else 0.0
    reference = (1 - share) * report + share * confirm_run(True, symmetric=False)
    floor = START_S / 2 + rates.eval_s_per_image * (2 * sizes["train"] + sizes["val"] + sizes["test"])
    seeds = expected_seeds(looks, report_stop_share)
    confirm_s = (select_s + seeds * (report + reference + floor)) / conc
    confirm_max_s = (select_s + looks[-1] * (report + reference + floor)) / conc
    confirm_jobs = select_jobs + 2 * looks[-1]
    each = f"{gpus_per_trial:g} GPU" if device == "cuda" else f"{cpus_per_trial:g} CPU"
    stopping = f"<= {max_epochs} epochs (ASHA from epoch {grace_period})" if grace_period else \
        f"{max_epochs} epochs (no early stopping)"
    est = Estimate(rates.images_per_sec, search_s, confirm_s, [], search_max_s, confirm_max_s, rates.eval_s_per_image)
    est.lines = [
        f"plan: search {num_samples} trials x {stopping}, "
        f"then confirmation <= {confirm_jobs} runs x {max_epochs} epochs; {concurrency} at a time on {device} "
        f"({each} each)",
        f"data: {sizes['classes']} classes, {sizes['train']} train / {sizes['val']} val / {sizes['test']} test "
        f"images (test read only in confirmation)",
        f"measured {rates.images_per_sec:.0f} train images/s per trial -> estimated wall time ~{duration(est.total_s)} "
        f"(search ~{duration(search_s)}, confirmation ~{duration(confirm_s)} with ~{seeds:.1f} report seeds "
        f"expected), at most {duration(est.total_max_s)}",
    ]
    return est
