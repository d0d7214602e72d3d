"""``python -m trainer``: pretrain one recipe, print progress and a final JSON.

    python -m trainer --recipe recipe.json --data ../shared/data/cifar10-jpeg.tar.gz --out runs/r1

Without ``--recipe`` the default recipe is used; ``--set field=value`` overrides
single fields (``--set lr=0.1 --set backbone=resnet18``; ``--set distill.weight=0.5`` for a
field of the distill section). The output directory receives the encoder checkpoint, the
metrics, the per-epoch history and the recipe. A recipe with a ``distill`` section whose
teacher is a backbone name pretrains that teacher first (once, cached under ``--cache-dir``).
Every accuracy names its split (``val_knn_top1``, ``val_probe_top1``, ``test_probe_top1``, ...);
``--no-test`` never reads the test split (no ``test_*`` metrics), ``--data-seed`` fixes the proxy
subset while ``--set seed=N`` varies the training. The printed JSON leaves out
``test_probe_correct`` (which test images the probe got right, one bit each); ``metrics.json``
under ``--out`` keeps it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .data import DataSpec
from .engine import train
from .errors import TrainerError
from .per_image import KEY as CORRECT_KEY
from .recipe import Recipe


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise TrainerError(f"--set expects field=value, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw  # plain strings such as backbone names
    return out


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_printer(stream=sys.stderr, label: str = ""):
    """An ``on_epoch`` callback that prints one line per epoch with an ETA."""
    start = time.perf_counter()

    def on_epoch(r: dict) -> None:
        wall = time.perf_counter() - start
        eta = wall / r["epoch"] * (r["epochs"] - r["epoch"]) if r["epoch"] else 0.0
        distill = (f"  distill {r['distill_loss']:.4f}  cos(t) {r['teacher_cosine']:.3f}"
                   if "distill_loss" in r else "")
        print(f"{label}epoch {r['epoch']:>3}/{r['epochs']}  loss {r['loss']:.4f}{distill}  "
              f"val knn {100 * r['val_knn_top1']:5.1f}%  lr {r['lr']:.4f}  {r['images_per_sec']:7.0f} img/s  "
              f"elapsed {_fmt_time(wall)}  ETA {_fmt_time(eta)}", file=stream, flush=True)

    return on_epoch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", help="recipe JSON file (default: the built-in default recipe)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a recipe field")
    p.add_argument("--data", help="dataset root: an ImageFolder dir, a .tar.gz of one, or a torchvision root "
                                  "(default: $RECIPE_SEARCH_DATA)")
    p.add_argument("--dataset", default="cifar10", help="cifar10, cifar100, stl10, imagefolder or synthetic")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset (needs internet)")
    p.add_argument("--classes", type=int, default=10, help="proxy classes (0 = all)")
    p.add_argument("--train-per-class", type=int, default=500, help="proxy train images per class (0 = all)")
    p.add_argument("--val-per-class", type=int, default=50, help="held-out images per class for the kNN monitor")
    p.add_argument("--test-per-class", type=int, default=100, help="test images per class for the probe (0 = all)")
    p.add_argument("--data-seed", type=int, default=None,
                   help="seed of the proxy subset (default: the recipe's seed)")
    p.add_argument("--no-test", action="store_true",
                   help="never read the test split: report val and train metrics only")
    p.add_argument("--cache-dir", help="decoded-image cache (default: $RECIPE_SEARCH_CACHE or ~/.cache/recipe-search)")
    p.add_argument("--out", help="output directory (checkpoint, encoder, metrics, recipe)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--compile", action="store_true", help="torch.compile the query encoder (CUDA only)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; use 1 per process on a shared box)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    try:
        recipe = Recipe.load(args.recipe) if args.recipe else Recipe()
        if args.set:
            recipe = recipe.with_values(_parse_set(args.set))
        spec = DataSpec(dataset=args.dataset, root=args.data, classes=args.classes,
                        train_per_class=args.train_per_class, val_per_class=args.val_per_class,
                        test_per_class=args.test_per_class, cache_dir=args.cache_dir, download=args.download)
        if not args.quiet:
            print(f"pretraining {recipe.backbone} at {recipe.image_size}px for {recipe.epochs} epochs "
                  f"on {args.dataset} (device {args.device})", file=sys.stderr, flush=True)
            if recipe.distill is not None:
                d = recipe.distill
                teacher = d.teacher_checkpoint or f"{d.teacher_backbone} (pretrained once, cached)"
                print(f"distilling from teacher {teacher}: weight {d.weight:g}, views {d.views}",
                      file=sys.stderr, flush=True)
        result = train(recipe, spec, out_dir=args.out, device=args.device, compile=args.compile,
                       resume=not args.no_resume, on_epoch=None if args.quiet else progress_printer(),
                       on_teacher_epoch=None if args.quiet else progress_printer(label="teacher "),
                       data_seed=args.data_seed, evaluate_test=not args.no_test)
    except TrainerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = f" (re-run the same command to resume from {args.out})" if args.out else ""
        print(f"interrupted{resume}", file=sys.stderr)
        return 130
    shown = {k: v for k, v in result.metrics.items() if k != CORRECT_KEY}  # 1.7 kB of bits: in metrics.json only
    print(json.dumps({"status": result.status, "error": result.error, "metrics": shown,
                      "out_dir": result.out_dir}, indent=2))
    return 0 if result.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
