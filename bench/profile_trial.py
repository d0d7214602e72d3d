"""Where a trial's time goes: one ``cpu``-budget trial, end to end, split into phases.

    OMP_NUM_THREADS=1 .venv/bin/python bench/profile_trial.py --data ../shared/data/cifar10-jpeg.tar.gz \
        --val-per-class 50 --test-per-class 50

The trial is the ``sinfonce-light`` baseline as a search composes it (recipe_search's baseline values,
the space's fixed fields and the budget's: 10 classes x 200 train / 50 val / 50 test, 32 px, 8 epochs,
batch 64, queue 1024, ``mobilenetv3_small_100``), on one torch thread as a search's CPU trial
(``recipe_search.tune.trial`` sets ``torch.set_num_threads(cpus_per_trial)`` = 1). It runs what
:func:`trainer.engine.train` runs (the loop of :func:`trainer.loop.fit`) with wall-clock timers
around each phase:

* data: ``load_proxy`` with a cold decode cache (once per node: the driver pays it) and warm (a trial);
* per step: augmentation (the two views), momentum update, query forward, key forward, loss,
  backward, optimizer step (``zero_grad`` + ``step``), enqueue and the rest;
* per epoch: the kNN monitor (precise BN, then train-bank and val features, then the kNN) and
  the checkpoint (``torch.save`` of the trainer state + history.json);
* at the end: the final evaluation (precise BN, the test features, the linear probe, test kNN)
  and ``encoder.pt``.

The step is the trainer's :meth:`TrainingRun.step` with timers between its lines; before the
run the script checks that its timed copy gives bit-identical losses to the trainer's own
step (same seed), so the split describes the real step. Raw numbers go to
``docs/results/speed/profile.json`` (``--json``); docs/speed.md reads them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
DEFAULT_JSON = ROOT / "docs" / "results" / "speed" / "profile.json"


def trial_recipe(backbone: str, budget_name: str, seed: int):
    """The ``sinfonce-light`` baseline recipe as a search's trial composes it (trial.TrialContext.recipe_for)."""
    from recipe_search.baselines import SINFONCE_LIGHT
    from recipe_search.budget import get_budget
    from recipe_search.compose import compose
    from recipe_search.space import load_space

    budget = get_budget(budget_name)
    space = load_space(None, backbone)
    recipe, _ = compose(dict(SINFONCE_LIGHT.values), backbone=backbone, image_size=budget.image_size,
                        epochs=budget.max_epochs, seed=seed, fixed=space.fixed, budget_fixed=dict(budget.fixed))
    return recipe, budget


class Timer:
    """Wall and thread-CPU seconds per phase: each :meth:`lap` charges the time since the previous
    one. With one torch thread all the work runs on this thread, so its CPU time is the phase's work
    without the waits for a core that other processes on a busy machine cause."""

    def __init__(self):
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.reset()

    def lap(self, name: str) -> float:
        """Charge the time since the previous lap to ``name``; returns those wall seconds."""
        w, c = time.perf_counter(), time.thread_time()
        dw = w - self._w
        self.wall[name] += dw
        self.cpu[name] += c - self._c
        self._w, self._c = w, c
        return dw

    def reset(self) -> None:
        self._w, self._c = time.perf_counter(), time.thread_time()


