"""Side by side with lightly: MoCo-v2 on the same backbone, images and machine; throughput and kNN.

    pip install -e '.[peers]'        # lightly: a dependency of this benchmark only
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_peers.py --seeds 0 1 2

Ours is the trainer's public call as a trial makes it (``trainer.train(recipe, data, out_dir=...)``)
on the ``mocov2`` baseline recipe composed as a search composes it at the ``cpu`` budget
(``mobilenetv3_small_100``, 32 px, batch 64, bank 1024, 8 epochs, 10 classes x 200 train / 100 val
images and the whole test split, one torch thread as a CPU trial). The peer is MoCo-v2 from lightly's
blocks (bench/peers_lightly.py) with the same recipe values on the same timm backbone and images.

**Interleaved, equal wall time.** Ours trains epoch by epoch; after each epoch (in ``on_epoch``) the
peer trains until its own training time reaches ours so far (A, B, A, B, ...), so machine noise hits
both alike and, at the end, both have trained for the same wall time (to within one step). Training
time is what each side's loop spends: ours its ``train_time_s`` (augmentation, steps); the peer's its
DataLoader with the per-image transforms plus its steps. Neither counts evaluation: ours' per-epoch
kNN monitor and checkpoint run between the slices, untimed on both sides. Images/s: each side's images
over its training time; the ratio (ours / peer) per seed and per epoch slice.

**Same evaluation.** Every encoder, ours (its ``encoder.pt``), the peer's and the untrained backbone
(the floor, same seed) goes through one frozen-feature kNN (bench/peers_eval.py): precise BN on the
train images, then ``trainer.knn.knn_top1`` of the val and test images against the train bank.

Raw results: one JSON line per seed (``--out``, default docs/results/peers.jsonl) with the command
line; the summary is printed (docs/speed.md, section 3).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
DEFAULT_OUT = ROOT / "docs" / "results" / "peers.jsonl"

from bench.peers_lightly import LightlyMoCo, require_lightly  # noqa: E402
from bench.peers_eval import frozen_knn  # noqa: E402


def recipe_for(args):
    """The ``baseline`` recipe as a search's trial composes it at ``budget`` (trial.TrialContext.recipe_for)."""
    from recipe_search.baselines import by_name
    from recipe_search.budget import get_budget
    from recipe_search.compose import compose
    from recipe_search.space import load_space

    budget = get_budget(args.budget).with_sizes(train_per_class=args.train_per_class,
                                                val_per_class=args.val_per_class,
                                                test_per_class=args.test_per_class)
    fixed = dict(budget.fixed)
    fixed["batch_size"] = min(fixed.get("batch_size", 64), budget.classes * budget.train_per_class)
    recipe, _ = compose(dict(by_name(args.baseline).values), backbone=args.backbone,
                        image_size=args.image_size or budget.image_size, epochs=args.epochs or budget.max_epochs,
                        seed=0, fixed=load_space(None, args.backbone).fixed, budget_fixed=fixed)
    return recipe, budget


def load(args, budget, image_size: int):
    from trainer import load_proxy

    spec = budget.data_spec("cifar10" if args.data else "synthetic", args.data)
    return load_proxy(spec, image_size, args.data_seed)


