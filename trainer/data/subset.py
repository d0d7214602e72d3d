"""The proxy subset: which classes and images of the full splits a run trains and evaluates on.

:func:`select_subset` picks the seeded classes and per-class train / val / test images (holding a
seeded test share out of the train split when the source has none); :func:`fit_spec` lowers a
spec's per-class sizes to what those classes hold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..errors import DataError
from .cache import decoded_splits
from .sources import resolve_source
from .spec import DataSpec, ProxyData, Split, check_image_size, check_seed, resolve_cache_dir, seeded_generator
from .synthetic import SYNTHETIC_CLASSES

HELDOUT_FRACTION = 0.2       # test share of each class when a folder has no test split

MIN_TRAIN_PER_CLASS = 8      # fit_spec never lowers a per-class size below these
MIN_VAL_PER_CLASS = 2
MIN_TEST_PER_CLASS = 2


@dataclass
class _Pools:
    """The chosen classes of a proxy subset and the image indices each class can draw from."""

    names: list[str]                  # every class of the source
    chosen: list[int]                 # the proxy's classes (source indices, sorted)
    train: dict[int, torch.Tensor]    # class -> indices into the train split (test share removed)
    test: dict[int, torch.Tensor]     # class -> indices into test_src
    test_src: Split                  # the test split, or the train split when the test share is held out
    heldout: bool                     # True: the source has no test split

    @property
    def split_word(self) -> str:
        return "train-split (after holding out the test share)" if self.heldout else "train-split"

    def smallest(self, which: str) -> tuple[int, int]:
        """(class, count) of the chosen class with the fewest ``which`` ("train" / "test") images."""
        pools = self.train if which == "train" else self.test
        c = min(self.chosen, key=lambda c: pools[c].numel())
        return c, int(pools[c].numel())


def _class_pools(spec: DataSpec, train: Split, test: Split, seed: int) -> _Pools:
    """Pick the proxy classes for ``seed`` and the per-class pools (holding out a seeded test share
    of every class when the source has no test split)."""
    names = train.classes
    n_avail = len(names)
    if spec.classes > n_avail:
        raise DataError(f"classes={spec.classes} but the dataset has only {n_avail} classes; "
                        f"use 1..{n_avail} (or 0 for all)")
    k = spec.classes or n_avail
    perm = torch.randperm(n_avail, generator=seeded_generator(seed, "classes"))
    chosen = sorted(perm[:k].tolist())

    train_pools = _pools(train.y, n_avail)
    if test.present:
        return _Pools(names, chosen, train_pools, _pools(test.y, n_avail), test, heldout=False)
    test_pools = {}
    for c in chosen:  # hold a seeded share of every class out of the train split
        pool = train_pools[c]
        pool = pool[torch.randperm(pool.numel(), generator=seeded_generator(seed, "heldout", names[c]))]
        n_test = int(round(pool.numel() * HELDOUT_FRACTION)) if pool.numel() >= 2 else 0
        n_test = max(n_test, 1) if pool.numel() >= 2 else 0
        test_pools[c] = pool[:n_test].sort().values
        train_pools[c] = pool[n_test:].sort().values
    return _Pools(names, chosen, train_pools, test_pools, train, heldout=True)


def select_subset(spec: DataSpec, train: Split, test: Split, seed: int) -> ProxyData:
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
        pool = pool[torch.randperm(pool.numel(), generator=seeded_generator(seed, "train", names[c]))]
        parts = {"val": pool[:v], "train": pool[v:v + t] if t else pool[v:]}
        tpool = test_pools[c]
        tpool = tpool[torch.randperm(tpool.numel(), generator=seeded_generator(seed, "test", names[c]))]
        parts["test"] = tpool[:q] if q else tpool
        for key, sel in parts.items():
            idx[key].append(sel)
            labels[key].append(torch.full((sel.numel(),), new_label, dtype=torch.int64))
    out = {}
    for key in ("train", "val", "test"):
        sel = torch.cat(idx[key])
        lab = torch.cat(labels[key])
        if key == "train":  # mixed class order, so a prefix of train_x is a fair sample
            order = torch.randperm(sel.numel(), generator=seeded_generator(seed, "order"))
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
    size = check_image_size(image_size)
    seed = check_seed(seed)
    if spec.dataset == "synthetic":  # generated to the requested sizes: it always fits
        if (spec.classes or SYNTHETIC_CLASSES) > 1000:
            raise DataError(f"classes must be in [0, 1000] for the synthetic dataset, got {spec.classes}")
        return spec, []
    train, test = decoded_splits(resolve_source(spec), size, resolve_cache_dir(spec))
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