def timed_step(run, x, step: int, tm: Timer):
    """:meth:`trainer.loop.TrainingRun.step` of a MoCo-v2 recipe line by line (CPU path, no distiller; the
    steps of :class:`trainer.methods.mocov2.MoCoV2` inlined), with laps."""
    import torch

    from trainer import schedules
    from trainer.optim import set_lr

    r, progress = run.recipe, step / max(1, run.total_steps)
    set_lr(run.optimizer, schedules.learning_rate(step, run.total_steps, run.warmup_steps, r.scaled_lr,
                                                  r.lr_schedule))
    eps = schedules.smoothing(progress, r.smoothing, r.smoothing_ramp)
    tm.lap("step: schedules")
    v1, v2 = run.views(x, run.aug_gen), run.views(x, run.aug_gen)
    if run.channels_last:
        v1 = v1.contiguous(memory_format=torch.channels_last)
        v2 = v2.contiguous(memory_format=torch.channels_last)
    tm.lap("step: augmentation (2 views)")
    run.model.momentum_update(schedules.key_momentum(progress, r.key_momentum, r.momentum_ramp))
    tm.lap("step: key encoder momentum update")
    q1 = run.model.query(v1)
    tm.lap("step: query encoder forward")
    k2 = run.model.key(v2, run.aug_gen)
    tm.lap("step: key encoder forward")
    q2 = run.model.query(v2) if r.symmetric else None
    tm.lap("step: query encoder forward")
    if r.symmetric:
        k1 = run.model.key(v1, run.aug_gen)
    tm.lap("step: key encoder forward")
    queue = run.model.queue.clone()
    loss = run.method.criterion(q1, k2, queue, eps)
    keys = k2
    if r.symmetric:
        loss = loss + run.method.criterion(q2, k1, queue, eps)
        keys = torch.cat([k1, k2])
    tm.lap("step: loss")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    tm.lap("step: query encoder backward")
    run.optimizer.step()
    tm.lap("step: optimizer step")
    run.model.enqueue(keys.detach().float())
    out = loss.detach()
    tm.lap("step: enqueue")
    return out


def check_timed_step(recipe, proxy, device, steps: int = 2) -> None:
    """The timed copy of the step must give the trainer's losses, bit for bit."""
    import torch

    from trainer import TrainingRun

    a, b = TrainingRun(recipe, proxy, device), TrainingRun(recipe, proxy, device)
    x = a.train_x[:recipe.batch_size]
    tm = Timer()
    for i in range(steps):
        la, lb = a.step(x, i), timed_step(b, x, i, tm)
        if not torch.equal(la, lb):
            raise SystemExit(f"profile_trial: the timed step differs from TrainingRun.step at step {i} "
                             f"({la.item()!r} vs {lb.item()!r}); update timed_step to match trainer/loop.py")


def profile(args) -> dict:
    """One trial of ``args``' recipe, every second of it charged to a phase; the raw result."""
    import torch

    # imported before the timers start (the phases below import them again, from sys.modules)
    import trainer.backbone, trainer.checkpoint, trainer.evaluation, trainer.knn, trainer.model  # noqa: F401, E401
    from trainer import TrainingRun, load_proxy

    recipe, budget, spec = _setup(args)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="profile-trial-") as tmp:
        cold_spec = dataclasses.replace(spec, cache_dir=str(Path(tmp) / "cache"))
        t0 = time.perf_counter()
        load_proxy(cold_spec, recipe.image_size, args.seed)
        data_cold = time.perf_counter() - t0
        check_timed_step(recipe, load_proxy(cold_spec, recipe.image_size, args.seed), device)

        tm = Timer()  # from here on every second of the trial is charged to one phase
        proxy = load_proxy(cold_spec, recipe.image_size, args.seed)
        tm.lap("data: load_proxy (warm decode cache, what a trial pays)")
        out = Path(tmp) / "trial"
        out.mkdir()
        run = TrainingRun(recipe, proxy, device, out)
        tm.lap("setup: model, optimizer, augmentation")
        ckpt = out / "checkpoint.pt"
        steps_total, epochs = 0, []
        while run.epoch < recipe.epochs:
            epoch, steps = _epoch(run, proxy, device, tm, out)
            steps_total += steps
            epochs.append(epoch)
        final = _final_evaluation(run, proxy, device, tm, out)
        split = _final_evaluation_split(run, proxy, device)
        ckpt_mb = ckpt.stat().st_size / 2**20
    measured = {"data_cold": data_cold, "steps": steps_total, "checkpoint_mb": ckpt_mb, "epochs": epochs,
                "final": final}
    return _result(args, recipe, budget, proxy, tm, split, measured)


def _setup(args):
    """Torch's threads and layout as a trial has them; the trial's recipe, budget and data spec."""
    import torch

    torch.set_num_threads(args.threads)
    if args.nchw:
        from trainer.device import CHANNELS_LAST

        CHANNELS_LAST["cpu"] = False
    recipe, budget = trial_recipe(args.backbone, args.budget, args.seed)
    budget = budget.with_sizes(train_per_class=args.train_per_class, val_per_class=args.val_per_class,
                               test_per_class=args.test_per_class)
    spec = budget.data_spec("cifar10" if args.data else "synthetic", args.data)
    return recipe, budget, spec


