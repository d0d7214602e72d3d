"""Datasets for proxy pretraining: sources, a decoded uint8 cache, the proxy subset.

A :class:`DataSpec` says *what* to train on; :func:`load_proxy` turns it into a
:class:`ProxyData` of uint8 image tensors ``[N, 3, S, S]`` on the CPU.
:func:`fit_spec` lowers a spec's per-class sizes to what the source's classes really
hold (with a note per change); :meth:`ProxyData.fingerprint` is a content digest of
the loaded subset and :meth:`ProxyData.sizes` its image counts.

Sources (``DataSpec.dataset``):

* ``cifar10``, ``cifar100``, ``stl10``: an ImageFolder copy (directory or tarball)
  when ``root`` holds one, else torchvision's files, else a torchvision download
  when ``download=True``.
* ``imagefolder``: ``root/{train,test}/<class>/*`` (``val`` is accepted for
  ``test``), or ``root/<class>/*`` with the test split held out from the seed;
  ``root`` may also be a ``.tar.gz`` / ``.tgz`` / ``.tar`` of such a folder,
  which is streamed, never extracted to disk.
* ``synthetic``: a deterministic, learnable toy set generated from the seed.

Every file-backed split is decoded once per image size into a cache file
(``spec.cache_dir``, else ``$RECIPE_SEARCH_CACHE``, else ``~/.cache/recipe-search``),
written atomically; a corrupt cache file is deleted and rebuilt.

>>> proxy = load_proxy(DataSpec(dataset="synthetic", classes=3, train_per_class=4,
...                             val_per_class=2, test_per_class=2), image_size=16, seed=0)
>>> tuple(proxy.train_x.shape), proxy.train_x.dtype, proxy.num_classes
((12, 3, 16, 16), torch.uint8, 3)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import operator
import os
import re
import tarfile
import tempfile
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError

__all__ = ["DataSpec", "ProxyData", "load_proxy", "fit_spec", "describe", "resolve_cache_dir", "DATASETS",
           "DATA_ENV", "CACHE_ENV", "MIN_TRAIN_PER_CLASS", "MIN_VAL_PER_CLASS", "MIN_TEST_PER_CLASS"]

DATASETS = ("cifar10", "cifar100", "stl10", "imagefolder", "synthetic")
DATA_ENV = "RECIPE_SEARCH_DATA"
CACHE_ENV = "RECIPE_SEARCH_CACHE"

CACHE_VERSION = 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
TRAIN_DIRS = ("train", "training")
TEST_DIRS = ("test", "val", "valid", "validation")  # in order of preference
HELDOUT_FRACTION = 0.2       # test share of each class when a folder has no test split
SYNTHETIC_CLASSES = 10       # synthetic classes when DataSpec.classes == 0
SYNTHETIC_TRAIN = 100        # synthetic train images per class when train_per_class == 0
SYNTHETIC_TEST = 50          # synthetic test images per class when test_per_class == 0
MIN_TRAIN_PER_CLASS = 8      # fit_spec never lowers a per-class size below these
MIN_VAL_PER_CLASS = 2
MIN_TEST_PER_CLASS = 2
SPLITS = ("train", "val", "test")
_DECODE_CHUNK = 1024

# torchvision datasets: class name, folder its files live in, native image size
_TORCHVISION = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", 32),
    "cifar100": ("CIFAR100", "cifar-100-python", 32),
    "stl10": ("STL10", "stl10_binary", 96),
}


# ---------------------------------------------------------------------------
# public types
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DataSpec:
    """What to pretrain on and how big the proxy subset is."""

    dataset: str = "cifar10"      # cifar10 | cifar100 | stl10 | imagefolder | synthetic
    root: str | None = None       # --data; falls back to $RECIPE_SEARCH_DATA
    classes: int = 10             # proxy classes, 0 = all
    train_per_class: int = 500    # pretraining + probe-train images per class, 0 = all
    val_per_class: int = 50       # held out of the train split for the kNN monitor
    test_per_class: int = 100     # test-split images per class for the probe, 0 = all
    cache_dir: str | None = None  # falls back to $RECIPE_SEARCH_CACHE, then ~/.cache/recipe-search
    download: bool = False        # let torchvision download when online

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str):
            raise DataError(f"dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}")
        name = self.dataset.strip().lower().replace("-", "").replace("_", "")
        if name not in DATASETS:
            raise DataError(f"unknown dataset {self.dataset!r}: dataset must be one of {', '.join(DATASETS)}")
        object.__setattr__(self, "dataset", name)
        for key in ("root", "cache_dir"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise DataError(f"{key} must be a path or None, got {type(value).__name__}")
            if value is not None:
                value = os.fspath(value)
                object.__setattr__(self, key, value or None)
        for key in ("classes", "train_per_class", "val_per_class", "test_per_class"):
            value = getattr(self, key)
            if isinstance(value, bool):
                raise DataError(f"{key} must be a non-negative integer, got {value!r}")
            try:
                value = operator.index(value)
            except TypeError:
                raise DataError(f"{key} must be a non-negative integer, got {value!r}") from None
            if value < 0:
                raise DataError(f"{key} must be >= 0 (0 = {'none' if key == 'val_per_class' else 'all'}),"
                                f" got {value}")
            object.__setattr__(self, key, value)
        object.__setattr__(self, "download", bool(self.download))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ProxyData:
    """A proxy dataset: uint8 images ``[N, 3, S, S]`` and int64 labels ``0..classes-1``."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list[str]
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def fingerprint(self, splits: tuple[str, ...] = SPLITS) -> str:
        """A sha256 hex digest of the data: the class names, and for each of ``splits`` its
        image shape, its uint8 image bytes and its labels.

        Deterministic across runs, processes and devices; any changed image, label, class
        name or split size changes it.
        """
        h = hashlib.sha256(b"proxydata-v1\0")
        h.update(json.dumps(list(self.class_names)).encode() + b"\0")
        for split in splits:
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r}; expected some of {SPLITS}")
            x = getattr(self, f"{split}_x").detach().to("cpu", torch.uint8).contiguous()
            y = getattr(self, f"{split}_y").detach().to("cpu", torch.int64).contiguous()
            h.update(f"{split}:{tuple(x.shape)}\0".encode())
            h.update(x.numpy().reshape(-1))  # the image bytes, without a copy
            h.update(np.ascontiguousarray(y.numpy(), dtype="<i8").tobytes())
        return h.hexdigest()

    def sizes(self) -> dict[str, int]:
        """Image counts: ``classes``, ``train``/``val``/``test`` totals and the smallest class of each split
        (``train_per_class``, ...)."""
        out: dict[str, int] = {"classes": self.num_classes}
        for split in SPLITS:
            out[split] = int(getattr(self, f"{split}_x").shape[0])
        for split in SPLITS:
            y = getattr(self, f"{split}_y").detach().cpu()
            counts = torch.bincount(y, minlength=self.num_classes)
            out[f"{split}_per_class"] = int(counts.min()) if counts.numel() else 0
        return out

    def to(self, device: str | torch.device, non_blocking: bool = False) -> "ProxyData":
        """A copy with every tensor on ``device`` (``self`` is left where it is)."""
        moved = {name: getattr(self, name).to(device, non_blocking=non_blocking)
                 for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return ProxyData(**moved, class_names=list(self.class_names), source=self.source)

    def __repr__(self) -> str:
        return (f"ProxyData(classes={self.num_classes}, image_size={self.image_size}, "
                f"train={self.train_x.shape[0]}, val={self.val_x.shape[0]}, test={self.test_x.shape[0]}, "
                f"device={self.device}, source={self.source!r})")


# ---------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------

def load_proxy(spec: DataSpec, image_size: int, seed: int) -> ProxyData:
    """Load (decoding and caching if needed) the proxy subset described by ``spec``.

    The subset is a deterministic function of ``(spec, image_size, seed)``.
    Raises :class:`DataError` when the data cannot be found or read, or the spec
    asks for more classes or images than the dataset has.
    """
    if not isinstance(spec, DataSpec):
        raise DataError(f"spec must be a DataSpec, got {type(spec).__name__}")
    size = _check_image_size(image_size)
    seed = _check_seed(seed)
    if spec.dataset == "synthetic":
        train, test = _synthetic_splits(spec, size, seed)
        source = _synthetic_description(spec)
    else:
        src = _resolve(spec)
        train, test = _decoded_splits(src, size, resolve_cache_dir(spec))
        source = src.describe()
    proxy = _select(spec, train, test, seed)
    proxy.source = source
    return proxy


def fit_spec(spec: DataSpec, image_size: int, seed: int) -> tuple[DataSpec, list[str]]:
    """``spec`` with its per-class sizes lowered to what every proxy class of the source really has.

    Looks at the classes ``seed`` picks (as :func:`load_proxy` does; the source is decoded into
    the cache if needed) and returns ``(fitted spec, notes)``, one note per lowered field, e.g.
    ``"test_per_class 50 -> 27: class '7' has 27 test images"``. ``val_per_class`` is held out of
    the train split: when the smallest class cannot hold ``val + train``, ``train_per_class`` is
    lowered first; ``val_per_class`` shrinks too (to its proportional share, at least
    ``MIN_VAL_PER_CLASS``) only when train would otherwise fall below ``MIN_TRAIN_PER_CLASS``.
    A spec that already fits is returned unchanged (the same object) with no notes, so
    ``fit_spec`` never changes a spec :func:`load_proxy` accepts.

    Raises :class:`DataError` naming the field and the class when a lowered size would fall below
    its minimum (``MIN_TRAIN_PER_CLASS``, ``MIN_VAL_PER_CLASS``, ``MIN_TEST_PER_CLASS``), and for
    the errors :func:`load_proxy` raises (missing data, too many classes, ...).
    """
    if not isinstance(spec, DataSpec):
        raise DataError(f"spec must be a DataSpec, got {type(spec).__name__}")
    size = _check_image_size(image_size)
    seed = _check_seed(seed)
    if spec.dataset == "synthetic":  # generated to the requested sizes: it always fits
        if (spec.classes or SYNTHETIC_CLASSES) > 1000:
            raise DataError(f"classes must be in [0, 1000] for the synthetic dataset, got {spec.classes}")
        return spec, []
    train, test = _decoded_splits(_resolve(spec), size, resolve_cache_dir(spec))
    pools = _class_pools(spec, train, test, seed)
    notes: list[str] = []
    changes: dict[str, int] = {}

    c, m = pools.smallest("train")
    name, where = pools.names[c], pools.split_word
    v, t = spec.val_per_class, spec.train_per_class
    if v > m or (t > m - v if t else m - v <= 0):
        if t and m - v >= MIN_TRAIN_PER_CLASS:  # val keeps its size, train takes the rest
            new_v, new_t = v, m - v
        else:  # val gives up its share too, keeping at least its minimum
            share = m * v // max(1, v + (t or m))
            new_v = max(min(v, max(MIN_VAL_PER_CLASS, share), m - MIN_TRAIN_PER_CLASS), 0)
            new_t = min(t, m - new_v)
            if m - new_v < MIN_TRAIN_PER_CLASS:
                raise DataError(
                    f"train_per_class: class {name!r} has only {m} {where} images, fewer than the minimum "
                    f"{MIN_TRAIN_PER_CLASS} train images per class" + (f" plus {min(v, MIN_VAL_PER_CLASS)} for "
                                                                       "val_per_class" if v else "")
                    + f" (train_per_class={t}, val_per_class={v} asked for)")
            if new_v < min(v, MIN_VAL_PER_CLASS):
                raise DataError(
                    f"val_per_class: class {name!r} has only {m} {where} images; after the minimum "
                    f"{MIN_TRAIN_PER_CLASS} train images {m - MIN_TRAIN_PER_CLASS} are left, fewer than the minimum "
                    f"{MIN_VAL_PER_CLASS} val images per class (val_per_class={v} asked for)")
        if new_v != v:
            changes["val_per_class"] = new_v
            notes.append(f"val_per_class {v} -> {new_v}: class {name!r} has {m} {where} images "
                         f"(val is held out of them, leaving {m - new_v} for train)")
        if new_t != t:
            changes["train_per_class"] = new_t
            notes.append(f"train_per_class {t} -> {new_t}: class {name!r} has {m} {where} images, "
                         f"{new_v} of them taken by val_per_class")

    c, mt = pools.smallest("test")
    name, q = pools.names[c], spec.test_per_class
    held = " (held out of its train split)" if pools.heldout else ""
    if q > mt or (q == 0 and sum(pools.test[k].numel() for k in pools.chosen) == 0):
        if mt < MIN_TEST_PER_CLASS:
            raise DataError(f"test_per_class: class {name!r} has only {mt} test images{held}, fewer than the "
                            f"minimum {MIN_TEST_PER_CLASS} test images per class (test_per_class={q} asked for)")
        changes["test_per_class"] = mt
        notes.append(f"test_per_class {q} -> {mt}: class {name!r} has {mt} test images{held}")
    return (dataclasses.replace(spec, **changes) if changes else spec), notes


def describe(spec: DataSpec) -> str:
    """One line saying where ``spec``'s data comes from (does not decode anything)."""
    sizes = (f"proxy {spec.classes or 'all'} classes x {spec.train_per_class or 'all'} train + "
             f"{spec.val_per_class} val + {spec.test_per_class or 'all'} test per class")
    if spec.dataset == "synthetic":
        return f"{_synthetic_description(spec)}; {sizes}"
    try:
        where = _resolve(spec).describe()
    except DataError as e:
        where = f"{spec.dataset} not found ({str(e).splitlines()[0]})"
    return f"{where}; {sizes}"


def resolve_cache_dir(spec: DataSpec) -> Path:
    """The decoded-image cache directory: spec.cache_dir, $RECIPE_SEARCH_CACHE, ~/.cache/recipe-search."""
    where = spec.cache_dir or os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "recipe-search")
    return Path(where).expanduser()


