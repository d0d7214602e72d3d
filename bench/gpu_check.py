"""The first GPU session's evidence in one run (at most ~8 minutes on one H100/H200).

    bash bench/gpu_check.sh                    # on the GPU: writes docs/results/gpu/*.json
    bash bench/gpu_check.sh --dry-run --out /tmp/gc   # anywhere: tiny sizes on the CPU, same code paths

Four parts, each written to its own JSON file in ``--out`` (default ``docs/results/gpu``; a
dry run needs ``--out`` or writes to a temporary directory, never into docs/):

1. ``steps.json``: the MoCo training step of the trainer (:meth:`trainer.TrainingRun.step`, bf16
   autocast and channels_last on CUDA) for ``mobilenetv3_large_100`` and ``efficientnet_b0`` at
   32 px: images/s (goal >= 20,000 for the former on an H100/H200) and the pipeline overhead
   ratio = full step (on-device augmentation included) / the same step on pre-augmented device
   tensors (goal <= 1.10), full and pre-augmented steps interleaved (``bench_trainer.step_benchmark``).
2. ``cuda_tests.json``: ``pytest -m cuda`` (tests/test_cuda.py and every test parametrised on the
   ``cuda`` device; on a machine without CUDA they are all skipped).
3. ``search.json``: a short proxy-shaped search, ``recipe-search run --budget proxy`` with 4
   trials sharing the GPU (``--gpus-per-trial 0.25``) at tiny sizes, with ``nvidia-smi`` sampled
   every 0.5 s for the GPU busy %, and the trials per hour it sustained.
4. ``summary.json``: the figures above against their goals, also printed.

A dry run uses the same functions with tiny sizes on the CPU (16 px, batch 8, the ``tiny``
budget, no GPU share); its figures say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "docs" / "results" / "gpu"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
BACKBONES = ("mobilenetv3_large_100", "efficientnet_b0")
GOAL_OVERHEAD = 1.10  # full step / pre-augmented step
GOAL_IMAGES_PER_SEC = 20_000  # mobilenetv3_large_100, 32 px, bf16, one H100/H200

# sizes of the real run and of a dry run (CPU): same code, smaller numbers
SIZES = {
    "gpu": {"image_size": 32, "batch": 256, "steps": 30, "search_backbone": "mobilenetv3_large_100",
            "budget": "proxy", "num_samples": 4, "max_epochs": 3, "train_per_class": 100, "val_per_class": 20,
            "test_per_class": 20, "gpus_per_trial": 0.25, "time_budget": 120, "search_timeout": 240,
            "tests_timeout": 120},  # + ~1 min of steps: inside gpu_check.sh's 480 s
    "dry": {"image_size": 16, "batch": 8, "steps": 2, "search_backbone": "mobilenetv3_small_050",
            "budget": "tiny", "num_samples": 4, "max_epochs": 1, "train_per_class": 16, "val_per_class": 4,
            "test_per_class": 4, "gpus_per_trial": 0.0, "time_budget": 120, "search_timeout": 240,
            "tests_timeout": 120},
}


def _write(out: Path, name: str, obj: dict) -> dict:
    (out / name).write_text(json.dumps(obj, indent=2) + "\n")
    return obj


def environment(device) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
           "cpu_count": os.cpu_count(), "host": platform.node(),
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   gpu_memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1))
    return env


# --------------------------------------------------------------------------- 1. the step


def steps(device, sz: dict) -> dict:
    """Images/s and the pipeline overhead ratio per backbone (``bench_trainer.step_benchmark``)."""
    from bench.bench_trainer import step_benchmark

    rows = []
    for backbone in BACKBONES:
        t0 = time.perf_counter()
        r = step_benchmark(backbone, sz["image_size"], sz["batch"], sz["steps"], device, compile=False)
        r["bench_s"] = round(time.perf_counter() - t0, 1)
        rows.append(r)
        print(f"  {backbone:24} {r['images_per_sec']:>10.0f} img/s  full {r['full_ms']:.2f} ms  "
              f"pre-augmented {r['preaug_ms']:.2f} ms  overhead {r['overhead']:.3f}", flush=True)
    from trainer.device import channels_last

    layout = ", channels_last" if channels_last(device) else ""
    return {"precision": ("bf16 autocast" if device.type == "cuda" else "fp32") + layout,
            "image_size": sz["image_size"], "batch": sz["batch"], "timed_steps_per_path": sz["steps"],
            "method": "bench/bench_trainer.py step_benchmark: full and pre-augmented steps interleaved, medians",
            "rows": rows}


# --------------------------------------------------------------------------- 2. the CUDA tests


def cuda_tests(out: Path, timeout: float) -> dict:
    """``pytest -m cuda``: counts from its JUnit XML."""
    xml = out / "cuda_tests.xml"
    args = ["-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors"]
    cmd = [sys.executable, *args, f"--junitxml={xml}", "tests"]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        rc, tail = p.returncode, (p.stdout + p.stderr)[-3000:]
    except subprocess.TimeoutExpired as e:
        rc, tail = None, f"timed out after {timeout:.0f} s\n{(e.stdout or b'')[-2000:]!r}"
    wall = time.perf_counter() - t0
    counts = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failed: list[str] = []
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            counts["tests"] += 1
            kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), None)
            if kind is None:
                counts["passed"] += 1
            elif kind == "skipped":
                counts["skipped"] += 1
            else:
                counts["failed" if kind == "failure" else "errors"] += 1
                failed.append(f"{case.get('classname')}::{case.get('name')}")
        xml.unlink()
    # pytest exits 5 when nothing was collected: no test carries the marker
    ok = rc == 0 and counts["failed"] == counts["errors"] == 0
    return {"command": " ".join(["python", *args, "tests"]), "returncode": rc, "ok": ok,
            "wall_s": round(wall, 1), **counts, "failed_tests": failed, "output_tail": tail[-1500:]}


# --------------------------------------------------------------------------- 3. a short search


class GpuSampler:
    """``nvidia-smi`` utilisation every ``interval`` s in a thread; no samples without nvidia-smi."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.samples, self.memory_mib = interval, [], []
        self.exe = shutil.which("nvidia-smi")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                p = subprocess.run([self.exe, "--query-gpu=utilization.gpu,memory.used",
                                    "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
                util, mem = p.stdout.strip().splitlines()[0].split(",")[:2]
                self.samples.append(float(util))
                self.memory_mib.append(float(mem))
            except Exception:  # noqa: BLE001 - a missed sample is not a failure
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        if self.exe:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.exe:
            self._thread.join(timeout=10)

    def summary(self) -> dict:
        if not self.exe:
            return {"gpu_busy_pct": None, "note": "nvidia-smi not found: no GPU utilisation sampled"}
        s = self.samples
        return {"gpu_busy_pct": round(statistics.mean(s), 1) if s else None,
                "gpu_busy_pct_median": statistics.median(s) if s else None,
                "gpu_busy_samples": len(s), "sample_interval_s": self.interval,
                "gpu_memory_used_mib_max": max(self.memory_mib) if self.memory_mib else None}


_FINISHED = re.compile(r"search (\S+) (finished|interrupted)[^:]*: (.*?)\s+in \d+s")
_PARENT = re.compile(r"MLflow: parent run (\w+) in (\S+)")


def search(out: Path, sz: dict, data: str | None, dry: bool) -> dict:
    """``recipe-search run`` with 4 trials (sharing the GPU), nvidia-smi sampled meanwhile."""
    home = Path(tempfile.mkdtemp(prefix="rs-gpu-check-"))
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    # the recipe-search command next to this interpreter, else the same CLI as a module (no install)
    exe = shutil.which("recipe-search", path=str(Path(sys.executable).parent))
    cli = [exe] if exe else [sys.executable, "-m", "recipe_search"]
    cmd = [*cli, "run", "--backbone", sz["search_backbone"], "--budget", sz["budget"],
           "--num-samples", str(sz["num_samples"]), "--max-epochs", str(sz["max_epochs"]),
           "--train-per-class", str(sz["train_per_class"]), "--val-per-class", str(sz["val_per_class"]),
           "--test-per-class", str(sz["test_per_class"]), "--confirm-k", "0", "--confirm-seeds", "2",
           "--checkpoint-every", "0", "--time-budget", str(sz["time_budget"]), "--no-progress", "--seed", "0",
           "--tracking-uri", tracking]
    if dry:
        cmd += ["--num-cpus", "2"]  # 1 CPU per trial, 2 at a time
    else:
        cmd += ["--gpus-per-trial", str(sz["gpus_per_trial"]), "--max-concurrent", "4"]
    cmd += ["--data", data] if data else ["--dataset", "synthetic"]
    env = dict(os.environ, RECIPE_SEARCH_HOME=str(home), COLUMNS="250", PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    timed_out = False
    with GpuSampler() as sampler:
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            text, _ = p.communicate(timeout=sz["search_timeout"])
        except subprocess.TimeoutExpired:  # Ctrl-C: the search stops its trials and prints what it has
            timed_out = True
            p.send_signal(signal.SIGINT)
            try:
                text, _ = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                text, _ = p.communicate()
        rc = p.returncode
    wall = time.perf_counter() - t0
    (out / "search_output.txt").write_text(text)
    flat = " ".join(text.split())
    result = {"command": " ".join(["recipe-search", *cmd[len(cli):]]).replace(str(home), "$TMP"),
              "returncode": rc, "timed_out": timed_out, "wall_s": round(wall, 1), "data": data or "synthetic",
              **sampler.summary()}
    m = _FINISHED.search(flat)
    if m:
        result["search_id"], result["status"] = m.group(1), m.group(2)
        counts = {k: int(v) for v, k in re.findall(r"(\d+) ([a-z]+(?: \(confirmation\))?)", m.group(3))}
        result["trial_counts"] = counts
    pm = _PARENT.search(flat)
    if pm:
        try:
            import mlflow

            metrics = mlflow.MlflowClient(tracking_uri=pm.group(2)).get_run(pm.group(1)).data.metrics
            for key in ("search_wall_s", "search_stage_s", "confirm_stage_s", "trials_train_s", "overhead_ratio"):
                if key in metrics:
                    result[key] = round(metrics[key], 2)
        except Exception as e:  # noqa: BLE001 - the figures are optional, the failure is reported
            result["mlflow_error"] = f"{type(e).__name__}: {e}"
    if "search_stage_s" not in result:  # no parent-run metrics (interrupted): the printed stage time
        sm = re.search(r"\(search (\d+)s", flat)
        if sm and int(sm.group(1)) > 0:
            result["search_stage_s"] = float(sm.group(1))
    counts = result.get("trial_counts", {})
    search_trials = sum(v for k, v in counts.items() if "confirmation" not in k)
    runs = sum(counts.values())
    if search_trials and result.get("search_stage_s"):
        result["search_trials"] = search_trials
        result["trials_per_hour"] = round(3600 * search_trials / result["search_stage_s"], 1)
    if runs and result.get("search_wall_s"):
        result["runs_per_hour_whole_search"] = round(3600 * runs / result["search_wall_s"], 1)
    result["completed"] = rc == 0  # the confirmation stage too (a time-out interrupts it: SIGINT)
    result["ok"] = search_trials == sz["num_samples"] and bool(result.get("trials_per_hour"))
    shutil.rmtree(home, ignore_errors=True)
    return result


# --------------------------------------------------------------------------- main


def summarise(env: dict, st: dict, tests: dict | None, srch: dict | None, dry: bool) -> dict:
    by = {r["backbone"]: r for r in st["rows"]}
    mnl = by["mobilenetv3_large_100"]
    s = {"dry_run": dry, "device": env.get("gpu") or env["device"], "date_utc": env["date_utc"],
         "overhead_ratio": round(mnl["overhead"], 3), "overhead_goal": GOAL_OVERHEAD,
         "overhead_ok": mnl["overhead"] <= GOAL_OVERHEAD,
         "images_per_sec": {b: round(r["images_per_sec"], 1) for b, r in by.items()},
         "images_per_sec_goal": {"mobilenetv3_large_100": GOAL_IMAGES_PER_SEC},
         "images_per_sec_ok": mnl["images_per_sec"] >= GOAL_IMAGES_PER_SEC}
    if tests is not None:
        s["cuda_tests"] = {k: tests[k] for k in ("ok", "passed", "failed", "errors", "skipped")}
    if srch is not None:
        s["search"] = {k: srch.get(k) for k in ("ok", "completed", "gpu_busy_pct", "trials_per_hour",
                                                 "search_trials", "search_stage_s", "wall_s")}
    return s


def print_summary(s: dict) -> None:
    tag = " (DRY RUN: CPU, tiny sizes; these figures say nothing about a GPU)" if s["dry_run"] else ""
    print(f"\n== gpu_check summary{tag} ==")
    print(f"device: {s['device']}")
    print(f"pipeline overhead (full step / pre-augmented step, mobilenetv3_large_100): {s['overhead_ratio']:.3f} "
          f"(goal <= {s['overhead_goal']:.2f}: {'met' if s['overhead_ok'] else 'NOT met'})")
    for b, v in s["images_per_sec"].items():
        goal = s["images_per_sec_goal"].get(b)
        verdict = f" (goal >= {goal:,}: {'met' if s['images_per_sec_ok'] else 'NOT met'})" if goal else ""
        print(f"MoCo step img/s {b}: {v:,.0f}{verdict}")
    if "cuda_tests" in s:
        t = s["cuda_tests"]
        print(f"CUDA tests (pytest -m cuda): {t['passed']} passed, {t['failed']} failed, {t['errors']} errors, "
              f"{t['skipped']} skipped -> {'ok' if t['ok'] else 'FAILED'}")
    if "search" in s:
        r = s["search"]
        busy = "n/a (no nvidia-smi)" if r["gpu_busy_pct"] is None else f"{r['gpu_busy_pct']:.0f}%"
        done = "" if r["completed"] else " (the search did not finish its confirmation: see search_output.txt)"
        print(f"search: {r['search_trials']} trials, search stage {r['search_stage_s']} s, "
              f"{r['trials_per_hour']} trials/hour, GPU busy {busy} -> {'ok' if r['ok'] else 'FAILED'}{done}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, same code paths (a test)")
    ap.add_argument("--out", default=None, help="output folder (default docs/results/gpu; dry run: a temp dir)")
    ap.add_argument("--data", default=None, help="CIFAR-10 tarball (default ../shared/data/cifar10-jpeg.tar.gz "
                                                 "when present, else synthetic data)")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-search", action="store_true")
    args = ap.parse_args(argv)

    import torch

    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA GPU here; use --dry-run to check the script on the CPU")
    if args.out:
        out = Path(args.out)
    elif dry:
        out = Path(tempfile.mkdtemp(prefix="gpu-check-dry-"))
    else:
        out = DEFAULT_OUT
    if dry and out.resolve() == DEFAULT_OUT.resolve():
        raise SystemExit("gpu_check: a dry run does not write into docs/results/gpu; give another --out")
    out.mkdir(parents=True, exist_ok=True)
    data = args.data or (str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None)
    sz = SIZES["dry" if dry else "gpu"]
    device = torch.device("cpu" if dry else "cuda")
    if dry:
        torch.set_num_threads(1)
    t_start = time.perf_counter()
    env = _write(out, "environment.json", {**environment(device), "dry_run": dry, "sizes": sz})
    print(f"gpu_check{' --dry-run' if dry else ''}: {env.get('gpu') or env['device']}; writing {out}", flush=True)

    print("[1/3] MoCo step: images/s and pipeline overhead", flush=True)
    st = _write(out, "steps.json", {"dry_run": dry, **steps(device, sz)})
    tests = None
    if not args.skip_tests:
        print("[2/3] pytest -m cuda", flush=True)
        tests = _write(out, "cuda_tests.json", {"dry_run": dry, **cuda_tests(out, sz["tests_timeout"])})
        print(f"  {tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped "
              f"({tests['wall_s']} s)", flush=True)
    srch = None
    if not args.skip_search:
        print(f"[3/3] search: {sz['num_samples']} trials, budget {sz['budget']}"
              f"{'' if dry else ', --gpus-per-trial 0.25'}", flush=True)
        srch = _write(out, "search.json", {"dry_run": dry, **search(out, sz, data, dry)})
    summary = summarise(env, st, tests, srch, dry)
    summary["total_s"] = round(time.perf_counter() - t_start, 1)
    _write(out, "summary.json", summary)
    print_summary(summary)
    print(f"total {summary['total_s']:.0f} s; JSON in {out}")
    return summary


if __name__ == "__main__":
    main()
