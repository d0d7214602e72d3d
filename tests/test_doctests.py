"""The ``>>>`` examples in the module docstrings run and hold (lightly's convention: a loss or
helper shows its use in its docstring, and that example is a test)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for pkg in ("trainer", "recipe_search", "api") for p in (ROOT / pkg).rglob("*.py")
    if ">>>" in p.read_text())


def test_some_modules_have_examples():
    assert "trainer.precise_bn" in MODULES and "recipe_search.verdict.stats" in MODULES, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
