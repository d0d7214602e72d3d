"""Overhead of DisCo distillation: training-step time with the teacher / without it.

Usage::

    .venv/bin/python bench/bench_distill.py [--device cpu|cuda] [--batch 32] [--size 32] [--steps 10]
        [--pairs resnet18:mobilenetv3_large_100 resnet50:efficientnet_b0] [--json out.json]

For each ``teacher:student`` pair, one process builds two training runs of the same student
recipe on the same random uint8 proxy: ``plain`` (MoCo-v2 + SInfoNCE) and ``distill`` (the same
plus a frozen teacher, weight 1, both views). The teacher is randomly initialised: its
weights do not change its cost. Full optimisation steps (augmentation, query and key forward
passes, teacher forward, loss, backward, optimiser step, queue update) are timed, interleaved
(plain, distill, plain, ...) after a warm-up so machine noise hits both alike; the ratio of the
median step times is the overhead. On CUDA the student runs in bf16 autocast and the teacher in
bf16 weights, as in training; on the CPU both are fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench._common import torch_device  # noqa: E402
from trainer.data import ProxyData  # noqa: E402
from trainer.distill import Teacher  # noqa: E402
from trainer import TrainingRun  # noqa: E402
from trainer.recipe import Recipe  # noqa: E402

DEFAULT_PAIRS = ["resnet18:mobilenetv3_large_100", "resnet50:efficientnet_b0"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_proxy(n: int, size: int) -> ProxyData:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    y = torch.zeros(n, dtype=torch.long)
    empty_x, empty_y = x[:0], y[:0]
    return ProxyData(x, y, empty_x, empty_y, empty_x, empty_y, ["all"], "random")


def bench_pair(teacher_name: str, student_name: str, args, device: torch.device) -> dict:
    common = dict(image_size=args.size, batch_size=args.batch, queue_size=max(4096, 2 * args.batch),
                  proj_hidden_dim=args.hidden, proj_out_dim=128, epochs=1, smoothing=0.1)
    student = Recipe(backbone=student_name, **common)
    distilled = student.replace(distill={"teacher_checkpoint": "(random init, benchmark)", "weight": 1.0})
    teacher = Teacher.from_recipe(Recipe(backbone=teacher_name, **{**common, "proj_hidden_dim": 2048}))
    teacher.place(device)
    proxy = random_proxy(args.batch, args.size)
    runs = {"plain": TrainingRun(student, proxy, device, compile=args.compile),
            "distill": TrainingRun(distilled, proxy, device, compile=args.compile, teacher=teacher)}
    batch = runs["plain"].train_x
    for run in runs.values():
        run.model.train()
        for i in range(args.warmup):
            run.step(batch, i)
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(args.steps):
        for name, run in runs.items():  # interleaved
            _sync(device)
            t0 = time.perf_counter()
            loss = run.step(batch, args.warmup + i)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
            assert torch.isfinite(loss), (name, loss)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    row = {"teacher": teacher_name, "student": student_name, "plain_step_ms": 1000 * med["plain"],
           "distill_step_ms": 1000 * med["distill"], "overhead_ratio": med["distill"] / med["plain"],
           "teacher_params_m": sum(p.numel() for p in teacher.parameters()) / 1e6,
           "student_params_m": sum(p.numel() for p in runs["plain"].model.encoder_q.parameters()) / 1e6}
    print(f"  {teacher_name:>10s} -> {student_name:<22s} plain {row['plain_step_ms']:9.1f} ms  "
          f"distill {row['distill_step_ms']:9.1f} ms  ratio {row['overhead_ratio']:.2f}x", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=2048, help="student proj_hidden_dim")
    p.add_argument("--steps", type=int, default=10, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--pairs", nargs="+", default=DEFAULT_PAIRS, metavar="TEACHER:STUDENT")
    p.add_argument("--compile", action="store_true", help="torch.compile the student's query encoder (CUDA)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave default)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    device, name = torch_device(args.device, args.threads)
    print(f"torch {torch.__version__} on {name}; batch {args.batch}, {args.size}px, "
          f"{args.steps} interleaved steps after {args.warmup} warm-up")
    rows = []
    for pair in args.pairs:
        teacher_name, _, student_name = pair.partition(":")
        rows.append(bench_pair(teacher_name, student_name, args, device))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": name, "args": vars(args), "results": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
