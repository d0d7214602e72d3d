"""Preflight of the Ray nodes a search joins (``--ray-address``): can every node read the data
and see the search's Tune storage?

On a cluster each trial runs on some worker node and

* reads ``--data`` from *its own* filesystem (the path must exist at the same place on every
  node: a shared filesystem, or a copy made by the node's provisioning), then decodes it into
  that node's cache (``$RECIPE_SEARCH_CACHE``, default ``~/.cache/recipe-search``);
* writes its checkpoints to the Tune storage directory (``--storage-path``), which Ray requires
  to be shared by all nodes (NFS, EFS, Lustre, ...): a trial restored on another node, and
  ``--resume`` after a crash, read them from there.

:func:`check_nodes` runs one zero-CPU task pinned to every alive node, before any trial: it
checks that the node sees a probe file the driver has just written into the storage
directory, and loads the proxy data there (which also warms the node's decode cache, so
concurrent trials on a fresh node do not all decode it). Problems come back as one
:class:`~recipe_search.errors.SearchError` naming each node and what it could not do.
A node lost while the driver waits (it leaves the cluster, or Ray loses the task's worker)
is skipped with a note rather than waited on or reported as a problem: its trials run on the
nodes left, and Tune retries any trial it held (``failures.py``).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path

from ..errors import SearchError

PROBE_PREFIX = ".rs-probe-"
POLL_S = 5.0  # how often a waiting preflight asks Ray which nodes are still alive


def _probe_node(probe: str, token: str, spec, image_size: int, seed: int) -> dict:
    """Runs on one node: ``{"host", "problems": [...]}``."""
    problems = []
    try:
        if Path(probe).read_text() != token:
            problems.append(f"sees a different {probe}")
    except OSError as e:
        problems.append(f"cannot read the Tune storage ({type(e).__name__}: {e}); it must be a shared "
                        "filesystem mounted at the same path on every node (--storage-path)")
    if spec is not None:
        from trainer.data import load_proxy
        from trainer.errors import TrainerError

        try:
            load_proxy(spec, image_size, seed)
        except TrainerError as e:
            problems.append(f"cannot load the data: {e}")
    return {"host": socket.gethostname(), "problems": problems}


def check_nodes(ray, storage: Path, spec, image_size: int, seed: int, *, timeout: float = 1800.0,
                poll: float = POLL_S) -> list[str]:
    """Check every alive node of the connected Ray cluster (see the module docstring).

    ``spec`` is the search's :class:`trainer.data.DataSpec` (``None``: nothing to load).
    A node lost while its check runs is skipped with a note (its trials run elsewhere; Tune
    retries any trial it held), never waited on. Returns notes for the user; raises
    :class:`SearchError` listing the nodes that failed, or when no node is left."""
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    if not nodes:
        raise SearchError("the Ray cluster has no alive node with CPUs to run trials on")
    token = secrets.token_hex(16)
    probe = storage / f"{PROBE_PREFIX}{token[:8]}"
    try:
        storage.mkdir(parents=True, exist_ok=True)
        probe.write_text(token)
    except OSError as e:
        raise SearchError(f"the Tune storage {storage} is not writable from this driver "
                          f"({type(e).__name__}: {e}); choose another --storage-path") from None
    try:
        problems, lost = _probe_all(ray, nodes, (str(probe), token, spec, image_size, seed), timeout, poll)
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass
    if problems:
        raise SearchError("the Ray cluster cannot run this search:\n  " + "\n  ".join(problems))
    if len(lost) == len(nodes):
        raise SearchError("every Ray node was lost during the preflight: " + ", ".join(lost))
    what = "read the data and see" if spec is not None else "see"
    notes = [f"{len(nodes) - len(lost)} Ray node(s) checked: each can {what} the Tune storage {storage}"]
    notes += [f"node {name} was lost during the preflight: skipped" for name in lost]
    return notes


def _probe_all(ray, nodes: list[dict], args: tuple, timeout: float, poll: float) -> tuple[list[str], list[str]]:
    """Run the probe on every node: ``(problems, names of the nodes lost meanwhile)``."""
    from ray.exceptions import RayTaskError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(_probe_node)
    refs = {n["NodeManagerAddress"] + f" ({n['NodeID'][:8]})": (n["NodeID"], task.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(*args))
            for n in nodes}
    pending = {ref for _, ref in refs.values()}
    lost: list[str] = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        _, left = ray.wait(list(pending), num_returns=len(pending), timeout=min(poll, timeout))
        pending = set(left)
        gone = _dead_nodes(ray, {node for node, ref in refs.values() if ref in pending})
        for name, (node, ref) in refs.items():
            if ref in pending and node in gone:  # its answer will never come
                ray.cancel(ref, force=True)
                pending.discard(ref)
                lost.append(name)
    problems = []
    for name, (node, ref) in refs.items():
        if name in lost:
            continue
        if ref in pending:
            problems.append(f"node {name}: no answer within {timeout:.0f}s")
            ray.cancel(ref, force=True)
            continue
        try:
            out = ray.get(ref)
        except RayTaskError as e:  # the check itself raised (e.g. the package is missing there)
            problems.append(f"node {name}: the check failed: {type(e).__name__}: {str(e)[:500]}")
            continue
        except Exception as e:  # noqa: BLE001 - Ray lost it: its node or worker died under it
            lost.append(f"{name} ({type(e).__name__})")
            continue
        problems += [f"node {name} [{out['host']}]: {p}" for p in out["problems"]]
    return problems, lost


def _dead_nodes(ray, node_ids: set[str]) -> set[str]:
    """Those of ``node_ids`` that Ray no longer lists as alive."""
    if not node_ids:
        return set()
    alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    return {n for n in node_ids if n not in alive}
