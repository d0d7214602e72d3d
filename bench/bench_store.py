"""What it costs to read a promoted recipe: our tag bookkeeping against MLflow's Model Registry.

    python bench/bench_store.py [--backbones 20] [--promotions 3] [--reads 400] [--json out.json]

One SQLite MLflow database in a temp dir holds the same promotions twice: as the recipe
store's tagged runs (``RecipeStore.promote``) and as a Model Registry layout (a registered
model per backbone, one version per promotion, the alias ``fp-<fingerprint>`` on the current
version, the recipe in the version's tags). Reads of a random backbone's current recipe are
then timed in interleaved rounds (the machine is noisy; ratios are measured side by side):

* ``tags, no snapshot`` -- ``search_runs`` on the state tag, every read (the store
  before the snapshot);
* ``tags + snapshot, generation check`` -- ``RecipeStore.get`` when nothing changed and no
  local file can be stat'ed (a remote server): one ``get_experiment`` per read;
* ``tags + snapshot, SQLite stat`` -- the same on a local SQLite file: a ``stat`` per read;
* ``registry alias`` -- ``MlflowClient.get_model_version_by_alias`` (one read per fingerprint;
  the API's "latest of any fingerprint" read would need ``search_model_versions`` on top).

Prints p50/p99 per read in ms and the ratios to the registry read, then one JSON line.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit  # noqa: E402


def _populate(uri: str, backbones: int, promotions: int) -> list[tuple[str, str]]:
    from mlflow import MlflowClient

    from recipe_search import records
    from recipe_search.store import RecipeStore

    import timm

    store, client = RecipeStore(uri), MlflowClient(uri)
    keys = []
    for b, backbone in enumerate(timm.list_models()[:backbones]):
        fp = f"{b:016x}"
        name = f"recipe-{backbone}"
        client.create_registered_model(name, tags={records.TAG_BACKBONE: backbone})
        for p in range(promotions):
            scores = [0.3 + 0.1 * p + d for d in (-0.001, 0.0, 0.001)]
            res = store.promote(backbone, "cifar10", fp, {"backbone": backbone, "lr": 0.01 * (p + 1)},
                                {"test_probe_top1": sum(scores) / 3}, {"verdict": {"verdict": "x"}},
                                scores=scores, val_scores=dict(enumerate(scores)), budget="smoke")
            v = client.create_model_version(name, source=f"runs:/{res.current.run_id}/recipe.json",
                                            run_id=res.current.run_id,
                                            tags={records.TAG_RECIPE: str(res.current.recipe),
                                                  records.TAG_SCORES: str(list(res.current.scores))})
            client.set_registered_model_alias(name, f"fp-{fp}", v.version)
        keys.append((backbone, fp))
    return keys


def _time(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", type=int, default=20)
    ap.add_argument("--promotions", type=int, default=3, help="promotions per backbone (history)")
    ap.add_argument("--reads", type=int, default=400, help="reads per method (in 4 interleaved rounds)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from mlflow import MlflowClient

    from recipe_search.store import RecipeStore

    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    t0 = time.perf_counter()
    keys = _populate(uri, args.backbones, args.promotions)
    print(f"populated {len(keys)} backbones x {args.promotions} promotions in {time.perf_counter() - t0:.1f} s")
    rng = random.Random(0)
    client = MlflowClient(uri)
    fresh = RecipeStore(uri, create=False, snapshot="off")
    remote = RecipeStore(uri, create=False, snapshot="generation")  # as on a server: no file to stat
    local = RecipeStore(uri, create=False)
    methods = {
        "tags, no snapshot": lambda: fresh.get(rng.choice(keys)[0]),
        "tags + snapshot, generation check": lambda: remote.get(rng.choice(keys)[0]),
        "tags + snapshot, SQLite stat": lambda: local.get(rng.choice(keys)[0]),
        "registry alias": lambda: client.get_model_version_by_alias(
            f"recipe-{(k := rng.choice(keys))[0]}", f"fp-{k[1]}").tags,
    }
    for fn in methods.values():  # warm up (connections, the snapshot)
        _time(fn, 5)
    samples = {name: [] for name in methods}
    rounds = 4
    for _ in range(rounds):
        for name, fn in methods.items():
            samples[name] += _time(fn, args.reads // rounds)
    ref = statistics.median(samples["registry alias"])
    result = {"backbones": args.backbones, "promotions": args.promotions, "reads": args.reads, "methods": {}}
    print(f"{'read':38s} {'p50 ms':>8s} {'p99 ms':>8s} {'p50 / registry':>15s}")
    for name, xs in samples.items():
        xs = sorted(xs)
        p50, p99 = statistics.median(xs), xs[min(len(xs) - 1, int(0.99 * len(xs)))]
        result["methods"][name] = {"p50_ms": round(p50, 3), "p99_ms": round(p99, 3), "ratio_p50": round(p50 / ref, 3)}
        print(f"{name:38s} {p50:8.3f} {p99:8.3f} {p50 / ref:15.2f}")
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
