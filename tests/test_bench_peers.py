"""bench/bench_peers.py: its pieces on a tiny setting (when lightly is installed), the one-line error
when it is not, its evaluation against the trainer's, and lightly staying out of the product."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_imports import imports_of, module_files

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "bench_peers.py"
TINY = ["--data", "", "--budget", "tiny", "--backbone", "mobilenetv3_small_050"]


def test_missing_lightly_is_one_clear_line_and_a_failure(tmp_path):
    """Whether or not lightly is installed here: with its import blocked the bench says how to install it."""
    code = ("import sys, runpy; sys.modules['lightly'] = None; "
            f"sys.argv = [{str(BENCH)!r}, *{TINY + ['--out', str(tmp_path / 'p.jsonl')]!r}]; "
            f"runpy.run_path({str(BENCH)!r}, run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("bench_peers: lightly is not installed") and "pip install -e '.[peers]'" in lines[0]
    assert not (tmp_path / "p.jsonl").exists()  # nothing trained, nothing written


def test_product_never_imports_lightly():
    found = []
    for name, path in module_files(ROOT, ("trainer", "recipe_search", "api")).items():
        imports, _ = imports_of(name, path.read_text(), path.name == "__init__.py")
        found += [f"{name}:{i.line}" for i in imports if i.target.split(".")[0] == "lightly"]
    assert not found


def test_frozen_knn_is_the_trainers_evaluation():
    """The bench's one kNN gives the trainer's own numbers on the same untrained encoder."""
    from bench.peers_eval import frozen_knn
    from trainer import DataSpec, Recipe, load_proxy, random_init_metrics
    from trainer.model import build_model

    recipe = Recipe(backbone="mobilenetv3_small_050", image_size=16, batch_size=16, queue_size=64, seed=3)
    proxy = load_proxy(DataSpec(dataset="synthetic", classes=3, train_per_class=24, val_per_class=12,
                                test_per_class=12), recipe.image_size, 0)
    ref = random_init_metrics(recipe, proxy, device="cpu")
    torch.manual_seed(recipe.seed)
    got = frozen_knn(build_model(recipe).encoder_q.backbone, proxy, torch.device("cpu"))
    assert got == {"val_knn_top1": ref["val_knn_top1"], "test_knn_top1": ref["test_knn_top1"]}


def test_tiny_side_by_side(tmp_path):
    """Two seeds at the tiny budget: one row per seed, equal training time, the same kNN for ours."""
    pytest.importorskip("lightly")
    from bench.bench_peers import main

    out = tmp_path / "peers.jsonl"
    res = main([*TINY, "--seeds", "0", "1", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seed"] for r in rows] == [0, 1] and rows == json.loads(json.dumps(res["rows"]))
    for r in rows:
        assert r["command"].endswith(f"--out {out}") and r["lightly_version"]
        ours, peer = r["ours"], r["lightly"]
        assert ours["images"] == 2 * 64 and peer["images"] > 0 and peer["images"] % 16 == 0
        # the peer trained exactly up to ours' time, at most one of its steps beyond it
        assert ours["train_s"] <= peer["train_s"] < ours["train_s"] + peer["train_s"] / peer["steps"] + 0.05
        assert [s["epoch"] for s in r["slices"]] == [1, 2]
        assert r["throughput_ratio"] == pytest.approx(ours["images_per_sec"] / peer["images_per_sec"], rel=1e-3)
        # the bench's extraction of ours' encoder.pt gives the trainer's own kNN at the end of training
        assert ours["val_knn_top1"] == ours["trainer_val_knn_top1"]
        assert ours["test_knn_top1"] == ours["trainer_test_knn_top1"]
        for who in ("ours", "lightly", "untrained"):
            assert 0.0 <= r[who]["val_knn_top1"] <= 1.0 and 0.0 <= r[who]["test_knn_top1"] <= 1.0
    s = res["summary"]
    assert s["throughput_ratio_per_seed"] == [r["throughput_ratio"] for r in rows]
    assert s["test_knn_top1"]["paired_diff"] == [r["ours"]["test_knn_top1"] - r["lightly"]["test_knn_top1"]
                                                 for r in rows]
