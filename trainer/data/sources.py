"""Where a :class:`~trainer.data.spec.DataSpec`'s images come from, and reading them.

:func:`resolve_source` turns a spec into a :class:`Source`: an ImageFolder directory, a tarball of
one (streamed, never extracted) or torchvision's files (or a torchvision download).
:func:`decode_folder` reads a directory or tarball into full train/test :class:`Split` s (class
folders assigned by :func:`layout`); :func:`decode_torchvision` reads one torchvision split.
"""

from __future__ import annotations

import os
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import DataError
from .decode import decode_stream, fit_image
from .spec import DATA_ENV, DataSpec, Split, resolve_cache_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
TRAIN_DIRS = ("train", "training")
TEST_DIRS = ("test", "val", "valid", "validation")  # in order of preference

# torchvision datasets: class name, folder its files live in, native image size
TORCHVISION = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", 32),
    "cifar100": ("CIFAR100", "cifar-100-python", 32),
    "stl10": ("STL10", "stl10_binary", 96),
}


@dataclass
class Source:
    """Where a spec's images are: an ImageFolder tarball or directory, or torchvision's files."""

    dataset: str
    kind: str                  # "tar" | "dir" | "torchvision"
    path: str                  # tarball, folder or torchvision root
    download: bool = False

    def describe(self) -> str:
        if self.kind == "tar":
            return f"{self.dataset}: ImageFolder tarball {self.path}"
        if self.kind == "dir":
            return f"{self.dataset}: ImageFolder directory {self.path}"
        how = "download into" if self.download else "files in"
        return f"{self.dataset}: torchvision {TORCHVISION[self.dataset][0]} ({how} {self.path})"

    def label(self) -> str:
        if self.kind == "torchvision":
            return self.dataset
        stem = os.path.basename(self.path.rstrip(os.sep)) or "root"
        stem = re.sub(r"(\.tar)?\.(gz|tgz|bz2|xz|tar)$", "", stem)
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:40] or "data"


def _is_tarball(path: str) -> bool:
    name = path.lower()
    return name.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz"))


def _data_root(spec: DataSpec) -> str | None:
    root = spec.root or os.environ.get(DATA_ENV) or None
    return os.path.abspath(os.path.expanduser(root)) if root else None


def resolve_source(spec: DataSpec) -> Source:
    root = _data_root(spec)
    from_env = spec.root is None and root is not None
    origin = f"${DATA_ENV}" if from_env else "--data"
    if root is not None and not os.path.exists(root):
        raise DataError(f"{origin} path {root} does not exist; point it at an ImageFolder directory "
                        f"(DIR/train/<class>/*.jpg) or a .tar.gz of one" + _hint(spec))
    if spec.dataset == "imagefolder":
        if root is None:
            raise DataError("dataset 'imagefolder' needs a root: pass --data DIR (an ImageFolder directory "
                            f"DIR/train/<class>/*, DIR/test/<class>/* or a .tar.gz of one) or set {DATA_ENV}")
        if os.path.isfile(root):
            if not _is_tarball(root):
                raise DataError(f"{origin} {root} is a file but not a tarball (.tar.gz, .tgz, .tar)")
            return Source("imagefolder", "tar", root)
        return Source("imagefolder", "dir", root)

    name = spec.dataset
    tv_folder = TORCHVISION[name][1]
    looked: list[str] = []
    if root is not None:
        if os.path.isfile(root):
            if _is_tarball(root):
                return Source(name, "tar", root)
            raise DataError(f"{origin} {root} is a file but not a tarball (.tar.gz, .tgz, .tar)" + _hint(spec))
        for sub in (name, f"{name}-jpeg", ""):
            base = os.path.join(root, sub) if sub else root
            looked.append(os.path.join(base, "train", "<class>", ""))
            if _has_class_dirs(os.path.join(base, "train")):
                return Source(name, "dir", base)
        for fname in (f"{name}-jpeg.tar.gz", f"{name}.tar.gz", f"{name}-jpeg.tgz", f"{name}.tgz",
                      f"{name}-jpeg.tar", f"{name}.tar"):
            looked.append(os.path.join(root, fname))
            if os.path.isfile(os.path.join(root, fname)):
                return Source(name, "tar", os.path.join(root, fname))
        if os.path.basename(root.rstrip(os.sep)) == tv_folder:
            root = os.path.dirname(root.rstrip(os.sep))
        looked.append(os.path.join(root, tv_folder, ""))
        if os.path.isdir(os.path.join(root, tv_folder)):
            return Source(name, "torchvision", root)
    tv_home = str(resolve_cache_dir(spec) / "datasets")
    if os.path.isdir(os.path.join(tv_home, tv_folder)):
        return Source(name, "torchvision", tv_home)
    looked.append(os.path.join(tv_home, tv_folder, ""))
    if spec.download:
        return Source(name, "torchvision", root or tv_home, download=True)
    where = (f"{origin} is {root}" if root is not None
             else f"no data root given (--data is unset and ${DATA_ENV} is empty)")
    raise DataError(f"{name} data not found: {where}. Looked for " + "; ".join(looked) + "." + _hint(spec))


