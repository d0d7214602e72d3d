"""Imported by Python at start-up when this directory is on ``PYTHONPATH`` (tests only):
turns on the fault injection of ``rs_faults.py`` when ``$RS_TEST_FAULTS`` or
``$RS_TEST_FAULTS_FILE`` is set, then runs any other ``sitecustomize`` this one shadows."""

import os
import sys

if os.environ.get("RS_TEST_FAULTS") or os.environ.get("RS_TEST_FAULTS_FILE"):
    try:
        import rs_faults

        rs_faults.install()
    except Exception as e:  # noqa: BLE001 - never break the interpreter's start-up
        print(f"tests/faults/sitecustomize.py: fault injection not installed: {e!r}", file=sys.stderr)


def _chain() -> None:
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_chain()
del _chain
