"""trainer.data: sources, decode cache, proxy subset (real CIFAR-10 plus small generated folders)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import trainer.data as data_mod
import trainer.data.cache
import trainer.data.sources
from trainer.data import DATASETS, DataSpec, ProxyData, describe, load_proxy
from trainer.errors import DataError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _small_cifar(tarball: Path, cache_dir: Path, **kw) -> DataSpec:
    fields = dict(classes=10, train_per_class=20, val_per_class=5, test_per_class=10)
    fields.update(kw)
    return DataSpec(dataset="cifar10", root=str(tarball), cache_dir=str(cache_dir), **fields)


def _row_hashes(x: torch.Tensor) -> set[str]:
    return {hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in x}


def _assert_proxy(p: ProxyData, n_classes: int, size: int, train: int, val: int, test: int | None) -> None:
    assert p.num_classes == n_classes == len(p.class_names)
    for x, y, per_class in ((p.train_x, p.train_y, train), (p.val_x, p.val_y, val), (p.test_x, p.test_y, test)):
        assert x.dtype == torch.uint8 and x.device.type == "cpu"
        assert y.dtype == torch.int64
        assert x.dim() == 4 and tuple(x.shape[1:]) == (3, size, size)
        assert y.shape == (x.shape[0],)
        if x.shape[0]:
            assert 0 <= int(y.min()) and int(y.max()) < n_classes
        if per_class is not None:
            assert torch.bincount(y, minlength=n_classes).tolist() == [per_class] * n_classes


# ---------------------------------------------------------------------------
# the real CIFAR-10 tarball
# ---------------------------------------------------------------------------

def test_cifar10_tarball_proxy(cifar10_tarball, cifar_cache_dir):
    spec = _small_cifar(cifar10_tarball, cifar_cache_dir)
    p = load_proxy(spec, image_size=32, seed=0)
    _assert_proxy(p, 10, 32, train=20, val=5, test=10)
    assert p.class_names == CIFAR10_CLASSES
    assert p.image_size == 32
    assert not _row_hashes(p.train_x) & _row_hashes(p.val_x), "train and val overlap"
    assert len(_row_hashes(p.train_x)) == p.train_x.shape[0]
    assert p.train_x.float().std() > 20, "decoded images look blank"
    assert "tarball" in p.source and str(cifar10_tarball) in p.source
    caches = sorted(f.name for f in cifar_cache_dir.glob("*.pt"))
    assert len(caches) == 2 and any("-train-32px-" in c for c in caches) and any("-test-32px-" in c for c in caches)
    # the full splits are cached: 50k train and 10k test images
    train_cache = next(f for f in cifar_cache_dir.glob("*-train-32px-*.pt"))
    blob = torch.load(train_cache, weights_only=True, mmap=True)
    assert tuple(blob["x"].shape) == (50000, 3, 32, 32) and blob["classes"] == CIFAR10_CLASSES


def test_cifar10_deterministic_and_cache_reused(cifar10_tarball, cifar_cache_dir, monkeypatch):
    spec = _small_cifar(cifar10_tarball, cifar_cache_dir)
    a = load_proxy(spec, image_size=32, seed=0)  # decodes, unless the previous test already did
    stamps = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in cifar_cache_dir.glob("*.pt")}
    assert len(stamps) == 2

    def no_decode(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(trainer.data.cache, "decode_folder", no_decode)
    b = load_proxy(spec, image_size=32, seed=0)
    c = load_proxy(spec, image_size=32, seed=1)
    assert {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in cifar_cache_dir.glob("*.pt")} == stamps
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.train_x, c.train_x)
    assert not torch.equal(a.test_x, c.test_x)
    # a subset of classes: labels remapped to 0..k-1, names a seeded choice
    d = load_proxy(_small_cifar(cifar10_tarball, cifar_cache_dir, classes=3), image_size=32, seed=5)
    _assert_proxy(d, 3, 32, train=20, val=5, test=10)
    assert set(d.class_names) < set(CIFAR10_CLASSES) and d.class_names == sorted(d.class_names)


def test_cifar10_limits(cifar10_tarball, cifar_cache_dir):
    with pytest.raises(DataError, match=r"classes=11.*1\.\.10"):
        load_proxy(_small_cifar(cifar10_tarball, cifar_cache_dir, classes=11), 32, 0)
    with pytest.raises(DataError, match=r"train_per_class=5000.*at most 4995"):
        load_proxy(_small_cifar(cifar10_tarball, cifar_cache_dir, train_per_class=5000), 32, 0)
    with pytest.raises(DataError, match=r"val_per_class=5001.*at most 5000"):
        load_proxy(_small_cifar(cifar10_tarball, cifar_cache_dir, val_per_class=5001), 32, 0)
    with pytest.raises(DataError, match=r"test_per_class=1001.*at most 1000"):
        load_proxy(_small_cifar(cifar10_tarball, cifar_cache_dir, test_per_class=1001), 32, 0)
    p = load_proxy(_small_cifar(cifar10_tarball, cifar_cache_dir, classes=2, test_per_class=0), 32, 0)
    _assert_proxy(p, 2, 32, train=20, val=5, test=1000)  # 0 = the whole test split


def test_cifar10_root_resolution(cifar10_tarball, tmp_cache, tmp_path, monkeypatch):
    monkeypatch.delenv("RECIPE_SEARCH_DATA", raising=False)
    # a directory holding the tarball
    assert f"tarball {cifar10_tarball}" in describe(DataSpec(root=str(cifar10_tarball.parent)))
    # $RECIPE_SEARCH_DATA when --data is not given
    monkeypatch.setenv("RECIPE_SEARCH_DATA", str(cifar10_tarball))
    assert f"tarball {cifar10_tarball}" in describe(DataSpec())
    monkeypatch.delenv("RECIPE_SEARCH_DATA")
    # torchvision's own layout
    (tmp_path / "tv" / "cifar-10-batches-py").mkdir(parents=True)
    assert "torchvision CIFAR10" in describe(DataSpec(root=str(tmp_path / "tv")))
    with pytest.raises(DataError, match="missing or corrupt.*--download"):  # an empty torchvision folder
        load_proxy(DataSpec(root=str(tmp_path / "tv")), 32, 0)
    # nothing local but --download: torchvision downloads into the cache dir
    line = describe(DataSpec(download=True))
    assert "download into" in line and str(tmp_cache) in line


class _FakeCIFAR:
    """Stands in for torchvision.datasets.CIFAR10 (no files, no network)."""
    classes = ["ant", "bee", "cow"]
    calls: list = []

    def __init__(self, root, train=True, download=False):
        self.calls.append((root, train, download))
        n = 15 if train else 6
        self.data = np.random.default_rng(int(train)).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        self.targets = [i % 3 for i in range(n)]


class _FakeSTL10:
    classes = ["p", "q"]

    def __init__(self, root, split="train", download=False):
        n = 8 if split == "train" else 4
        self.data = np.random.default_rng(len(split)).integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        self.labels = np.arange(n) % 2


def test_torchvision_sources(tmp_path, tmp_cache, monkeypatch):
    import torchvision

    monkeypatch.delenv("RECIPE_SEARCH_DATA", raising=False)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _FakeCIFAR)
    monkeypatch.setattr(torchvision.datasets, "STL10", _FakeSTL10)
    _FakeCIFAR.calls = []
    spec = DataSpec(download=True, classes=0, train_per_class=3, val_per_class=2, test_per_class=2)
    p = load_proxy(spec, 32, 0)
    assert _FakeCIFAR.calls == [(str(tmp_cache / "datasets"), True, True), (str(tmp_cache / "datasets"), False, True)]
    _assert_proxy(p, 3, 32, train=3, val=2, test=2)
    assert p.class_names == _FakeCIFAR.classes and "torchvision CIFAR10" in p.source
    raw = _FakeCIFAR(None, train=True).data
    assert _row_hashes(p.train_x) <= _row_hashes(torch.from_numpy(raw).permute(0, 3, 1, 2).contiguous())
    small = load_proxy(spec, 16, 0)  # resized from 32 px
    assert small.train_x.shape == (9, 3, 16, 16)
    _FakeCIFAR.calls = []
    load_proxy(spec, 32, 1)
    assert _FakeCIFAR.calls == []  # cached
    (tmp_path / "stl" / "stl10_binary").mkdir(parents=True)
    s = load_proxy(DataSpec(dataset="stl10", root=str(tmp_path / "stl"), classes=2, train_per_class=2,
                            val_per_class=1, test_per_class=2), 96, 0)
    _assert_proxy(s, 2, 96, train=2, val=1, test=2)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

def test_missing_data_says_how_to_get_it(tmp_cache, tmp_path, monkeypatch):
    monkeypatch.delenv("RECIPE_SEARCH_DATA", raising=False)
    with pytest.raises(DataError) as e:
        load_proxy(DataSpec(dataset="cifar10"), 32, 0)
    msg = str(e.value)
    assert "--data" in msg and "RECIPE_SEARCH_DATA" in msg and "--download" in msg
    assert "cifar-10-batches-py" in msg  # says what it looked for
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="--data") as e:
        load_proxy(DataSpec(dataset="cifar100", root=str(empty)), 32, 0)
    assert str(empty) in str(e.value)
    with pytest.raises(DataError, match="does not exist"):
        load_proxy(DataSpec(root=str(tmp_path / "nope")), 32, 0)
    with pytest.raises(DataError, match="needs a root"):
        load_proxy(DataSpec(dataset="imagefolder"), 32, 0)
    assert "not found" in describe(DataSpec(dataset="stl10"))


def test_unknown_dataset_and_bad_fields():
    with pytest.raises(DataError) as e:
        DataSpec(dataset="imagenet")
    assert all(name in str(e.value) for name in DATASETS)
    assert DataSpec(dataset="CIFAR-10").dataset == "cifar10"
    for field in ("classes", "train_per_class", "val_per_class", "test_per_class"):
        with pytest.raises(DataError, match=field):
            DataSpec(**{field: -1})
        with pytest.raises(DataError, match=field):
            DataSpec(**{field: 1.5})
    with pytest.raises(DataError, match="image_size"):
        load_proxy(DataSpec(dataset="synthetic"), 0, 0)


# ---------------------------------------------------------------------------
# ImageFolder directories and tarballs
# ---------------------------------------------------------------------------

SIZES = [(40, 40), (48, 24), (20, 30), (32, 32), (64, 48), (17, 17)]


def _image(cls: int, i: int, size: tuple[int, int]) -> Image.Image:
    """A unique image: class colour plus per-image noise."""
    rng = np.random.default_rng(1000 * cls + i)
    w, h = size
    base = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]][cls % 3], dtype=np.float64)
    arr = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _make_folder(root: Path, classes=("cat", "dog", "eel"), train=6, test=3, test_dir="test") -> Path:
    for split, n in (("train", train), (test_dir, test)):
        if not n:
            continue
        for c, name in enumerate(classes):
            d = root / split / name if split else root / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = _image(c, i + (100 if split != "train" else 0), SIZES[i % len(SIZES)])
                if i % 2:
                    img.save(d / f"{i:03d}.png")
                else:
                    img.save(d / f"{i:03d}.jpg", quality=95)
    (root / "README.txt").write_text("not an image")
    return root


def _tar(src: Path, dest: Path, prefix: str, fmt=tarfile.PAX_FORMAT) -> Path:
    with tarfile.open(dest, "w:gz", format=fmt) as tf:
        tf.add(src, arcname=prefix)
    return dest


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _make_folder(tmp_path_factory.mktemp("imagefolder") / "toy")


def test_imagefolder_with_test_split(folder, tmp_cache):
    spec = DataSpec(dataset="imagefolder", root=str(folder), classes=0, train_per_class=4, val_per_class=2,
                    test_per_class=0)
    p = load_proxy(spec, image_size=16, seed=0)
    _assert_proxy(p, 3, 16, train=4, val=2, test=3)
    assert p.class_names == ["cat", "dog", "eel"]
    assert "directory" in p.source
    assert not _row_hashes(p.train_x) & _row_hashes(p.val_x)
    # class colours survive decoding, center-cropping and resizing
    for x, y in ((p.train_x, p.train_y), (p.test_x, p.test_y)):
        dominant = x.float().mean(dim=(2, 3)).argmax(dim=1)
        assert torch.equal(dominant, y)
    assert len(list(tmp_cache.glob("*-16px-*.pt"))) == 2
    q = load_proxy(spec, image_size=16, seed=0)
    assert torch.equal(p.train_x, q.train_x) and torch.equal(p.test_y, q.test_y)


def test_imagefolder_center_crops_non_square(tmp_path, tmp_cache):
    # a wide image: red sides, green centre square -> after the crop only green remains
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, :, 0] = 255
    arr[:, 20:40] = (0, 255, 0)
    for split in ("train", "test"):
        d = tmp_path / "wide" / split / "only"
        d.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(arr).save(d / f"{i}.png")
    spec = DataSpec(dataset="imagefolder", root=str(tmp_path / "wide"), classes=1, train_per_class=2,
                    val_per_class=1, test_per_class=1)
    p = load_proxy(spec, image_size=8, seed=0)
    assert p.train_x[:, 0].max() <= 2 and p.train_x[:, 1].min() >= 250


def test_imagefolder_without_test_split(tmp_path, tmp_cache):
    root = tmp_path / "flat"
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(10):
            _image(c, i, SIZES[i % len(SIZES)]).save(root / name / f"{i}.png")
    spec = DataSpec(dataset="imagefolder", root=str(root), classes=0, train_per_class=0, val_per_class=2,
                    test_per_class=0)
    p = load_proxy(spec, image_size=16, seed=0)
    _assert_proxy(p, 2, 16, train=6, val=2, test=2)  # 20% of each class held out as the test split
    parts = [_row_hashes(x) for x in (p.train_x, p.val_x, p.test_x)]
    assert sum(map(len, parts)) == 20 and len(set().union(*parts)) == 20  # disjoint, nothing lost
    again = load_proxy(spec, image_size=16, seed=0)
    other = load_proxy(spec, image_size=16, seed=3)
    assert torch.equal(p.test_x, again.test_x)
    assert not torch.equal(p.test_x, other.test_x)
    with pytest.raises(DataError, match=r"train_per_class=7.*at most 6"):
        load_proxy(DataSpec(dataset="imagefolder", root=str(root), classes=0, train_per_class=7,
                            val_per_class=2, test_per_class=0), 16, 0)


def test_imagefolder_val_dir_counts_as_test(tmp_path, tmp_cache):
    root = _make_folder(tmp_path / "withval", classes=("x", "y"), train=4, test=2, test_dir="val")
    p = load_proxy(DataSpec(dataset="imagefolder", root=str(root), classes=0, train_per_class=3,
                            val_per_class=1, test_per_class=0), 16, 0)
    _assert_proxy(p, 2, 16, train=3, val=1, test=2)


def test_imagefolder_tarball_matches_directory(folder, tmp_path, tmp_cache):
    tgz = _tar(folder, tmp_path / "toy.tar.gz", prefix="toy")
    kw = dict(dataset="imagefolder", classes=2, train_per_class=3, val_per_class=2, test_per_class=2)
    from_dir = load_proxy(DataSpec(root=str(folder), **kw), 16, 7)
    from_tar = load_proxy(DataSpec(root=str(tgz), **kw), 16, 7)
    assert "tarball" in from_tar.source
    assert from_tar.class_names == from_dir.class_names
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(from_dir, name), getattr(from_tar, name)), name
    # a named dataset accepts a tarball root too
    p = load_proxy(DataSpec(dataset="cifar10", root=str(tgz), classes=0, train_per_class=1,
                            val_per_class=1, test_per_class=1), 16, 0)
    assert p.class_names == ["cat", "dog", "eel"]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_fast_tar_reader_matches_tarfile(tmp_path, fmt):
    deep = "d" * 60 + "/" + "e" * 60 if fmt != tarfile.USTAR_FORMAT else "short"
    names = [f"top/train/{deep}/img{i}.jpg" for i in range(3)] + ["top/test/c/üñí.png", "top/x.txt"]
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w", format=fmt) as tf:
        for i, name in enumerate(names):
            payload = bytes([i]) * (100 + 700 * i)
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
        link = tarfile.TarInfo("top/link.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = names[0]
        tf.addfile(link)
    fast = list(trainer.data.sources.iter_tar(str(path)))
    slow = list(trainer.data.sources.iter_tar(str(path), fast=False))
    assert fast == slow and len(fast) == 4


def test_bad_image_and_bad_tarball(tmp_path, tmp_cache):
    root = _make_folder(tmp_path / "bad", classes=("a",), train=2, test=1)
    (root / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        load_proxy(DataSpec(dataset="imagefolder", root=str(root), classes=0, train_per_class=1,
                            val_per_class=0, test_per_class=1), 16, 0)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="junk.tar.gz"):
        load_proxy(DataSpec(dataset="imagefolder", root=str(junk)), 16, 0)
    empty = tmp_path / "no-images"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here")
    with pytest.raises(DataError, match="no images"):
        load_proxy(DataSpec(dataset="imagefolder", root=str(empty)), 16, 0)


def test_corrupt_cache_is_rebuilt(folder, tmp_cache):
    spec = DataSpec(dataset="imagefolder", root=str(folder), classes=0, train_per_class=3, val_per_class=1,
                    test_per_class=2)
    ref = load_proxy(spec, 16, 0)
    caches = sorted(tmp_cache.glob("*.pt"))
    assert len(caches) == 2
    good_size = caches[0].stat().st_size
    caches[0].write_bytes(b"garbage, e.g. a disk error")
    caches[1].write_bytes(caches[1].read_bytes()[: caches[1].stat().st_size // 2])  # truncated
    with pytest.warns(RuntimeWarning, match="corrupt"):
        again = load_proxy(spec, 16, 0)
    assert caches[0].stat().st_size == good_size
    assert torch.equal(ref.train_x, again.train_x) and torch.equal(ref.test_x, again.test_x)
    assert not list(tmp_cache.glob(".tmp-*")), "temp files left behind"


def test_unwritable_cache_still_loads(folder, tmp_path, monkeypatch):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    spec = DataSpec(dataset="imagefolder", root=str(folder), classes=1, train_per_class=1, val_per_class=1,
                    test_per_class=1, cache_dir=str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="could not write"):
        p = load_proxy(spec, 16, 0)
    assert p.train_x.shape == (1, 3, 16, 16)


# ---------------------------------------------------------------------------
# synthetic data and ProxyData
# ---------------------------------------------------------------------------

def test_synthetic_shapes_determinism_learnable():
    spec = DataSpec(dataset="synthetic", classes=6, train_per_class=30, val_per_class=5, test_per_class=20)
    a = load_proxy(spec, image_size=24, seed=0)
    _assert_proxy(a, 6, 24, train=30, val=5, test=20)
    b = load_proxy(spec, image_size=24, seed=0)
    c = load_proxy(spec, image_size=24, seed=1)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert not torch.equal(a.train_x, c.train_x)
    assert not _row_hashes(a.train_x) & _row_hashes(a.val_x)
    # learnable: nearest class mean on raw pixels already separates the classes
    feats = lambda x: x.float().flatten(1) / 255  # noqa: E731
    means = torch.stack([feats(a.train_x)[a.train_y == k].mean(0) for k in range(6)])
    pred = torch.cdist(feats(a.test_x), means).argmin(1)
    assert (pred == a.test_y).float().mean() > 0.6
    d = load_proxy(DataSpec(dataset="synthetic", classes=0, train_per_class=0, val_per_class=0,
                            test_per_class=0), image_size=8, seed=0)
    assert d.num_classes == 10 and d.val_x.shape == (0, 3, 8, 8)
    assert "synthetic" in describe(spec)


def test_proxydata_to_and_repr():
    p = load_proxy(DataSpec(dataset="synthetic", classes=2, train_per_class=3, val_per_class=1,
                            test_per_class=2), image_size=8, seed=0)
    q = p.to("cpu")
    assert q is not p and q.class_names == p.class_names and q.class_names is not p.class_names
    assert torch.equal(q.train_x, p.train_x) and q.num_classes == 2
    assert "classes=2" in repr(p) and "tensor(" not in repr(p)
    if torch.cuda.is_available():
        g = p.to("cuda")
        assert g.train_x.is_cuda and g.test_y.is_cuda and not p.train_x.is_cuda


# ---------------------------------------------------------------------------
# fit_spec: per-class sizes lowered to what the classes hold
# ---------------------------------------------------------------------------

def _counted_folder(root: Path, train: dict[str, int], test: dict[str, int] | None) -> Path:
    """root/{train,test}/<class>/*.png with the given counts per class (root/<class>/* when test is None)."""
    for split, counts in (("train", train), ("test", test)):
        for c, (name, n) in enumerate((counts or {}).items()):
            d = root / split / name if test is not None else root / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _image(c, i + (500 if split == "test" else 0), (8, 8)).save(d / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def uneven(tmp_path_factory) -> Path:
    """Classes '3', '5', '7': class '5' has 20 train images, class '7' has 27 test images."""
    return _counted_folder(tmp_path_factory.mktemp("uneven") / "uneven", {"3": 40, "5": 20, "7": 40},
                           {"3": 50, "5": 50, "7": 27})


def test_fit_spec_lowers_test_per_class_to_the_smallest_class(uneven, tmp_cache):
    spec = DataSpec(dataset="imagefolder", root=str(uneven), classes=0, train_per_class=10, val_per_class=5,
                    test_per_class=50)
    with pytest.raises(DataError, match="test_per_class=50 but class '7' has only 27 test images"):
        load_proxy(spec, 8, 0)
    fitted, notes = data_mod.fit_spec(spec, 8, 0)
    assert notes == ["test_per_class 50 -> 27: class '7' has 27 test images"]
    assert fitted == DataSpec(dataset="imagefolder", root=str(uneven), classes=0, train_per_class=10,
                              val_per_class=5, test_per_class=27)
    p = load_proxy(fitted, 8, 0)
    assert p.sizes() == {"classes": 3, "train": 30, "val": 15, "test": 81, "train_per_class": 10,
                         "val_per_class": 5, "test_per_class": 27}
    assert data_mod.fit_spec(fitted, 8, 0) == (fitted, [])  # fits now
    assert data_mod.fit_spec(spec, 8, 0)[0] is not spec


def test_fit_spec_lowers_train_then_val_and_leaves_a_fitting_spec_alone(uneven, tmp_cache):
    base = dict(dataset="imagefolder", root=str(uneven), classes=0)
    fits = DataSpec(**base, train_per_class=15, val_per_class=5, test_per_class=27)
    assert data_mod.fit_spec(fits, 8, 0)[0] is fits and data_mod.fit_spec(fits, 8, 0)[1] == []
    # val keeps its size while train can keep its minimum: train takes what is left
    fitted, notes = data_mod.fit_spec(DataSpec(**base, train_per_class=30, val_per_class=5, test_per_class=0), 8, 0)
    assert (fitted.train_per_class, fitted.val_per_class, fitted.test_per_class) == (15, 5, 0)
    assert notes == ["train_per_class 30 -> 15: class '5' has 20 train-split images, 5 of them taken by "
                     "val_per_class"]
    # val would leave train fewer than its minimum: val shrinks to its share too
    fitted, notes = data_mod.fit_spec(DataSpec(**base, train_per_class=30, val_per_class=15, test_per_class=2),
                                      8, 0)
    assert (fitted.train_per_class, fitted.val_per_class) == (14, 6)
    assert [n.split(":")[0] for n in notes] == ["val_per_class 15 -> 6", "train_per_class 30 -> 14"]
    assert all("class '5'" in n for n in notes)
    p = load_proxy(fitted, 8, 0)
    assert (p.sizes()["train_per_class"], p.sizes()["val_per_class"]) == (14, 6)
    # synthetic data is generated to size: always fits
    synthetic = DataSpec(dataset="synthetic", classes=3, train_per_class=500, val_per_class=50, test_per_class=100)
    assert data_mod.fit_spec(synthetic, 8, 0) == (synthetic, [])


def test_fit_spec_below_the_minimum_names_the_field_and_the_class(tmp_path, tmp_cache):
    assert (data_mod.MIN_TRAIN_PER_CLASS, data_mod.MIN_VAL_PER_CLASS, data_mod.MIN_TEST_PER_CLASS) == (8, 2, 2)
    few = _counted_folder(tmp_path / "few", {"a": 20, "b": 5}, {"a": 3, "b": 1})
    spec = DataSpec(dataset="imagefolder", root=str(few), classes=0, train_per_class=10, val_per_class=2,
                    test_per_class=3)
    with pytest.raises(DataError, match=r"train_per_class: class 'b' has only 5 train-split images.*minimum 8"):
        data_mod.fit_spec(spec, 8, 0)
    with pytest.raises(DataError, match=r"test_per_class: class 'b' has only 1 test images.*minimum 2"):
        data_mod.fit_spec(DataSpec(dataset="imagefolder", root=str(few), classes=0, train_per_class=3,
                                   val_per_class=1, test_per_class=3), 8, 0)
    tight = _counted_folder(tmp_path / "tight", {"a": 20, "b": 9}, {"a": 3, "b": 3})
    with pytest.raises(DataError, match=r"val_per_class: class 'b' has only 9 train-split images.*minimum 2"):
        data_mod.fit_spec(DataSpec(dataset="imagefolder", root=str(tight), classes=0, train_per_class=10,
                                   val_per_class=4, test_per_class=3), 8, 0)


def test_fit_spec_without_a_test_split_counts_the_held_out_share(tmp_path, tmp_cache):
    flat = _counted_folder(tmp_path / "flat", {"x": 10, "y": 40}, None)  # x: 2 held out for test, 8 train
    spec = DataSpec(dataset="imagefolder", root=str(flat), classes=0, train_per_class=20, val_per_class=0,
                    test_per_class=5)
    fitted, notes = data_mod.fit_spec(spec, 8, 0)
    assert (fitted.train_per_class, fitted.val_per_class, fitted.test_per_class) == (8, 0, 2)
    assert notes == ["train_per_class 20 -> 8: class 'x' has 8 train-split (after holding out the test share) "
                     "images, 0 of them taken by val_per_class",
                     "test_per_class 5 -> 2: class 'x' has 2 test images (held out of its train split)"]
    p = load_proxy(fitted, 8, 0)
    assert (p.sizes()["train_per_class"], p.sizes()["test_per_class"]) == (8, 2)
    with pytest.raises(DataError, match=r"val_per_class: class 'x'"):  # 8 train-split images: no room for val
        data_mod.fit_spec(dataclasses.replace(spec, val_per_class=2), 8, 0)


def test_fit_spec_on_real_cifar10(cifar10_tarball, cifar_cache_dir):
    spec = _small_cifar(cifar10_tarball, cifar_cache_dir, train_per_class=5000, test_per_class=1001)
    fitted, notes = data_mod.fit_spec(spec, 32, 0)
    assert (fitted.train_per_class, fitted.val_per_class, fitted.test_per_class) == (4995, 5, 1000)
    assert len(notes) == 2 and notes[1] == "test_per_class 1001 -> 1000: class 'airplane' has 1000 test images"
    small = _small_cifar(cifar10_tarball, cifar_cache_dir)
    assert data_mod.fit_spec(small, 32, 0) == (small, [])


# ---------------------------------------------------------------------------
# ProxyData.fingerprint and sizes
# ---------------------------------------------------------------------------

def test_fingerprint_is_a_stable_content_digest(tmp_path, tmp_cache):
    a = _make_folder(tmp_path / "a", classes=("cat", "dog"), train=4, test=2)
    b = _make_folder(tmp_path / "b", classes=("cat", "dog"), train=4, test=2)
    _image(7, 7, (20, 20)).save(b / "train" / "dog" / "001.png")  # one image differs
    kw = dict(dataset="imagefolder", classes=0, train_per_class=3, val_per_class=1, test_per_class=2)
    pa, pb = load_proxy(DataSpec(root=str(a), **kw), 16, 0), load_proxy(DataSpec(root=str(b), **kw), 16, 0)
    assert pa.class_names == pb.class_names and pa.sizes() == pb.sizes()
    digest = pa.fingerprint()
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert pb.fingerprint() != digest
    again = load_proxy(DataSpec(root=str(a), **kw), 16, 0)
    assert again.fingerprint() == digest == pa.to("cpu").fingerprint()
    tgz = _tar(a, tmp_path / "a.tar.gz", prefix="a")  # same images from a tarball: same digest
    assert load_proxy(DataSpec(root=str(tgz), **kw), 16, 0).fingerprint() == digest
    fields = {f: getattr(pa, f) for f in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
    relabelled = ProxyData(**{**fields, "test_y": 1 - pa.test_y}, class_names=list(pa.class_names))
    renamed = ProxyData(**fields, class_names=["cat", "wolf"])
    assert relabelled.fingerprint() != digest and renamed.fingerprint() != digest
    assert ProxyData(**fields, class_names=list(pa.class_names), source="elsewhere").fingerprint() == digest
    assert pa.fingerprint(splits=("train", "val")) == relabelled.fingerprint(splits=("train", "val"))
    assert load_proxy(DataSpec(root=str(a), **kw), 16, 1).fingerprint() != digest  # another subset


def test_fingerprint_is_the_same_in_another_process():
    import subprocess
    import sys

    code = ("from trainer import DataSpec, load_proxy; print(load_proxy(DataSpec(dataset='synthetic', classes=3, "
            "train_per_class=4, val_per_class=2, test_per_class=2), 8, 0).fingerprint())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    here = load_proxy(DataSpec(dataset="synthetic", classes=3, train_per_class=4, val_per_class=2,
                               test_per_class=2), 8, 0)
    assert out == here.fingerprint()
    assert here.sizes() == {"classes": 3, "train": 12, "val": 6, "test": 6, "train_per_class": 4,
                            "val_per_class": 2, "test_per_class": 2}
