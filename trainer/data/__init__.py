"""Datasets for proxy pretraining: a :class:`DataSpec` in, a :class:`ProxyData` of uint8 tensors out.

A :class:`DataSpec` says *what* to train on; :func:`load_proxy` turns it into a
:class:`ProxyData` of uint8 image tensors ``[N, 3, S, S]`` on the CPU.
:func:`fit_spec` lowers a spec's per-class sizes to what the source's classes really
hold (with a note per change); :meth:`ProxyData.fingerprint` is a content digest of
the loaded subset and :meth:`ProxyData.sizes` its image counts.

The pipeline, one module per stage::

    spec       DataSpec, ProxyData, Split (a full decoded split), resolve_cache_dir
    sources    DataSpec -> Source (folder, tarball, torchvision files); reading it into full Splits
    decode     encoded image bytes -> uint8 [N, 3, S, S] (used by sources)
    cache      each full Split decoded once per image size, kept in the cache directory
    synthetic  generated full Splits (no files)
    subset     full Splits -> the seeded proxy subset (select_subset); fit_spec

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

from ..errors import DataError
from .cache import CACHE_VERSION, decoded_splits
from .sources import IMAGE_EXTENSIONS, TEST_DIRS, TRAIN_DIRS, resolve_source
from .spec import (CACHE_ENV, DATA_ENV, DATASETS, SPLITS, DataSpec, ProxyData, check_image_size, check_seed,
                   resolve_cache_dir)
from .subset import (HELDOUT_FRACTION, MIN_TEST_PER_CLASS, MIN_TRAIN_PER_CLASS, MIN_VAL_PER_CLASS, fit_spec,
                     select_subset)
from .synthetic import SYNTHETIC_CLASSES, SYNTHETIC_TEST, SYNTHETIC_TRAIN, describe_synthetic, synthetic_splits

__all__ = ["DataSpec", "ProxyData", "load_proxy", "fit_spec", "describe", "resolve_cache_dir", "DATASETS",
           "DATA_ENV", "CACHE_ENV", "MIN_TRAIN_PER_CLASS", "MIN_VAL_PER_CLASS", "MIN_TEST_PER_CLASS",
           # constants kept importable from here as before
           "CACHE_VERSION", "IMAGE_EXTENSIONS", "TRAIN_DIRS", "TEST_DIRS", "HELDOUT_FRACTION", "SPLITS",
           "SYNTHETIC_CLASSES", "SYNTHETIC_TRAIN", "SYNTHETIC_TEST"]


def load_proxy(spec: DataSpec, image_size: int, seed: int) -> ProxyData:
    """Load (decoding and caching if needed) the proxy subset described by ``spec``.

    The subset is a deterministic function of ``(spec, image_size, seed)``.
    Raises :class:`DataError` when the data cannot be found or read, or the spec
    asks for more classes or images than the dataset has.
    """
    if not isinstance(spec, DataSpec):
        raise DataError(f"spec must be a DataSpec, got {type(spec).__name__}")
    size = check_image_size(image_size)
    seed = check_seed(seed)
    if spec.dataset == "synthetic":
        train, test = synthetic_splits(spec, size, seed)
        source = describe_synthetic(spec)
    else:
        src = resolve_source(spec)
        train, test = decoded_splits(src, size, resolve_cache_dir(spec))
        source = src.describe()
    proxy = select_subset(spec, train, test, seed)
    proxy.source = source
    return proxy


def describe(spec: DataSpec) -> str:
    """One line saying where ``spec``'s data comes from (does not decode anything)."""
    sizes = (f"proxy {spec.classes or 'all'} classes x {spec.train_per_class or 'all'} train + "
             f"{spec.val_per_class} val + {spec.test_per_class or 'all'} test per class")
    if spec.dataset == "synthetic":
        return f"{describe_synthetic(spec)}; {sizes}"
    try:
        where = resolve_source(spec).describe()
    except DataError as e:
        where = f"{spec.dataset} not found ({str(e).splitlines()[0]})"
    return f"{where}; {sizes}"

