"""bench/gpu_check.sh on the CPU (``--dry-run``: tiny sizes, same code paths). The whole dry run
(every JSON file it promises, with the figures the summary prints) is slow: its real search (4
trials, then the confirmation runs) alone takes ~40-60 s on 2 idle cores, the whole check ~90-110 s
on 2 busy ones. The default suite runs its step part (~10 s)."""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_its_json_and_prints_the_summary(tmp_path):
    out = tmp_path / "gpu"
    p = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    files = {f.name for f in out.iterdir()}
    assert {"environment.json", "steps.json", "cuda_tests.json", "search.json", "summary.json"} <= files, files
    assert not (ROOT / "docs" / "results" / "gpu" / "summary.json").exists() or \
        not json.loads((ROOT / "docs" / "results" / "gpu" / "summary.json").read_text())["dry_run"]

    steps = json.loads((out / "steps.json").read_text())
    assert steps["dry_run"] and steps["precision"].startswith("fp32")
    rows = {r["backbone"]: r for r in steps["rows"]}
    assert set(rows) == {"mobilenetv3_large_100", "efficientnet_b0"}
    for r in rows.values():
        assert r["images_per_sec"] > 0 and 0.5 < r["overhead"] < 3, r

    tests = json.loads((out / "cuda_tests.json").read_text())
    # without CUDA every cuda test is collected and skipped, none fails
    assert tests["ok"] and tests["tests"] >= 3 and tests["skipped"] == tests["tests"] and tests["passed"] == 0, tests

    search = json.loads((out / "search.json").read_text())
    assert search["ok"], search
    assert search["search_trials"] == 4 and search["trials_per_hour"] > 0 and search["search_stage_s"] > 0
    assert search["gpu_busy_pct"] is None  # no nvidia-smi on a CPU machine: said, not invented
    assert "recipe-search run" in search["command"] and "--num-samples 4" in search["command"]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and summary["overhead_ratio"] == round(rows["mobilenetv3_large_100"]["overhead"], 3)
    assert summary["images_per_sec_goal"] == {"mobilenetv3_large_100": 20000}
    text = p.stdout
    assert "gpu_check summary (DRY RUN" in text
    assert f"pipeline overhead (full step / pre-augmented step, mobilenetv3_large_100): " \
           f"{summary['overhead_ratio']:.3f}" in text
    assert "MoCo step img/s efficientnet_b0" in text and "trials/hour" in text and "GPU busy n/a" in text


def test_gpu_check_dry_run_steps_only_is_quick_and_writes_nothing_into_docs(tmp_path):
    """The default suite's share of the dry run (~10 s): the step figures and the summary, no tests, no search."""
    out = tmp_path / "gpu"
    p = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out),
                        "--skip-tests", "--skip-search"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert {f.name for f in out.iterdir()} == {"environment.json", "steps.json", "summary.json"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and "cuda_tests" not in summary and "search" not in summary
    assert set(summary["images_per_sec"]) == {"mobilenetv3_large_100", "efficientnet_b0"}
    assert "pipeline overhead" in p.stdout and "CUDA tests" not in p.stdout
    # a dry run refuses to write its CPU figures where the GPU's belong
    p = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out",
                        str(ROOT / "docs" / "results" / "gpu"), "--skip-tests", "--skip-search"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "does not write into docs/results/gpu" in p.stderr