def run_seed(args, recipe, proxy, seed: int) -> dict:
    """Ours and the peer interleaved at ``seed``, then the three encoders evaluated alike: one JSON row."""
    from trainer import train
    from trainer.backbone import create_backbone, load_encoder

    recipe = recipe.replace(seed=seed)
    dev = torch.device("cpu")
    load0 = os.getloadavg()[0]
    peer = LightlyMoCo(recipe, proxy.train_x, seed, workers=args.workers, channels_last=args.peer_channels_last)
    slices, ours_total = [], [0.0]

    def on_epoch(report: dict) -> None:  # after ours' epoch e: the peer trains up to ours' time so far
        ours_total[0] += report["epoch_time_s"]
        e, n = report["epoch"], report["epochs"]
        ours_img_s = report["images_per_sec"]
        s = peer.train_until(ours_total[0], (e - 1) / n, e / n)
        # an empty slice (the peer's last step overshot this one whole, on a busy machine): no rate
        rate = s["images"] / s["seconds"] if s["seconds"] > 0 and s["images"] else None
        slices.append({"epoch": e, "ours_s": round(report["epoch_time_s"], 3), "ours_images_per_sec":
                       round(ours_img_s, 2), "peer_s": round(s["seconds"], 3), "peer_images": s["images"],
                       "peer_images_per_sec": round(rate, 2) if rate else None,
                       "ratio": round(ours_img_s / rate, 4) if rate else None, "ours_loss": report["loss"],
                       "peer_loss": s["loss"], "load_avg_1m": round(os.getloadavg()[0], 2)})

    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        res = train(recipe, proxy, out_dir=tmp, device="cpu", on_epoch=on_epoch, resume=False)
        if res.status != "completed":
            raise SystemExit(f"bench_peers: our run at seed {seed} ended {res.status}: {res.error}")
        ours_backbone, _ = load_encoder(str(Path(tmp) / "encoder.pt"))
    m = res.metrics
    ours_images = m["epochs_completed"] * (proxy.train_x.shape[0] // recipe.batch_size) * recipe.batch_size
    torch.manual_seed(seed)
    floor_backbone, _ = create_backbone(recipe.backbone, recipe.image_size)
    ours = {"images": ours_images, "train_s": round(m["train_time_s"], 3),
            "images_per_sec": round(ours_images / m["train_time_s"], 2), "epochs": m["epochs_completed"],
            "loss": m["loss"], **frozen_knn(ours_backbone, proxy, dev),
            "trainer_val_knn_top1": m["val_knn_top1"], "trainer_test_knn_top1": m.get("test_knn_top1"),
            "trainer_test_probe_top1": m.get("test_probe_top1")}
    lightly_ = {"images": peer.images, "train_s": round(peer.seconds, 3),
                "images_per_sec": round(peer.images / peer.seconds, 2), "steps": peer.steps,
                "epochs_equiv": round(peer.images / proxy.train_x.shape[0], 2),
                "loss": statistics.mean(peer.losses[-len(peer.losses) // recipe.epochs:]),
                **frozen_knn(peer.backbone, proxy, dev)}
    return {"seed": seed, "ours": ours, "lightly": lightly_, "untrained": frozen_knn(floor_backbone, proxy, dev),
            "throughput_ratio": round(ours["images_per_sec"] / lightly_["images_per_sec"], 4),
            "slices": slices, "load_avg_1m_start": round(load0, 2), "load_avg_1m_end": round(os.getloadavg()[0], 2)}


def _ms(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def summarize(rows: list[dict]) -> dict:
    """Means over seeds, the throughput ratios and the paired kNN differences (ours - lightly)."""
    out = {"seeds": [r["seed"] for r in rows],
           "throughput_ratio_per_seed": [r["throughput_ratio"] for r in rows],
           "throughput_ratio_median_slice": statistics.median(s["ratio"] for r in rows for s in r["slices"]
                                                             if s["ratio"] is not None),
           "throughput_ratio_pooled": (sum(r["ours"]["images"] for r in rows) / sum(r["ours"]["train_s"] for r in rows))
           / (sum(r["lightly"]["images"] for r in rows) / sum(r["lightly"]["train_s"] for r in rows))}
    for key in ("val_knn_top1", "test_knn_top1"):
        if key not in rows[0]["ours"]:
            continue
        a, b = [r["ours"][key] for r in rows], [r["lightly"][key] for r in rows]
        out[key] = {"ours": a, "lightly": b, "untrained": [r["untrained"][key] for r in rows],
                    "paired_diff": [x - y for x, y in zip(a, b)],
                    "mean_paired_diff": statistics.mean(x - y for x, y in zip(a, b))}
    loads = [v for r in rows for v in (r["load_avg_1m_start"], r["load_avg_1m_end"],
                                       *(s["load_avg_1m"] for s in r["slices"]))]
    out["load_avg_1m_range"] = [min(loads), max(loads)]
    return out


def report(rows: list[dict], summary: dict) -> str:
    lines = [f"{'seed':>4} {'ours img/s':>10} {'lightly img/s':>13} {'ratio':>6} {'train s':>8} "
             f"{'val kNN ours':>12} {'lightly':>8} {'floor':>6} {'test kNN ours':>13} {'lightly':>8} {'floor':>6}"]
    for r in rows:
        o, p, u = r["ours"], r["lightly"], r["untrained"]
        nan = float("nan")
        lines.append(f"{r['seed']:>4} {o['images_per_sec']:>10.1f} {p['images_per_sec']:>13.1f} "
                     f"{r['throughput_ratio']:>6.3f} {o['train_s']:>8.1f} {o['val_knn_top1']:>12.3f} "
                     f"{p['val_knn_top1']:>8.3f} {u['val_knn_top1']:>6.3f} {o.get('test_knn_top1', nan):>13.3f} "
                     f"{p.get('test_knn_top1', nan):>8.3f} {u.get('test_knn_top1', nan):>6.3f}")
    s = summary
    lines.append(f"throughput ours/lightly: per seed {s['throughput_ratio_per_seed']}, pooled "
                 f"{s['throughput_ratio_pooled']:.3f}, median epoch slice {s['throughput_ratio_median_slice']:.3f}")
    for key in ("val_knn_top1", "test_knn_top1"):
        if key in s:
            k = s[key]
            lines.append(f"{key} at equal wall time: ours {_ms(k['ours'])}, lightly {_ms(k['lightly'])}, "
                         f"untrained {_ms(k['untrained'])}; paired ours - lightly {k['mean_paired_diff']:+.3f} "
                         f"({', '.join(f'{d:+.3f}' for d in k['paired_diff'])})")
    lines.append(f"load average (1 min) during the run: {s['load_avg_1m_range'][0]}-{s['load_avg_1m_range'][1]} "
                 f"on {os.cpu_count()} cores")
    return "\n".join(lines)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None,
                    help="CIFAR-10 tarball (none: the synthetic set)")
    ap.add_argument("--backbone", default="mobilenetv3_small_100")
    ap.add_argument("--budget", default="cpu", help="sizes, image size, epochs and fixed batch/bank of this budget")
    ap.add_argument("--baseline", default="mocov2")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="recipe seeds (init, augmentation, order)")
    ap.add_argument("--data-seed", type=int, default=0, help="the proxy subset, fixed over seeds")
    ap.add_argument("--epochs", type=int, default=None, help="ours' epochs (default: the budget's)")
    ap.add_argument("--image-size", type=int, default=None, help="default: the budget's")
    ap.add_argument("--train-per-class", type=int, default=None)
    ap.add_argument("--val-per-class", type=int, default=None)
    ap.add_argument("--test-per-class", type=int, default=None, help="0: the whole test split")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a CPU trial has 1)")
    ap.add_argument("--workers", type=int, default=0, help="the peer's DataLoader workers (0: in the one thread)")
    ap.add_argument("--peer-channels-last", action="store_true",
                    help="run the peer's model in channels_last too (the trainer's CPU memory format)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON lines, one per seed (rewritten)")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    lightly = require_lightly()
    torch.set_num_threads(args.threads)
    command = "OMP_NUM_THREADS=1 nice -n 10 python bench/bench_peers.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    recipe, budget = recipe_for(args)
    proxy = load(args, budget, recipe.image_size)
    meta = {"command": command, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "torch": torch.__version__, "lightly_version": lightly.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "workers": args.workers, "peer_channels_last": args.peer_channels_last,
            "data": Path(args.data).name if args.data else "synthetic", "data_seed": args.data_seed,
            "train_images": proxy.train_x.shape[0], "val_images": proxy.val_x.shape[0],
            "test_images": proxy.test_x.shape[0], "recipe": recipe.to_dict()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("")
    rows = []
    for seed in args.seeds:
        row = {**meta, **run_seed(args, recipe, proxy, seed)}
        rows.append(row)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"seed {seed}: ours {row['ours']['images_per_sec']:.1f} img/s, lightly "
              f"{row['lightly']['images_per_sec']:.1f} img/s, ratio {row['throughput_ratio']:.3f}", flush=True)
    summary = summarize(rows)
    print(report(rows, summary))
    return {"rows": rows, "summary": summary}


if __name__ == "__main__":
    main()
