"""Latency of GET /recipes/{backbone} under a fixed request rate, cached vs cold.

Starts the API with uvicorn on loopback (one subprocess per config), loads a
store with a few recipes, and fires GET /recipes/{backbone} (cycling through the
backbones) open-loop at a fixed rate: request i is due at t0 + i/rate whether or
not earlier ones have returned, and its latency counts from that due time, so a
server that falls behind shows it (no coordinated omission). Prints p50/p99 for
the cached config (--ttl, default 2 s) and for a cold one (TTL=0: every request
reads MLflow) side by side, with the cold/cached ratio.

    python bench/bench_api.py                     # 200 req/s, 1000 requests per config
    python bench/bench_api.py --rate 100 --count 500 --tracking-uri sqlite:////path/mlflow.db
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKBONES = ["resnet18", "mobilenetv3_small_100", "efficientnet_b0", "regnetx_002", "ghostnet_100"]


def load_store(uri: str, backbones: list[str]) -> None:
    from recipe_search.store import RecipeStore

    store = RecipeStore(uri)
    for i, b in enumerate(backbones):
        for j, ds in enumerate(("cifar10", "stl10")):
            scores = [0.3 + 0.05 * i + 0.01 * j + d for d in (-0.01, 0.0, 0.01)]
            mean = sum(scores) / len(scores)
            fp = f"{i:08x}{j:08x}"
            verdict = {"verdict": "better_than_baselines", "line": "bench", "metric": "test_probe_top1",
                       "seeds": [0, 1, 2], "winner": "tpe",
                       "score": {"mean": mean, "std": 0.01, "n": 3, "values": scores},
                       "floor": {"mean": 0.1, "std": 0.01, "n": 3, "values": [0.09, 0.1, 0.11]},
                       "baselines": {}, "lift": {"floor": {"mean": mean - 0.1, "low": mean - 0.13,
                                                          "high": mean - 0.07, "n": 3,
                                                          "method": "paired t interval over seeds (95%)"}}}
            store.promote(b, ds, fp, {"backbone": b, "lr": 0.01 * (i + 1), "seed": j},
                          {"test_probe_top1": mean, "test_knn_top1": 0.25 + 0.05 * i},
                          {"search_id": f"bench-{i}", "code_version": "bench", "verdict": verdict,
                           "fingerprint": {"digest": fp, "budget": "small"}},
                          scores=scores, budget="small")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(uri: str, ttl: float, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.server", "--port", str(port), "--tracking-uri", uri,
             "--cache-ttl", str(ttl), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready in 90 s")


async def fire(base: str, backbones: list[str], rate: float, count: int, max_s: float) -> dict:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    lat: list[float] = []
    statuses: dict[int | str, int] = {}
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        for b in backbones:  # warm-up: connections and (for the cached config) the cache
            await client.get(f"/recipes/{b}")

        async def one(i: int, due: float) -> None:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                r = await client.get(f"/recipes/{backbones[i % len(backbones)]}")
                key: int | str = r.status_code
            except httpx.HTTPError as e:
                key = type(e).__name__
            statuses[key] = statuses.get(key, 0) + 1
            lat.append(time.perf_counter() - due)

        t0 = time.perf_counter() + 0.05
        n = min(count, int(rate * max_s))
        tasks = [asyncio.create_task(one(i, t0 + i / rate)) for i in range(n)]
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(round(p * (len(lat) - 1))))] * 1000  # noqa: E731
    return {"requests": len(lat), "achieved_rps": len(lat) / wall, "p50_ms": q(0.50), "p90_ms": q(0.90),
            "p99_ms": q(0.99), "max_ms": lat[-1] * 1000, "mean_ms": statistics.fmean(lat) * 1000,
            "statuses": statuses}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    p.add_argument("--count", type=int, default=1000, help="requests per config (default 1000)")
    p.add_argument("--max-seconds", type=float, default=20.0, help="cap on the firing time per config")
    p.add_argument("--ttl", type=float, default=2.0, help="cache TTL of the cached config (default 2)")
    p.add_argument("--tracking-uri", default=None,
                   help="use this store as is (default: a temporary SQLite store with 5 backbones x 2 datasets)")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        if a.tracking_uri:
            uri = a.tracking_uri
            from recipe_search.store import RecipeStore

            backbones = RecipeStore(uri, create=False).backbones()
            if not backbones:
                raise SystemExit(f"no recipes in {uri}")
        else:
            uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
            os.environ.setdefault("RECIPE_SEARCH_HOME", tmp)
            t = time.perf_counter()
            load_store(uri, BACKBONES)
            backbones = BACKBONES
            print(f"loaded {len(BACKBONES) * 2} recipes into {uri} in {time.perf_counter() - t:.1f} s")
        results = {}
        for name, ttl in ((f"cached (ttl={a.ttl:g}s)", a.ttl), ("cold (ttl=0)", 0.0)):
            proc, base = start(uri, ttl, Path(tmp) / f"server-{ttl}.log")
            try:
                results[name] = asyncio.run(fire(base, backbones, a.rate, a.count, a.max_seconds))
            finally:
                proc.terminate()
                proc.wait(timeout=30)

    names = list(results)
    rows = [("requests", "{:.0f}"), ("achieved_rps", "{:.1f}"), ("p50_ms", "{:.2f}"), ("p90_ms", "{:.2f}"),
            ("p99_ms", "{:.2f}"), ("max_ms", "{:.2f}"), ("mean_ms", "{:.2f}")]
    print(f"\nGET /recipes/{{backbone}} at {a.rate:g} req/s, open loop, latency from the due time "
          f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    print(f"{'':14}" + "".join(f"{n:>22}" for n in names) + f"{'cold / cached':>16}")
    for key, fmt in rows:
        vals = [results[n][key] for n in names]
        ratio = f"{vals[1] / vals[0]:.1f}x" if key.endswith("_ms") and vals[0] > 0 else ""
        print(f"{key:14}" + "".join(f"{fmt.format(v):>22}" for v in vals) + f"{ratio:>16}")
    print(f"{'statuses':14}" + "".join(f"{json.dumps(results[n]['statuses']):>22}" for n in names))
    if a.json:
        print(json.dumps(results, indent=2))
    bad = any(set(r["statuses"]) != {200} for r in results.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