def _check_image_size(image_size: Any) -> int:
    if isinstance(image_size, bool):
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    try:
        size = operator.index(image_size)
    except TypeError:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}") from None
    if not 1 <= size <= 4096:
        raise DataError(f"image_size must be in [1, 4096], got {size}")
    return size


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool):
        raise DataError(f"seed must be an integer, got {seed!r}")
    try:
        return operator.index(seed)
    except TypeError:
        raise DataError(f"seed must be an integer, got {seed!r}") from None


def _generator(seed: int, *tags: Any) -> torch.Generator:
    """A torch.Generator seeded from ``seed`` and ``tags`` (stable across runs and platforms)."""
    digest = hashlib.sha256(json.dumps([seed, *tags]).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


# ---------------------------------------------------------------------------
# a decoded split
# ---------------------------------------------------------------------------

@dataclass
class _Split:
    x: torch.Tensor        # uint8 [N, 3, S, S]
    y: torch.Tensor        # int64 [N], indices into classes
    classes: list[str]
    present: bool = True   # False: the source has no such split


# ---------------------------------------------------------------------------
# source resolution
# ---------------------------------------------------------------------------

@dataclass
class _Source:
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
        return f"{self.dataset}: torchvision {_TORCHVISION[self.dataset][0]} ({how} {self.path})"

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


def _resolve(spec: DataSpec) -> _Source:
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
            return _Source("imagefolder", "tar", root)
        return _Source("imagefolder", "dir", root)

    name = spec.dataset
    tv_folder = _TORCHVISION[name][1]
    looked: list[str] = []
    if root is not None:
        if os.path.isfile(root):
            if _is_tarball(root):
                return _Source(name, "tar", root)
            raise DataError(f"{origin} {root} is a file but not a tarball (.tar.gz, .tgz, .tar)" + _hint(spec))
        for sub in (name, f"{name}-jpeg", ""):
            base = os.path.join(root, sub) if sub else root
            looked.append(os.path.join(base, "train", "<class>", ""))
            if _has_class_dirs(os.path.join(base, "train")):
                return _Source(name, "dir", base)
        for fname in (f"{name}-jpeg.tar.gz", f"{name}.tar.gz", f"{name}-jpeg.tgz", f"{name}.tgz",
                      f"{name}-jpeg.tar", f"{name}.tar"):
            looked.append(os.path.join(root, fname))
            if os.path.isfile(os.path.join(root, fname)):
                return _Source(name, "tar", os.path.join(root, fname))
        if os.path.basename(root.rstrip(os.sep)) == tv_folder:
            root = os.path.dirname(root.rstrip(os.sep))
        looked.append(os.path.join(root, tv_folder, ""))
        if os.path.isdir(os.path.join(root, tv_folder)):
            return _Source(name, "torchvision", root)
    tv_home = str(resolve_cache_dir(spec) / "datasets")
    if os.path.isdir(os.path.join(tv_home, tv_folder)):
        return _Source(name, "torchvision", tv_home)
    looked.append(os.path.join(tv_home, tv_folder, ""))
    if spec.download:
        return _Source(name, "torchvision", root or tv_home, download=True)
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


# ---------------------------------------------------------------------------
# decode cache
# ---------------------------------------------------------------------------

def _source_identity(src: _Source) -> dict[str, Any]:
    if src.kind == "torchvision":
        return {"kind": "torchvision", "name": _TORCHVISION[src.dataset][0]}
    if src.kind == "tar":
        st = os.stat(src.path)
        return {"kind": "tar", "path": os.path.abspath(src.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    listing = hashlib.sha256()
    for rel, full in _walk_images(src.path):
        st = os.stat(full)
        listing.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"kind": "dir", "path": os.path.abspath(src.path), "files": listing.hexdigest()}


def _cache_path(cache_dir: Path, src: _Source, identity: dict, split: str, size: int) -> Path:
    key = json.dumps({"v": CACHE_VERSION, "source": identity, "split": split, "size": size}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / f"{src.label()}-{split}-{size}px-{digest}.pt"


def _read_cache(path: Path, size: int) -> _Split | None:
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
        split = _Split(x=blob["x"], y=blob["y"], classes=list(blob["classes"]), present=bool(blob["present"]))
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


def _write_cache(path: Path, split: _Split, source: str) -> None:
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


def _decoded_splits(src: _Source, size: int, cache_dir: Path) -> tuple[_Split, _Split]:
    """The full train and test splits of ``src`` at ``size`` px, from the cache or decoded."""
    identity = _source_identity(src)
    paths = {s: _cache_path(cache_dir, src, identity, s, size) for s in ("train", "test")}
    got = {s: _read_cache(p, size) for s, p in paths.items()}
    missing = [s for s, v in got.items() if v is None]
    if missing:
        if src.kind == "torchvision":
            fresh = {s: _decode_torchvision(src, s, size) for s in missing}
        else:
            fresh = _decode_folder(src, size)
        for s in missing:
            _write_cache(paths[s], fresh[s], src.describe())
            got[s] = fresh[s]
    train, test = got["train"], got["test"]
    if train.classes != test.classes and test.present:
        raise DataError(f"{src.describe()}: train and test class lists differ; delete the cache files "
                        f"{paths['train']} and {paths['test']}")
    return train, test


# ---------------------------------------------------------------------------
# image decoding
# ---------------------------------------------------------------------------

def _fit(img: torch.Tensor, size: int) -> torch.Tensor:
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


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(b: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header, None if ``b`` is not a parseable JPEG."""
    if b[:3] != b"\xff\xd8\xff":
        return None
    i, n = 2, len(b)
    while i + 9 < n:
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            i += 2
            continue
        if marker in _SOF:
            return int.from_bytes(b[i + 5:i + 7], "big"), int.from_bytes(b[i + 7:i + 9], "big")
        i += 2 + int.from_bytes(b[i + 2:i + 4], "big")
    return None


def _pil_fit(im, size: int) -> torch.Tensor:
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


def _decode_pil(data: bytes, name: str, size: int) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG":
                im.draft("RGB", (size, size))  # DCT-domain downscale, never below size
            rgb = im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - PIL raises many types
        raise DataError(f"cannot decode image {name}: {type(e).__name__}: {e}; fix or remove this file") from None
    return _pil_fit(rgb, size)


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


def _decode_many(blobs: list[bytes], names: list[str], size: int) -> torch.Tensor:
    """Decode encoded images to uint8 [n, 3, size, size]: small JPEGs batched via torchvision, the rest via PIL."""
    decoder = _torchvision_jpeg_decoder()
    out: list[torch.Tensor | None] = [None] * len(blobs)
    fast = []
    for i, b in enumerate(blobs):
        hw = _jpeg_size(b) if decoder is not None else None
        if hw is not None and min(hw) < 2 * size:
            fast.append(i)
        else:  # not a JPEG, or big enough that PIL's draft mode decodes it faster
            out[i] = _decode_pil(b, names[i], size)
    if fast:
        try:
            decoded = decoder([blobs[i] for i in fast])
        except Exception:  # noqa: BLE001 - e.g. CMYK or truncated JPEGs: let PIL try each one
            decoded = [None] * len(fast)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, t in zip(fast, decoded):
            if t is None:
                out[i] = _decode_pil(blobs[i], names[i], size)
            elif tuple(t.shape) == (3, size, size):
                out[i] = t
            else:
                out[i] = t
                by_shape.setdefault(tuple(t.shape), []).append(i)
        for shape, group in by_shape.items():
            if len(group) >= 8:  # batched torch resize for a group of same-size images (CIFAR, STL)
                fitted = _fit(torch.stack([out[i] for i in group]), size)  # type: ignore[misc]
                for j, i in enumerate(group):
                    out[i] = fitted[j]
            else:
                from PIL import Image

                for i in group:
                    out[i] = _pil_fit(Image.fromarray(out[i].permute(1, 2, 0).numpy()), size)  # type: ignore[union-attr]
    if not out:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    return torch.stack(out)  # type: ignore[arg-type]


def _is_image_path(parts: tuple[str, ...]) -> bool:
    if not parts or not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
        return False
    return not any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _walk_images(root: str) -> Iterator[tuple[str, str]]:
    """(posix relative path, full path) of every image under ``root``, sorted."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        rel_dir = os.path.relpath(dirpath, root)
        for fname in sorted(filenames):
            rel = fname if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{fname}"
            if _is_image_path(tuple(rel.split("/"))):
                yield rel, os.path.join(dirpath, fname)


class _TarFormatError(Exception):
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


def _iter_tar_fast(path: str) -> Iterator[tuple[str, bytes]]:
    """Stream (name, bytes) of the regular files in a (compressed) tar: ustar, GNU long names and
    pax path/size records. About 4x less CPU than tarfile on 60k small members."""
    with _open_compressed(path) as f:
        read = f.read
        pending: dict[str, Any] = {}
        while True:
            hdr = read(512)
            if len(hdr) < 512:
                if hdr.strip(b"\0"):
                    raise _TarFormatError("truncated header")
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
                raise _TarFormatError("bad header checksum")
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
                    raise _TarFormatError("truncated member")
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


def _iter_tarfile(path: str) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(path, mode="r|*") as tf:
        for member in tf:
            if member.isfile():
                f = tf.extractfile(member)
                if f is not None:
                    yield member.name, f.read()


def _iter_tar(path: str, fast: bool = True) -> Iterator[tuple[str, bytes]]:
    """(normalised name, bytes) of the images in a tarball, streamed without extracting."""
    try:
        for name, data in (_iter_tar_fast(path) if fast else _iter_tarfile(path)):
            parts = tuple(p for p in PurePosixPath(name).parts if p not in ("/", ".."))
            if _is_image_path(parts):
                yield "/".join(parts), data
    except _TarFormatError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
        raise DataError(f"cannot read tarball {path}: {type(e).__name__}: {e}") from None


def _iter_dir(path: str) -> Iterator[tuple[str, bytes]]:
    for rel, full in _walk_images(path):
        try:
            with open(full, "rb") as f:
                yield rel, f.read()
        except OSError as e:
            raise DataError(f"cannot read image {full}: {e}") from None


def _decode_stream(items: Iterable[tuple[str, bytes]], size: int) -> tuple[list[str], torch.Tensor]:
    names: list[str] = []
    images: list[torch.Tensor] = []
    chunk_names: list[str] = []
    chunk: list[bytes] = []
    for name, data in items:
        chunk_names.append(name)
        chunk.append(data)
        if len(chunk) >= _DECODE_CHUNK:
            images.append(_decode_many(chunk, chunk_names, size))
            names.extend(chunk_names)
            chunk, chunk_names = [], []
    if chunk:
        images.append(_decode_many(chunk, chunk_names, size))
        names.extend(chunk_names)
    return names, (torch.cat(images) if images else torch.empty((0, 3, size, size), dtype=torch.uint8))


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


def _decode_folder(src: _Source, size: int) -> dict[str, _Split]:
    if src.kind == "tar":
        try:
            names, images = _decode_stream(_iter_tar(src.path), size)
        except _TarFormatError:  # an unusual tar dialect: let tarfile read it
            names, images = _decode_stream(_iter_tar(src.path, fast=False), size)
    else:
        names, images = _decode_stream(_iter_dir(src.path), size)
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
        splits[split] = _Split(x=x, y=y, classes=classes, present=present)
    return splits


def _decode_torchvision(src: _Source, split: str, size: int) -> _Split:
    import torchvision

    name = src.dataset
    tv_class = _TORCHVISION[name][0]
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
        x = torch.cat([_fit(x[i:i + 512], size) for i in range(0, x.shape[0], 512)])
    return _Split(x=x.contiguous(), y=y, classes=[str(c) for c in ds.classes])


# ---------------------------------------------------------------------------
# synthetic data
# ---------------------------------------------------------------------------

def _synthetic_description(spec: DataSpec) -> str:
    return f"synthetic: generated texture patterns ({spec.classes or SYNTHETIC_CLASSES} classes, no files)"


def _synthetic_class(c: int, n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` images of class ``c``: a class-specific pattern kind, orientation, frequency and colour pair,
    with per-image jitter in pose, phase, colour and pixel noise."""
    kind = c % 4
    theta0 = ((c * 0.6180339887) % 1.0) * (math.pi / 2)   # [0, pi/2): distinct under horizontal flips
    freq0 = 1.5 + ((c * 0.4142135624) % 1.0) * 3.0        # cycles per half image
    palette = torch.Generator().manual_seed(7919 + c)
    fg = torch.rand(3, generator=palette) * 0.7 + 0.3
    bg = (fg + 0.5) % 1.0 * 0.6
    coords = torch.linspace(-1.0, 1.0, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    theta = theta0 + 0.08 * torch.randn(n, 1, 1, generator=gen)
    freq = freq0 * (1 + 0.1 * torch.randn(n, 1, 1, generator=gen))
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=gen)
    cx, cy = (torch.rand(2, n, 1, 1, generator=gen) - 0.5) * 0.6
    u = (xx - cx) * torch.cos(theta) + (yy - cy) * torch.sin(theta)
    v = -(xx - cx) * torch.sin(theta) + (yy - cy) * torch.cos(theta)
    w = 2 * math.pi * freq / 2
    if kind == 0:      # grating
        p = torch.sin(w * u + phase)
    elif kind == 1:    # checkerboard
        p = torch.tanh(4 * torch.sin(w * u + phase) * torch.sin(w * v + phase))
    elif kind == 2:    # rings
        p = torch.sin(w * torch.sqrt(u * u + v * v) * 1.5 + phase)
    else:              # dots
        p = torch.tanh(3 * (torch.cos(w * u + phase) * torch.cos(w * v + phase) - 0.3))
    m = ((p + 1) / 2).unsqueeze(1)                                  # [n, 1, S, S]
    jitter = 1 + 0.1 * torch.randn(n, 3, 1, 1, generator=gen)
    img = (bg.view(1, 3, 1, 1) * (1 - m) + fg.view(1, 3, 1, 1) * m) * jitter
    img = img + 0.06 * torch.randn(n, 3, size, size, generator=gen)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def _synthetic_splits(spec: DataSpec, size: int, seed: int) -> tuple[_Split, _Split]:
    n_classes = spec.classes or SYNTHETIC_CLASSES
    if n_classes > 1000:
        raise DataError(f"classes must be in [0, 1000] for the synthetic dataset, got {n_classes}")
    classes = [f"pattern{c:03d}" for c in range(n_classes)]
    counts = {"train": (spec.train_per_class or SYNTHETIC_TRAIN) + spec.val_per_class,
              "test": spec.test_per_class or SYNTHETIC_TEST}
    splits = []
    for split, n in counts.items():
        xs = [_synthetic_class(c, n, size, _generator(seed, "synthetic", split, c)) for c in range(n_classes)]
        y = torch.arange(n_classes).repeat_interleave(n)
        splits.append(_Split(x=torch.cat(xs), y=y, classes=classes))
    return splits[0], splits[1]


# ---------------------------------------------------------------------------
# proxy subset
# ---------------------------------------------------------------------------

@dataclass
class _Pools:
    """The chosen classes of a proxy subset and the image indices each class can draw from."""

    names: list[str]                  # every class of the source
    chosen: list[int]                 # the proxy's classes (source indices, sorted)
    train: dict[int, torch.Tensor]    # class -> indices into the train split (test share removed)
    test: dict[int, torch.Tensor]     # class -> indices into test_src
    test_src: _Split                  # the test split, or the train split when the test share is held out
    heldout: bool                     # True: the source has no test split

    @property
    def split_word(self) -> str:
        return "train-split (after holding out the test share)" if self.heldout else "train-split"

    def smallest(self, which: str) -> tuple[int, int]:
        """(class, count) of the chosen class with the fewest ``which`` ("train" / "test") images."""
        pools = self.train if which == "train" else self.test
        c = min(self.chosen, key=lambda c: pools[c].numel())
        return c, int(pools[c].numel())


def _class_pools(spec: DataSpec, train: _Split, test: _Split, seed: int) -> _Pools:
    """Pick the proxy classes for ``seed`` and the per-class pools (holding out a seeded test share
    of every class when the source has no test split)."""
    names = train.classes
    n_avail = len(names)
    if spec.classes > n_avail:
        raise DataError(f"classes={spec.classes} but the dataset has only {n_avail} classes; "
                        f"use 1..{n_avail} (or 0 for all)")
    k = spec.classes or n_avail
    perm = torch.randperm(n_avail, generator=_generator(seed, "classes"))
    chosen = sorted(perm[:k].tolist())

    train_pools = _pools(train.y, n_avail)
    if test.present:
        return _Pools(names, chosen, train_pools, _pools(test.y, n_avail), test, heldout=False)
    test_pools = {}
    for c in chosen:  # hold a seeded share of every class out of the train split
        pool = train_pools[c]
        pool = pool[torch.randperm(pool.numel(), generator=_generator(seed, "heldout", names[c]))]
        n_test = int(round(pool.numel() * HELDOUT_FRACTION)) if pool.numel() >= 2 else 0
        n_test = max(n_test, 1) if pool.numel() >= 2 else 0
        test_pools[c] = pool[:n_test].sort().values
        train_pools[c] = pool[n_test:].sort().values
    return _Pools(names, chosen, train_pools, test_pools, train, heldout=True)


def _select(spec: DataSpec, train: _Split, test: _Split, seed: int) -> ProxyData:
    pools = _class_pools(spec, train, test, seed)
    names, chosen, train_pools, test_pools, test_src = (pools.names, pools.chosen, pools.train, pools.test,
                                                        pools.test_src)
    v, t, q = spec.val_per_class, spec.train_per_class, spec.test_per_class
    smallest, m = pools.smallest("train")
    split_word = pools.split_word
    if v > m:
        raise DataError(f"val_per_class={v} but class {names[smallest]!r} has only {m} {split_word} images; "
                        f"use at most {m}")
    if t > m - v or (t == 0 and m - v == 0):
        raise DataError(f"train_per_class={t} but class {names[smallest]!r} has only {m} {split_word} images, "
                        f"{v} of them taken by val_per_class; at most {m - v} available"
                        + ("" if m - v else " (lower val_per_class)"))
    smallest_test, mt = pools.smallest("test")
    if q > mt:
        raise DataError(f"test_per_class={q} but class {names[smallest_test]!r} has only {mt} test images; "
                        f"use at most {mt} (or 0 for all)")

    idx = {"train": [], "val": [], "test": []}
    labels = {"train": [], "val": [], "test": []}
    for new_label, c in enumerate(chosen):
        pool = train_pools[c]
        pool = pool[torch.randperm(pool.numel(), generator=_generator(seed, "train", names[c]))]
        parts = {"val": pool[:v], "train": pool[v:v + t] if t else pool[v:]}
        tpool = test_pools[c]
        tpool = tpool[torch.randperm(tpool.numel(), generator=_generator(seed, "test", names[c]))]
        parts["test"] = tpool[:q] if q else tpool
        for key, sel in parts.items():
            idx[key].append(sel)
            labels[key].append(torch.full((sel.numel(),), new_label, dtype=torch.int64))
    out = {}
    for key in ("train", "val", "test"):
        sel = torch.cat(idx[key])
        lab = torch.cat(labels[key])
        if key == "train":  # mixed class order, so a prefix of train_x is a fair sample
            order = torch.randperm(sel.numel(), generator=_generator(seed, "order"))
            sel, lab = sel[order], lab[order]
        src = test_src if key == "test" else train
        out[f"{key}_x"] = src.x.index_select(0, sel) if sel.numel() else src.x[:0].clone()
        out[f"{key}_y"] = lab
    if out["test_x"].shape[0] == 0:
        raise DataError(f"the test split has no images for the chosen classes {[names[c] for c in chosen]}")
    return ProxyData(**out, class_names=[names[c] for c in chosen])


def _pools(y: torch.Tensor, n_classes: int) -> dict[int, torch.Tensor]:
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y, minlength=n_classes).tolist()
    pools, start = {}, 0
    for c, n in enumerate(counts):
        pools[c] = order[start:start + n]
        start += n
    return pools
