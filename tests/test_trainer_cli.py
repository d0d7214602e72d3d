"""`python -m trainer` as a user runs it: progress, final JSON, outputs, clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "backbone=mobilenetv3_small_050", "--set", "batch_size=16", "--set", "queue_size=64",
        "--set", "epochs=2", "--set", "proj_hidden_dim=64"]


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=cwd, capture_output=True, text=True)


def test_runs_and_prints_progress_and_final_json(tmp_path):
    out = tmp_path / "out"
    p = run("--dataset", "synthetic", "--classes", "3", "--train-per-class", "16", "--val-per-class", "4",
            "--test-per-class", "8", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--device", "cpu",
            *TINY)
    assert p.returncode == 0, p.stderr
    assert "epoch   1/2" in p.stderr and "epoch   2/2" in p.stderr and "ETA" in p.stderr
    assert "val knn" in p.stderr
    result = json.loads(p.stdout)
    assert result["status"] == "completed"
    for key in ("val_knn_top1", "val_probe_top1", "train_probe_top1", "test_probe_top1", "test_knn_top1"):
        assert 0 <= result["metrics"][key] <= 1, key
    assert not {"probe_top1", "knn_top1", "knn_test_top1", "probe_val_top1"} & set(result["metrics"])
    for name in ("encoder.pt", "metrics.json", "recipe.json", "history.json"):
        assert (out / name).exists()
    assert all("val_knn_top1" in r for r in json.loads((out / "history.json").read_text()))


def test_no_test_reports_no_test_metrics(tmp_path):
    p = run("--dataset", "synthetic", "--classes", "3", "--train-per-class", "16", "--val-per-class", "4",
            "--test-per-class", "8", "--data-seed", "3", "--no-test", "--quiet", "--device", "cpu",
            *TINY, "--set", "epochs=1")
    assert p.returncode == 0, p.stderr
    metrics = json.loads(p.stdout)["metrics"]
    assert 0 <= metrics["val_probe_top1"] <= 1 and not any(k.startswith("test_") for k in metrics)


def test_recipe_file_with_a_bad_value_exits_2_naming_the_field(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"temperature": -1}))
    p = run("--recipe", str(bad), "--dataset", "synthetic")
    assert p.returncode == 2
    assert "temperature must be in" in p.stderr and "Traceback" not in p.stderr


def test_unknown_backbone_and_malformed_json_exit_2(tmp_path):
    p = run("--set", "backbone=efficientnet_b9000", "--dataset", "synthetic")
    assert p.returncode == 2 and "not a timm model" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "r.json"
    bad.write_text("{not json")
    p = run("--recipe", str(bad))
    assert p.returncode == 2 and "not valid JSON" in p.stderr


def test_missing_data_says_how_to_get_it(tmp_path):
    p = run("--dataset", "cifar10", "--data", str(tmp_path / "nowhere"), "--cache-dir", str(tmp_path / "c"))
    assert p.returncode == 2 and "--data" in p.stderr and "Traceback" not in p.stderr


def test_gpu_asked_for_and_absent(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    p = run("--dataset", "synthetic", "--device", "cuda", "--cache-dir", str(tmp_path / "c"), *TINY)
    assert p.returncode == 2 and "no CUDA GPU is available" in p.stderr
