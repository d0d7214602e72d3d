"""The decoded-image cache: each full split of a file-backed source, decoded once per image size.

A cache file (``<cache dir>/<source>-<split>-<size>px-<key>.pt``) is keyed by the source's identity
(tarball path, size and mtime; a folder's file listing; a torchvision dataset name), the split and
the size. It is written atomically (temp file + ``os.replace``); a corrupt file is deleted and
rebuilt, and a cache that cannot be written only costs the next run a decode.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from .sources import TORCHVISION, Source, decode_folder, decode_torchvision, walk_images
from .spec import Split

CACHE_VERSION = 1


def _source_identity(src: Source) -> dict[str, Any]:
    if src.kind == "torchvision":
        return {"kind": "torchvision", "name": TORCHVISION[src.dataset][0]}
    if src.kind == "tar":
        st = os.stat(src.path)
        return {"kind": "tar", "path": os.path.abspath(src.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    listing = hashlib.sha256()
    for rel, full in walk_images(src.path):
        st = os.stat(full)
        listing.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"kind": "dir", "path": os.path.abspath(src.path), "files": listing.hexdigest()}


def _cache_path(cache_dir: Path, src: Source, identity: dict, split: str, size: int) -> Path:
    key = json.dumps({"v": CACHE_VERSION, "source": identity, "split": split, "size": size}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / f"{src.label()}-{split}-{size}px-{digest}.pt"


def _read_cache(path: Path, size: int) -> Split | None:
    """The cached split at ``path``; None when absent. A corrupt file is deleted."""
    if not path.exists():
        return None
    try:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # e.g. a legacy (non-zip) file cannot be mmapped
            if "mmap" not in str(e):
                raise
            blob = torch.load(path, map_location="cpu", weights_only=True)
        split = Split(x=blob["x"], y=blob["y"], classes=list(blob["classes"]), present=bool(blob["present"]))
        if blob.get("version") != CACHE_VERSION:
            raise ValueError(f"cache version {blob.get('version')!r} != {CACHE_VERSION}")
        x, y = split.x, split.y
        if x.dtype != torch.uint8 or x.dim() != 4 or tuple(x.shape[1:]) != (3, size, size):
            raise ValueError(f"images have dtype {x.dtype} and shape {tuple(x.shape)}")
        if y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
            raise ValueError(f"labels have dtype {y.dtype} and shape {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(split.classes)):
            raise ValueError("labels out of range")
        if not all(isinstance(c, str) for c in split.classes):
            raise ValueError("class names are not strings")
        return split
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable cache is rebuilt
        warnings.warn(f"decoded-image cache {path} is corrupt ({type(e).__name__}: {e}); deleting and rebuilding",
                      RuntimeWarning, stacklevel=3)
        try:
            path.unlink()
        except OSError:
            pass
        return None


def _write_cache(path: Path, split: Split, source: str) -> None:
    """Write atomically (temp file + os.replace); a failure only costs the cache, never the run."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
        with os.fdopen(fd, "wb") as f:
            torch.save({"version": CACHE_VERSION, "x": split.x.contiguous(), "y": split.y,
                        "classes": list(split.classes), "present": split.present, "source": source}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        warnings.warn(f"could not write decoded-image cache {path} ({e}); the next run decodes again",
                      RuntimeWarning, stacklevel=3)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _remove_stale_tmp(cache_dir: Path, max_age_s: float = 6 * 3600) -> None:
    """Remove temp files left by killed runs (old enough that no writer can still own them)."""
    now = time.time()
    for p in cache_dir.glob(".tmp-*.pt"):
        try:
            if now - p.stat().st_mtime > max_age_s:
                p.unlink()
        except OSError:
            pass


def decoded_splits(src: Source, size: int, cache_dir: Path) -> tuple[Split, Split]:
    """The full train and test splits of ``src`` at ``size`` px, from the cache or decoded."""
    identity = _source_identity(src)
    paths = {s: _cache_path(cache_dir, src, identity, s, size) for s in ("train", "test")}
    got = {s: _read_cache(p, size) for s, p in paths.items()}
    missing = [s for s, v in got.items() if v is None]
    if missing:
        if src.kind == "torchvision":
            fresh = {s: decode_torchvision(src, s, size) for s in missing}
        else:
            fresh = decode_folder(src, size)
        for s in missing:
            _write_cache(paths[s], fresh[s], src.describe())
            got[s] = fresh[s]
    train, test = got["train"], got["test"]
    if train.classes != test.classes and test.present:
        raise DataError(f"{src.describe()}: train and test class lists differ; delete the cache files "
                        f"{paths['train']} and {paths['test']}")
    return train, test

