"""What the benchmarks share: the torch device set-up of the step benches, the integration
tests' throwaway services (PostgreSQL, an MLflow server, ...), the one JSON line (plus an
optional ``--json`` file) each bench ends with, and the one line naming the machine a figure came from."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def torch_device(device: str, threads: int = 0):
    """``(torch.device, a name for the report)`` for ``--device cpu|cuda``; ``threads`` > 0 pins
    torch's CPU threads. Exits with a message when CUDA is asked for and absent."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for but CUDA is not available")
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    return dev, name


def services():
    """``tests/integration/services.py`` as a module (the tests are not a package)."""
    name = "rs_it_services"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "integration" / "services.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def emit(result: dict, json_path: str | None = None) -> dict:
    """Print ``result`` as one JSON line; also write it, indented, to ``json_path``."""
    print(json.dumps(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
    return result


def machine() -> str:
    """This machine in one line: cores, CPU model, GPU, torch and Python versions."""
    import platform

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {gpu}, torch {torch.__version__}, Python {platform.python_version()}"
