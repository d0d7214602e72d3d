"""Device selection, mixed precision (bf16 autocast on CUDA, fp32 on the CPU) and memory format
(``torch.channels_last`` on both)."""

from __future__ import annotations

import contextlib

import torch

from .errors import DeviceError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU if there is one, else the CPU. Asking for an absent GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} was asked for but no CUDA GPU is available; "
                              "use --device cpu or --device auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) visible")
    elif dev.type != "cpu":
        raise DeviceError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}")
    return dev


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op on the CPU (training there is fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Model and inputs in torch.channels_last, per device type. On CUDA for the tensor cores; on the CPU
# because oneDNN's depthwise convolutions are much faster in it: one training step (1 thread, 32 px,
# batch 64) of mobilenetv3_small_100 1.7x, mobilenetv3_large_100 1.4x, efficientnet_b0 1.8x faster,
# resnet18 unchanged (bench/bench_step.py, docs/speed.md). Not bit-identical to NCHW (rounding order),
# same results within seed noise. A dict so that benchmarks and tests can switch a device type off.
CHANNELS_LAST = {"cuda": True, "cpu": True}


def channels_last(device: torch.device) -> bool:
    """Whether the model and its image batches use ``torch.channels_last`` on ``device``."""
    return CHANNELS_LAST.get(torch.device(device).type, False)
