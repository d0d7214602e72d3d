"""Per-image correctness of an evaluation, packed into a short string.

Two encoders evaluated on the same test images err on many of the same (hard) images, so the
test images' part of the noise in the *difference* of their accuracies is far smaller than in
each accuracy alone. Measuring it needs, for every run, which test images its probe got right:
one bit per image, ``<n>:<base64 of the packed bits>`` (about 1.7 kB for 10,000 images).

>>> import torch
>>> text = encode(torch.tensor([True, False, True]))
>>> text
'3:oA=='
>>> decode(text).tolist()
[True, False, True]
"""

from __future__ import annotations

import base64

import numpy as np
import torch

KEY = "test_probe_correct"  # the evaluation's key for the test probe's per-image correctness


def encode(correct: torch.Tensor) -> str:
    """``correct``: a 1-D bool tensor, one entry per image in the split's order."""
    bits = correct.detach().to("cpu", torch.bool).numpy().reshape(-1)
    return f"{bits.size}:{base64.b64encode(np.packbits(bits).tobytes()).decode('ascii')}"


def decode(text: str) -> np.ndarray:
    """The bool array :func:`encode` packed; ``ValueError`` when ``text`` is not such a string."""
    try:
        n, payload = text.split(":", 1)
        n = int(n)
        bits = np.unpackbits(np.frombuffer(base64.b64decode(payload, validate=True), dtype=np.uint8))
    except (ValueError, TypeError) as e:
        raise ValueError(f"not a packed per-image correctness string: {text[:40]!r}") from e
    if n < 0 or bits.size < n or bits.size - n >= 8:
        raise ValueError(f"packed per-image correctness holds {bits.size} bits, not {n} images")
    return bits[:n].astype(bool)
