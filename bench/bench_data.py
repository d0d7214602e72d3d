"""Reading and decoding an ImageFolder tarball: the hand-written fast paths against the standard library.

Usage::

    .venv/bin/python bench/bench_data.py [--tar ../shared/data/cifar10-jpeg.tar.gz] [--size 32]
        [--rounds 3] [--limit 0] [--json out.json]

Every path reads every image member of the tarball and decodes it to uint8 ``[N, 3, S, S]``
(center crop, resize to S), in chunks of 1024 images as the decode cache does. Two pieces of
``trainer.data`` were hand-written for speed, and each stays only while it is at least 2x faster
than the standard library in this benchmark:

* the tar reader (``trainer.data.sources.iter_tar``) against ``tarfile``'s stream: kept
  (2.5x and 2.7x in two runs on the shared CIFAR-10 tarball, 60k members, 2 CPU cores);
* a JPEG-header parser that routed small JPEGs to torchvision's batched decoder and the rest to
  PIL, against the same routing with ``PIL.Image.open`` reading the header
  (``trainer.data.decode.small_jpeg``): 1.5x and 1.4x, so it was deleted; its code lives on below
  only as the measured alternative. Both routings decode the same images the same way.

Timed side by side: reading alone (hand-written vs ``tarfile``); decoding the bytes already in
memory (the trainer's ``decode_images`` vs the deleted parser's routing vs PIL alone); and end to
end (the trainer's reader + decoder vs ``tarfile`` + the same decoder vs ``tarfile`` + PIL).
Rounds are interleaved (A B C A B C ...) so machine noise hits every path alike, and the median of
each is reported; the decoded tensors are compared pixel for pixel. The last line is one JSON
object with the times and the ratios (``ratio_*`` = the slower path's time / the faster one's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tarfile
import time
import warnings
from pathlib import PurePosixPath
from typing import Callable, Iterable, Iterator

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench._common import emit  # noqa: E402
from trainer.data.decode import decode_images, decode_pil, fit_decoded  # noqa: E402
from trainer.data.sources import is_image_path, iter_tar  # noqa: E402

CHUNK = 1024
DEFAULT_TAR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                           "cifar10-jpeg.tar.gz")


# -- the standard-library paths --------------------------------------------------------------

def tarfile_members(path: str) -> Iterator[tuple[str, bytes]]:
    """(normalised name, bytes) of the image members, streamed by ``tarfile``."""
    with tarfile.open(path, mode="r|*") as tf:
        for member in tf:
            if member.isfile():
                f = tf.extractfile(member)
                if f is None:
                    continue
                parts = tuple(p for p in PurePosixPath(member.name).parts if p not in ("/", ".."))
                if is_image_path(parts):
                    yield "/".join(parts), f.read()


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def handwritten_small_jpeg(b: bytes, size: int) -> bool:
    """The deleted hand-written JPEG-header parser: walks the segments to the frame header (SOF)."""
    if b[:3] != b"\xff\xd8\xff":
        return False
    i, n = 2, len(b)
    while i + 9 < n:
        if b[i] != 0xFF:
            return False
        marker = b[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            i += 2
            continue
        if marker in _SOF:
            h, w = int.from_bytes(b[i + 5:i + 7], "big"), int.from_bytes(b[i + 7:i + 9], "big")
            return min(h, w) < 2 * size
        i += 2 + int.from_bytes(b[i + 2:i + 4], "big")
    return False


def tv_jpeg_decode(blobs: list[bytes]) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():  # decode_jpeg is deprecated in torchvision 0.29; frombuffer on bytes
        warnings.simplefilter("ignore")
        return decode_jpeg([torch.frombuffer(b, dtype=torch.uint8) for b in blobs], mode=ImageReadMode.RGB)


def decode_handwritten_header(blobs: list[bytes], names: list[str], size: int) -> torch.Tensor:
    """``decode_images`` as it was with the hand-written parser routing the images."""
    out: list[torch.Tensor | None] = [None] * len(blobs)
    small = []
    for i, b in enumerate(blobs):
        if handwritten_small_jpeg(b, size):
            small.append(i)
        else:
            out[i] = decode_pil(b, names[i], size)
    if small:
        for i, t in zip(small, tv_jpeg_decode([blobs[i] for i in small])):
            out[i] = t
        fit_decoded(out, small, size)
    return torch.stack(out) if out else torch.empty((0, 3, size, size), dtype=torch.uint8)  # type: ignore[arg-type]


def decode_pil_only(blobs: list[bytes], names: list[str], size: int) -> torch.Tensor:
    return torch.stack([decode_pil(b, n, size) for b, n in zip(blobs, names)])


# -- harness -----------------------------------------------------------------------------------

def limited(items: Iterable, limit: int) -> Iterator:
    for i, item in enumerate(items):
        if limit and i >= limit:
            return
        yield item


def pipeline(read: Callable[[], Iterable[tuple[str, bytes]]], decode, size: int, limit: int) -> torch.Tensor:
    out, names, blobs = [], [], []
    for name, data in limited(read(), limit):
        names.append(name)
        blobs.append(data)
        if len(blobs) >= CHUNK:
            out.append(decode(blobs, names, size))
            names, blobs = [], []
    if blobs:
        out.append(decode(blobs, names, size))
    return torch.cat(out)


def decode_all(decode, items: list[tuple[str, bytes]], size: int) -> torch.Tensor:
    return torch.cat([decode([b for _, b in items[i:i + CHUNK]], [n for n, _ in items[i:i + CHUNK]], size)
                      for i in range(0, len(items), CHUNK)])


def interleaved(jobs: dict[str, Callable[[], object]], rounds: int) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds of each job over ``rounds`` interleaved rounds, and each job's last result."""
    times: dict[str, list[float]] = {k: [] for k in jobs}
    last: dict[str, object] = {}
    for _ in range(rounds):
        for name, job in jobs.items():
            t0 = time.perf_counter()
            last[name] = job()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, last


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tar", default=DEFAULT_TAR, help="an ImageFolder tarball (default: the shared CIFAR-10 one)")
    p.add_argument("--size", type=int, default=32, help="decoded image size")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--limit", type=int, default=0, help="read only the first N images (0: all)")
    p.add_argument("--json", help="also write the result to this JSON file")
    args = p.parse_args(argv)
    path, size, limit = os.path.abspath(args.tar), args.size, args.limit
    if not os.path.isfile(path):
        raise SystemExit(f"no tarball at {path}; pass --tar")
    print(f"{path} ({os.path.getsize(path) / 2**20:.1f} MiB), {size}px, {args.rounds} interleaved rounds, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    # 0. warm-up: imports, PIL plugins, torchvision's decoder (not timed)
    head = list(limited(tarfile_members(path), 64))
    for decode in (decode_images, decode_handwritten_header, decode_pil_only):
        decode_all(decode, head, size)

    # 1. reading only
    read_s, read_out = interleaved({
        "hand-written": lambda: sum(len(b) for _, b in limited(iter_tar(path), limit)),
        "tarfile": lambda: sum(len(b) for _, b in limited(tarfile_members(path), limit))}, args.rounds)
    assert len(set(read_out.values())) == 1, f"the readers disagree on the bytes read: {read_out}"
    items = list(limited(tarfile_members(path), limit))
    print(f"read   {len(items)} images: " + ", ".join(f"{k} {v:.2f} s" for k, v in read_s.items()), flush=True)

    # 2. decoding only, the bytes already in memory
    dec_s, dec_out = interleaved({"trainer": lambda: decode_all(decode_images, items, size),
                                  "hand-written header": lambda: decode_all(decode_handwritten_header, items, size),
                                  "PIL": lambda: decode_all(decode_pil_only, items, size)}, args.rounds)
    print("decode " + ", ".join(f"{k} {v:.2f} s" for k, v in dec_s.items()), flush=True)

    # 3. end to end
    e2e_s, e2e_out = interleaved({"trainer": lambda: pipeline(lambda: iter_tar(path), decode_images, size, limit),
                                  "tarfile+tv": lambda: pipeline(lambda: tarfile_members(path), decode_images,
                                                                 size, limit),
                                  "tarfile+PIL": lambda: pipeline(lambda: tarfile_members(path), decode_pil_only,
                                                                  size, limit)}, args.rounds)
    print("end to end " + ", ".join(f"{k} {v:.2f} s" for k, v in e2e_s.items()), flush=True)

    ref = e2e_out["trainer"]
    outputs = {**e2e_out, **{f"decode:{k}": v for k, v in dec_out.items()}}
    same = {k: bool(torch.equal(ref, v)) for k, v in outputs.items()}
    differ = {k: float((ref.int() - v.int()).abs().float().mean()) for k, v in outputs.items() if not same[k]}
    result = {"tarball": path, "images": len(items), "size": size, "rounds": args.rounds,
              "read_s": read_s, "decode_s": dec_s, "end_to_end_s": e2e_s,
              # the two hand-written pieces, each against its standard-library replacement
              "ratio_tar_reader": read_s["tarfile"] / read_s["hand-written"],
              "ratio_jpeg_header_parser": dec_s["trainer"] / dec_s["hand-written header"],
              # the trainer's path against the standard library end to end
              "ratio_end_to_end_vs_tarfile_tv": e2e_s["tarfile+tv"] / e2e_s["trainer"],
              "ratio_end_to_end_vs_tarfile_pil": e2e_s["tarfile+PIL"] / e2e_s["trainer"],
              "ratio_decode_vs_pil": dec_s["PIL"] / dec_s["trainer"],
              "pixel_identical_to_trainer": same, "mean_abs_pixel_difference": differ}
    print("ratios: " + ", ".join(f"{k[6:]} {v:.2f}x" for k, v in result.items() if k.startswith("ratio_")))
    print("  tar_reader: tarfile's time / the hand-written reader's (kept while >= 2x)")
    print("  jpeg_header_parser: PIL-header routing's decode time / the deleted hand-written parser's")
    print("pixel-identical to the trainer's output: " + ", ".join(f"{k} {v}" for k, v in same.items()))
    return emit(result, args.json)


if __name__ == "__main__":
    main()