def _epoch(run, proxy, device, tm: Timer, out: Path) -> tuple[dict, int]:
    """One epoch as :func:`trainer.loop.fit` runs it: the steps, the kNN monitor, the checkpoint.
    Returns the epoch's record and its number of steps."""
    from trainer.checkpoint import save_checkpoint

    w0 = sum(tm.wall.values())
    total, steps = _train_steps(run, tm)
    train_s = sum(tm.wall.values()) - w0
    run.train_time += train_s
    k0 = sum(tm.wall.values())
    knn = _knn_monitor(run, proxy, device, tm)
    run.epoch += 1
    run.history.append({"epoch": run.epoch, "loss": (total / run.steps_per_epoch).item(),
                        "val_knn_top1": knn, "epoch_time_s": train_s})
    save_checkpoint(out / "checkpoint.pt", run.state())
    (out / "history.json").write_text(json.dumps(run.history, indent=2))
    tm.lap("checkpoint (every epoch)")
    knn_s = sum(tm.wall.values()) - k0
    print(f"epoch {run.epoch}/{run.recipe.epochs}: train {train_s:.1f} s, kNN monitor + checkpoint "
          f"{knn_s:.1f} s, loss {run.history[-1]['loss']:.3f}, val kNN {knn:.3f}", flush=True)
    return {"epoch": run.epoch, "train_s": round(train_s, 3), "loss": run.history[-1]["loss"],
            "val_knn_top1": knn}, steps


def _train_steps(run, tm: Timer):
    """The epoch's training steps (timed); returns the summed loss and the number of steps."""
    import torch

    b = run.recipe.batch_size
    run.model.train()
    run.features = {}
    perm = torch.randperm(run.train_x.shape[0], generator=run.order_gen)
    total = torch.zeros(())
    tm.lap("step: batch indexing")  # the epoch's permutation
    for i in range(run.steps_per_epoch):
        x = run.train_x[perm[i * b:(i + 1) * b]]
        tm.lap("step: batch indexing")
        loss = timed_step(run, x, run.epoch * run.steps_per_epoch + i, tm)
        total += loss
        if not torch.isfinite(loss):
            raise SystemExit("profile_trial: non-finite loss")
        tm.lap("step: loop bookkeeping (loss sum, finite check)")
    return total, run.steps_per_epoch


def _knn_monitor(run, proxy, device, tm: Timer) -> float:
    """The kNN monitor (TrainingRun.knn), split: precise BN, features, kNN."""
    from trainer.knn import knn_top1
    from trainer.model import evaluation_stats, extract_features

    run.features = {}
    with evaluation_stats(run.model, run.train_x, device):
        tm.lap("kNN monitor: precise BN")
        bank = extract_features(run.model, run.train_x, device)
        query = extract_features(run.model, proxy.val_x, device)
        tm.lap("kNN monitor: features (train bank + val)")
    tm.lap("kNN monitor: precise BN")  # putting the training statistics back
    knn = knn_top1(query, proxy.val_y, bank, proxy.train_y, proxy.num_classes)
    run.features = {"train": bank, "val": query}
    tm.lap("kNN monitor: kNN")
    return knn


def _final_evaluation(run, proxy, device, tm: Timer, out: Path) -> dict:
    """The final evaluation (_final_metrics -> evaluate): precise BN, test features, probe, kNN;
    then encoder.pt and metrics.json."""
    from trainer.backbone import save_encoder
    from trainer.evaluation import evaluate

    final = evaluate(run.model, proxy, device, run.features, evaluate_test=True)
    tm.lap("final evaluation (precise BN, test features, linear probe, kNN)")
    save_encoder(str(out / "encoder.pt"), run.model.encoder_q.backbone, run.recipe.to_dict(),
                 run.model.encoder_q.head[0].in_features)
    (out / "metrics.json").write_text(json.dumps(final))
    tm.lap("checkpoint: encoder.pt + metrics.json (end)")
    return final


