"""What to load and what comes out: :class:`DataSpec` (the request), :class:`ProxyData` (the
loaded proxy subset), :class:`Split` (one full decoded split of a source, the unit the sources,
the cache and the synthetic generator hand on) and the checks and seeded generators the other
stages share."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError

DATASETS = ("cifar10", "cifar100", "stl10", "imagefolder", "synthetic")
DATA_ENV = "RECIPE_SEARCH_DATA"
CACHE_ENV = "RECIPE_SEARCH_CACHE"

SPLITS = ("train", "val", "test")


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
            value = _integer(key, getattr(self, key), "a non-negative integer")
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


def resolve_cache_dir(spec: DataSpec) -> Path:
    """The decoded-image cache directory: spec.cache_dir, $RECIPE_SEARCH_CACHE, ~/.cache/recipe-search."""
    where = spec.cache_dir or os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "recipe-search")
    return Path(where).expanduser()


def _integer(name: str, value: Any, what: str) -> int:
    """``value`` as an int (int-like objects such as numpy integers included; bools and floats refused)."""
    if isinstance(value, bool):
        raise DataError(f"{name} must be {what}, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise DataError(f"{name} must be {what}, got {value!r}") from None


def check_image_size(image_size: Any) -> int:
    size = _integer("image_size", image_size, "a positive integer")
    if not 1 <= size <= 4096:
        raise DataError(f"image_size must be in [1, 4096], got {size}")
    return size


def check_seed(seed: Any) -> int:
    return _integer("seed", seed, "an integer")


def seeded_generator(seed: int, *tags: Any) -> torch.Generator:
    """A torch.Generator seeded from ``seed`` and ``tags`` (stable across runs and platforms)."""
    digest = hashlib.sha256(json.dumps([seed, *tags]).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


@dataclass
class Split:
    """One full split (train or test) of a source, decoded at one image size."""

    x: torch.Tensor        # uint8 [N, 3, S, S]
    y: torch.Tensor        # int64 [N], indices into classes
    classes: list[str]
    present: bool = True   # False: the source has no such split