def _hint(spec: DataSpec) -> str:
    if spec.dataset == "imagefolder":
        return ""
    return (f"\nTo fix: pass --data DIR pointing at an ImageFolder directory (DIR/train/<class>/*.jpg and "
            f"DIR/test/<class>/*.jpg) or at a .tar.gz of one; or set {DATA_ENV}=DIR; "
            f"or pass --download (needs internet) to let torchvision fetch {spec.dataset}.")


def _has_class_dirs(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            return any(e.is_dir() and not e.name.startswith(".") for e in it)
    except OSError:
        return False


def is_image_path(parts: tuple[str, ...]) -> bool:
    if not parts or not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
        return False
    return not any(p.startswith(".") or p == "__MACOSX" for p in parts)


def walk_images(root: str) -> Iterator[tuple[str, str]]:
    """(posix relative path, full path) of every image under ``root``, sorted."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        rel_dir = os.path.relpath(dirpath, root)
        for fname in sorted(filenames):
            rel = fname if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{fname}"
            if is_image_path(tuple(rel.split("/"))):
                yield rel, os.path.join(dirpath, fname)


class TarFormatError(Exception):
    """The fast tar reader met something it does not handle; the caller retries with tarfile."""


def _open_compressed(path: str):
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:2] == b"\x1f\x8b":
        import gzip
        return gzip.open(path, "rb")
    if magic[:3] == b"BZh":
        import bz2
        return bz2.open(path, "rb")
    if magic == b"\xfd7zXZ\x00":
        import lzma
        return lzma.open(path, "rb")
    return open(path, "rb")


def iter_tar_fast(path: str) -> Iterator[tuple[str, bytes]]:
    """Stream (name, bytes) of the regular files in a (compressed) tar: ustar, GNU long names and
    pax path/size records. About 4x less CPU than tarfile on 60k small members."""
    with _open_compressed(path) as f:
        read = f.read
        pending: dict[str, Any] = {}
        while True:
            hdr = read(512)
            if len(hdr) < 512:
                if hdr.strip(b"\0"):
                    raise TarFormatError("truncated header")
                return
            if hdr == _ZERO_BLOCK:
                return
            stored = hdr[148:156].split(b"\0", 1)[0].strip()
            try:
                ok = int(stored or b"-1", 8) == sum(hdr[:148]) + 256 + sum(hdr[156:])
                sf = hdr[124:136]
                size = (int.from_bytes(sf[1:], "big") if sf[0] & 0x80
                        else int(sf.split(b"\0", 1)[0].strip() or b"0", 8))
            except ValueError:
                ok = False
            if not ok:
                raise TarFormatError("bad header checksum")
            kind = hdr[156:157]
            if kind in (b"0", b"\0", b"7"):
                name = pending.get("path")
                if name is None:
                    raw = hdr[0:100].split(b"\0", 1)[0]
                    if hdr[257:262] == b"ustar":
                        prefix = hdr[345:500].split(b"\0", 1)[0]
                        if prefix:
                            raw = prefix + b"/" + raw
                    name = raw.decode("utf-8", "surrogateescape")
                size = pending.get("size", size)
                pending = {}
                data = read(size)
                if len(data) < size:
                    raise TarFormatError("truncated member")
                read(((size + 511) & ~511) - size)
                yield name, data
            elif kind == b"L":
                pending["path"] = read((size + 511) & ~511)[:size].split(b"\0", 1)[0].decode(
                    "utf-8", "surrogateescape")
            elif kind == b"x":
                buf = read((size + 511) & ~511)[:size]
                pos = 0
                while pos < len(buf):
                    sp = buf.index(b" ", pos)
                    n = int(buf[pos:sp])
                    key, _, value = buf[sp + 1:pos + n - 1].partition(b"=")
                    if key == b"path":
                        pending["path"] = value.decode("utf-8", "surrogateescape")
                    elif key == b"size":
                        pending["size"] = int(value)
                    pos += n
            else:  # directories, links, global pax headers, ...: skip their payload
                read((size + 511) & ~511)
                pending = {}


_ZERO_BLOCK = b"\0" * 512


def iter_tarfile(path: str) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(path, mode="r|*") as tf:
        for member in tf:
            if member.isfile():
                f = tf.extractfile(member)
                if f is not None:
                    yield member.name, f.read()


def iter_tar(path: str, fast: bool = True) -> Iterator[tuple[str, bytes]]:
    """(normalised name, bytes) of the images in a tarball, streamed without extracting."""
    try:
        for name, data in (iter_tar_fast(path) if fast else iter_tarfile(path)):
            parts = tuple(p for p in PurePosixPath(name).parts if p not in ("/", ".."))
            if is_image_path(parts):
                yield "/".join(parts), data
    except TarFormatError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
        raise DataError(f"cannot read tarball {path}: {type(e).__name__}: {e}") from None


def _iter_dir(path: str) -> Iterator[tuple[str, bytes]]:
    for rel, full in walk_images(path):
        try:
            with open(full, "rb") as f:
                yield rel, f.read()
        except OSError as e:
            raise DataError(f"cannot read image {full}: {e}") from None


def _layout(names: list[str], where: str) -> tuple[dict[str, list[tuple[str, int]]], bool]:
    """Assign images to splits and classes.

    Returns ``({"train": [(class, index)], "test": [...]}, has_test)``. A single
    common top-level prefix (``cifar10/``) is skipped; ``train``/``test``/``val``
    folders mark splits, otherwise the top-level folders are the classes.
    """
    paths = [tuple(n.split("/")) for n in names]
    if not paths:
        raise DataError(f"no images found in {where} (looked for files ending in {', '.join(IMAGE_EXTENSIONS)})")
    split_names = set(TRAIN_DIRS) | set(TEST_DIRS)
    k = 0
    while (all(len(p) > k + 2 for p in paths) and len({p[k] for p in paths}) == 1
           and paths[0][k].lower() not in split_names):
        k += 1
    tops = {p[k].lower() for p in paths if len(p) > k + 1}
    prefix = "/".join(paths[0][:k]) + "/" if k else ""
    out: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    if tops & split_names:
        train_dir = next((d for d in TRAIN_DIRS if d in tops), None)
        if train_dir is None:
            raise DataError(f"{where} has {', '.join(sorted(tops & split_names))}/ but no train/ folder; "
                            f"expected {prefix}train/<class>/* (and optionally {prefix}test/<class>/*)")
        test_dir = next((d for d in TEST_DIRS if d in tops), None)
        for i, p in enumerate(paths):
            if len(p) < k + 3:
                continue  # a file directly inside a split folder has no class
            top = p[k].lower()
            if top == train_dir:
                out["train"].append((p[k + 1], i))
            elif top == test_dir:
                out["test"].append((p[k + 1], i))
        has_test = test_dir is not None
    else:
        for i, p in enumerate(paths):
            if len(p) >= k + 2:
                out["train"].append((p[k], i))
        has_test = False
    if not out["train"]:
        raise DataError(f"no class folders with images found in {where}; expected {prefix}train/<class>/*, "
                        f"{prefix}test/<class>/* or <class>/*")
    return out, has_test


def decode_folder(src: Source, size: int) -> dict[str, Split]:
    if src.kind == "tar":
        try:
            names, images = decode_stream(iter_tar(src.path), size)
        except TarFormatError:  # an unusual tar dialect: let tarfile read it
            names, images = decode_stream(iter_tar(src.path, fast=False), size)
    else:
        names, images = decode_stream(_iter_dir(src.path), size)
    assignment, has_test = _layout(names, src.path)
    classes = sorted({c for c, _ in assignment["train"]})
    index = {c: j for j, c in enumerate(classes)}
    unknown = sorted({c for c, _ in assignment["test"]} - set(classes))
    if unknown:
        raise DataError(f"{src.path}: test classes {unknown} have no train folder; "
                        f"the train split has {len(classes)} classes: {classes}")
    splits = {}
    for split in ("train", "test"):
        members = sorted(assignment[split], key=lambda ci: (index[ci[0]], names[ci[1]]))
        x = images.index_select(0, torch.tensor([i for _, i in members], dtype=torch.int64))
        y = torch.tensor([index[c] for c, _ in members], dtype=torch.int64)
        present = split == "train" or has_test
        splits[split] = Split(x=x, y=y, classes=classes, present=present)
    return splits


def decode_torchvision(src: Source, split: str, size: int) -> Split:
    import torchvision

    name = src.dataset
    tv_class = TORCHVISION[name][0]
    cls = getattr(torchvision.datasets, tv_class)
    try:
        if src.download:
            os.makedirs(src.path, exist_ok=True)
        if name == "stl10":
            ds = cls(src.path, split=split, download=src.download)
        else:
            ds = cls(src.path, train=(split == "train"), download=src.download)
    except Exception as e:  # noqa: BLE001 - torchvision raises RuntimeError, URLError, OSError...
        how = ("downloading failed (offline? pass --data DIR pointing at an ImageFolder copy or a .tar.gz "
               "of one instead)" if src.download else
               "the files are missing or corrupt (pass --download to fetch them again, or --data DIR)")
        raise DataError(f"torchvision {tv_class} in {src.path}: {how}: {type(e).__name__}: {e}") from None
    data = np.asarray(ds.data)
    if name == "stl10":
        x = torch.from_numpy(np.ascontiguousarray(data))                      # [N, 3, 96, 96]
        y = torch.as_tensor(np.asarray(ds.labels), dtype=torch.int64)
    else:
        x = torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2)  # [N, 32, 32, 3] -> NCHW
        y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    if tuple(x.shape[-2:]) != (size, size):
        x = torch.cat([fit_image(x[i:i + 512], size) for i in range(0, x.shape[0], 512)])
    return Split(x=x.contiguous(), y=y, classes=[str(c) for c in ds.classes])