def _final_evaluation_split(run, proxy, device) -> Timer:
    """The final evaluation's split, measured again on the same weights (the same work)."""
    from trainer.model import evaluation_stats, extract_features
    from trainer.probe import linear_probe

    split = Timer()
    with evaluation_stats(run.model, run.train_x, device):
        split.lap("precise BN")
        test_feats = extract_features(run.model, proxy.test_x, device)
        split.lap("test features")
    split.lap("precise BN")
    linear_probe((run.features["train"], proxy.train_y), (run.features["val"], proxy.val_y),
                 (test_feats, proxy.test_y), proxy.num_classes)
    split.lap("linear probe (3 L2 fits)")
    return split


def _result(args, recipe, budget, proxy, tm: Timer, split: Timer, measured: dict) -> dict:
    """The raw result (``--json``): the run's setting, the phases by CPU time, the epochs, the metrics."""
    import torch

    total, total_cpu = sum(tm.wall.values()), sum(tm.cpu.values())
    order = sorted(tm.wall, key=lambda k: -tm.cpu[k])
    final = measured["final"]
    return {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python bench/profile_trial.py " + " ".join(sys.argv[1:]),
        "memory_format": "NCHW (contiguous)" if args.nchw else "channels_last",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(), "cpu_count": os.cpu_count(),
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
        "recipe": recipe.to_dict(), "budget": budget.name,
        "data": "cifar10 (" + (str(Path(args.data).name)) + ")" if args.data else "synthetic",
        "sizes": proxy.sizes() if hasattr(proxy, "sizes") else None,
        "steps": measured["steps"], "images_per_step": recipe.batch_size,
        "trial_s": round(total, 2), "trial_cpu_s": round(total_cpu, 2),
        "data_cold_decode_s": round(measured["data_cold"], 2),
        "phases_s": {k: round(tm.wall[k], 3) for k in order},
        "phases_cpu_s": {k: round(tm.cpu[k], 3) for k in order},
        "phases_share": {k: round(tm.wall[k] / total, 4) for k in order},
        "phases_cpu_share": {k: round(tm.cpu[k] / total_cpu, 4) for k in order},
        "final_evaluation_split_s": {k: round(v, 3) for k, v in split.wall.items()},
        "final_evaluation_split_cpu_s": {k: round(v, 3) for k, v in split.cpu.items()},
        "checkpoint_mb": round(measured["checkpoint_mb"], 1),
        "epochs": measured["epochs"],
        "final_metrics": {k: v for k, v in final.items() if isinstance(v, (int, float))},
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None)
    ap.add_argument("--backbone", default="mobilenetv3_small_100")
    ap.add_argument("--budget", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    for split in ("train", "val", "test"):
        ap.add_argument(f"--{split}-per-class", type=int, default=None, help="default: the budget's")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a search's CPU trial: 1)")
    ap.add_argument("--nchw", action="store_true", help="the contiguous layout (the CPU trainer before "
                                                         "channels_last) instead of the trainer's channels_last")
    ap.add_argument("--json", default=str(DEFAULT_JSON), help="write the raw result here ('' : do not)")
    args = ap.parse_args(argv)
    res = profile(args)
    total, cpu = res["trial_s"], res["trial_cpu_s"]
    print(f"\ntrial {total:.1f} s wall, {cpu:.1f} s CPU ({res['steps']} steps of {res['images_per_step']} images, "
          f"{res['threads']} thread, {res['memory_format']}); data cold decode {res['data_cold_decode_s']:.1f} s "
          f"(once per node)")
    print(f"  {'phase':64} {'wall s':>8} {'wall %':>7} {'CPU s':>8} {'CPU %':>7}")
    for name, s in res["phases_s"].items():
        c = res["phases_cpu_s"][name]
        print(f"  {name:64} {s:8.2f} {100 * s / total:6.1f}% {c:8.2f} {100 * c / cpu:6.1f}%")
    print("  final evaluation split (CPU s): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                          res["final_evaluation_split_cpu_s"].items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}")
    return res


if __name__ == "__main__":
    main()
