"""Benchmark only: with this directory on ``PYTHONPATH``, every Python process (the CLI, each Ray
worker) trains in the CPU memory layout from before docs/speed.md section 2 (NCHW, contiguous):
``trainer.device.CHANNELS_LAST["cpu"]`` is set to False when the module is imported. Used by
``bench/bench_search_wall.py`` for a whole search's before/after; then runs any other
``sitecustomize`` this one shadows."""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

TARGET = "trainer.device"


def _patch(module) -> None:
    module.CHANNELS_LAST["cpu"] = False


class _Loader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _patch(module)

    def __getattr__(self, name):
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


if TARGET in sys.modules:
    _patch(sys.modules[TARGET])
else:
    sys.meta_path.insert(0, _Finder())


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_chain()
del _chain
