"""Encoded image bytes -> uint8 ``[N, 3, S, S]`` tensors, center-cropped and resized to ``S``.

Small JPEGs are decoded in batches by torchvision (libjpeg-turbo); other formats, and JPEGs big
enough that PIL's draft mode (a DCT-domain downscale) is cheaper, go through PIL one by one.
"""

from __future__ import annotations

import functools
import io
import warnings
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError

_DECODE_CHUNK = 1024


def fit_image(img: torch.Tensor, size: int) -> torch.Tensor:
    """Center-crop uint8 ``[..., 3, H, W]`` to a square and resize it (antialiased) to ``size``."""
    h, w = img.shape[-2:]
    if h == w == size:
        return img
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[..., top:top + side, left:left + side]
    if side == size:
        return img
    batch = img if img.dim() == 4 else img.unsqueeze(0)
    out = F.interpolate(batch.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out if img.dim() == 4 else out[0]


def small_jpeg(data: bytes, size: int) -> bool:
    """Whether ``data`` is a JPEG whose short side is below ``2 * size`` (PIL reads its header only):
    such images are decoded in batches by torchvision; bigger ones decode faster in PIL's draft mode."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format in ("JPEG", "MPO") and min(im.size) < 2 * size
    except Exception:  # noqa: BLE001 - not an image PIL knows: decode_pil reports it
        return False


def pil_fit(im, size: int) -> torch.Tensor:
    """Center-crop a PIL RGB image to a square and resize it (PIL bicubic, antialiased) to uint8 [3, size, size].

    Used for single images: PIL's resampler is ~10x cheaper per call than torch's antialiased one."""
    from PIL import Image

    w, h = im.size
    if (w, h) != (size, size):
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        if side != w or side != h:  # crop first: resize(box=...) would filter in pixels outside the box
            im = im.crop((left, top, left + side, top + side))
        if side != size:
            im = im.resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def decode_pil(data: bytes, name: str, size: int) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG":
                im.draft("RGB", (size, size))  # DCT-domain downscale, never below size
            rgb = im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - PIL raises many types
        raise DataError(f"cannot decode image {name}: {type(e).__name__}: {e}; fix or remove this file") from None
    return pil_fit(rgb, size)


@functools.lru_cache(maxsize=1)
def _torchvision_jpeg_decoder():
    """torchvision's batched libjpeg-turbo decoder (about 3x faster than PIL on small JPEGs), or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchvision.io import ImageReadMode, decode_jpeg
    except Exception:  # noqa: BLE001 - removed from a future torchvision, or image ops not built
        return None

    def decode(blobs: list[bytes]) -> list[torch.Tensor]:
        with warnings.catch_warnings():  # deprecated in torchvision 0.29; frombuffer on read-only bytes
            warnings.simplefilter("ignore")
            encoded = [torch.frombuffer(b, dtype=torch.uint8) for b in blobs]
            return decode_jpeg(encoded, mode=ImageReadMode.RGB)

    return decode


def fit_decoded(out: list, indices: list[int], size: int) -> None:
    """Fit the decoded images ``out[i]`` (uint8 [3, h, w]) for ``i`` in ``indices`` to
    [3, size, size] in place: batched torch resizes for groups of 8+ same-size images
    (CIFAR, STL), PIL for the rest."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i in indices:
        if tuple(out[i].shape) != (3, size, size):
            by_shape.setdefault(tuple(out[i].shape), []).append(i)
    for group in by_shape.values():
        if len(group) >= 8:
            fitted = fit_image(torch.stack([out[i] for i in group]), size)
            for j, i in enumerate(group):
                out[i] = fitted[j]
        else:
            from PIL import Image

            for i in group:
                out[i] = pil_fit(Image.fromarray(out[i].permute(1, 2, 0).numpy()), size)


def decode_images(blobs: list[bytes], names: list[str], size: int) -> torch.Tensor:
    """Decode encoded images to uint8 [n, 3, size, size]: small JPEGs batched via torchvision, the rest via PIL."""
    decoder = _torchvision_jpeg_decoder()
    out: list[torch.Tensor | None] = [None] * len(blobs)
    fast = []
    for i, b in enumerate(blobs):
        if decoder is not None and small_jpeg(b, size):
            fast.append(i)
        else:  # not a JPEG, or big enough that PIL's draft mode decodes it faster
            out[i] = decode_pil(b, names[i], size)
    if fast:
        try:
            decoded = decoder([blobs[i] for i in fast])
        except Exception:  # noqa: BLE001 - e.g. CMYK or truncated JPEGs: let PIL try each one
            decoded = [None] * len(fast)
        for i, t in zip(fast, decoded):
            out[i] = decode_pil(blobs[i], names[i], size) if t is None else t
        fit_decoded(out, fast, size)
    if not out:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    return torch.stack(out)  # type: ignore[arg-type]


def decode_stream(items: Iterable[tuple[str, bytes]], size: int) -> tuple[list[str], torch.Tensor]:
    names: list[str] = []
    images: list[torch.Tensor] = []
    chunk_names: list[str] = []
    chunk: list[bytes] = []
    for name, data in items:
        chunk_names.append(name)
        chunk.append(data)
        if len(chunk) >= _DECODE_CHUNK:
            images.append(decode_images(chunk, chunk_names, size))
            names.extend(chunk_names)
            chunk, chunk_names = [], []
    if chunk:
        images.append(decode_images(chunk, chunk_names, size))
        names.extend(chunk_names)
    return names, (torch.cat(images) if images else torch.empty((0, 3, size, size), dtype=torch.uint8))

