"""Latency of GET /recipes/{backbone} at fixed request rates, cached vs uncached, in one run.

Starts the API with uvicorn on loopback (one subprocess per cache config), loads a
store with a few recipes, and fires GET /recipes/{backbone} (cycling through the
backbones) open-loop at each rate: request i is due at t0 + i/rate whether or not
earlier ones have returned, and its latency counts from that due time, so a server
that falls behind shows it (no coordinated omission). One table puts every cell side
by side -- cached (--ttl, default 2 s) and uncached (TTL=0: every request reads MLflow)
at 200 and 1,000 req/s by default -- with p50, p99, errors (connection failures and
timeouts: requests dropped) and 503s (shed by the server with Retry-After) per cell.

The load generator speaks raw keep-alive HTTP/1.1 over asyncio streams (its CPU cost per
request is in the table), since on 2 shared cores a heavy client would measure itself.
``--impls auto asyncio-h11`` adds the server on the pure-Python event loop and parser that
uvicorn falls back to without uvicorn[standard] (uvloop, httptools), side by side.

    python bench/bench_api.py                              # 200 and 1000 req/s, 5 s per cell
    python bench/bench_api.py --impls auto asyncio-h11     # and on asyncio + h11
    python bench/bench_api.py --rates 100 500 --seconds 10 --tracking-uri sqlite:////path/mlflow.db
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

# the server's event loop and HTTP parser: uvicorn's auto picks (uvloop + httptools with
# uvicorn[standard]) against the pure-Python ones it falls back to without them
IMPLS = {"auto": ("auto", "auto"), "asyncio-h11": ("asyncio", "h11")}
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
                          scores=scores, val_scores=dict(enumerate(scores)), budget="small")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(uri: str, ttl: float, log: Path, max_in_flight: int = 64, impl: str = "auto") -> tuple[subprocess.Popen, str]:
    loop, http = IMPLS[impl]
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.server", "--port", str(port), "--tracking-uri", uri,
             "--cache-ttl", str(ttl), "--log-level", "warning", "--max-in-flight", str(max_in_flight),
             "--loop", loop, "--http", http],
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


class Conn:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for GETs: the load
    generator must cost far less than the server it measures on the same cores (``client CPU``
    in the table says what it cost per request)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> "Conn":
        return cls(*await asyncio.open_connection(host, port))

    async def get(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            raise ConnectionResetError("server closed the connection")
        return status

    def close(self) -> None:
        self.writer.close()


async def fire(base: str, backbones: list[str], rate: float, count: int, max_s: float, conns: int = 64) -> dict:
    host, port = base.removeprefix("http://").split(":")
    requests = [f"GET /recipes/{b} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\r\n".encode()
                for b in backbones]
    lat: list[float] = []
    statuses: dict[int | str, int] = {}
    idle: asyncio.Queue[Conn] = asyncio.Queue()
    opened: list[Conn] = []
    for _ in range(conns):
        c = await Conn.open(host, int(port))
        opened.append(c)
        for req in requests:  # warm-up: connections and (for the cached config) the cache
            await c.get(req)
        idle.put_nowait(c)

    async def one(i: int, due: float) -> None:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = await idle.get()  # waiting for a free connection counts: latency is from the due time
        try:
            key: int | str = await asyncio.wait_for(conn.get(requests[i % len(requests)]), 30)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
            key = type(e).__name__
            conn.close()
            try:
                conn = await Conn.open(host, int(port))
                opened.append(conn)
            except OSError:
                conn = None  # type: ignore[assignment]
        statuses[key] = statuses.get(key, 0) + 1
        lat.append(time.perf_counter() - due)
        if conn is not None:
            idle.put_nowait(conn)

    cpu0 = time.process_time()
    t0 = time.perf_counter() + 0.05
    n = min(count, int(rate * max_s))
    tasks = [asyncio.create_task(one(i, t0 + i / rate)) for i in range(n)]
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    for c in opened:
        c.close()
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(round(p * (len(lat) - 1))))] * 1000  # noqa: E731
    errors = sum(v for k, v in statuses.items() if isinstance(k, str))
    return {"requests": len(lat), "achieved_rps": len(lat) / wall, "p50_ms": q(0.50), "p90_ms": q(0.90),
            "p99_ms": q(0.99), "max_ms": lat[-1] * 1000, "mean_ms": statistics.fmean(lat) * 1000,
            "ok": statuses.get(200, 0), "shed_503": statuses.get(503, 0), "errors": errors,
            "statuses": statuses, "client_cpu_us": cpu / max(1, len(lat)) * 1e6}


def run_loop(coro):
    """``asyncio.run`` on uvloop when it is installed (it is with uvicorn[standard])."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", type=float, nargs="+", default=[200.0, 1000.0],
                   help="requests per second, one cell each (default 200 1000)")
    p.add_argument("--seconds", type=float, default=5.0, help="firing time per cell (default 5)")
    p.add_argument("--count", type=int, default=0, help="requests per cell (default: rate x seconds)")
    p.add_argument("--ttl", type=float, default=2.0, help="cache TTL of the cached config (default 2)")
    p.add_argument("--max-in-flight", type=int, default=64, help="the server's --max-in-flight (default 64)")
    p.add_argument("--tracking-uri", default=None,
                   help="use this store as is (default: a temporary SQLite store with 5 backbones x 2 datasets)")
    p.add_argument("--impls", nargs="+", default=["auto"], choices=list(IMPLS),
                   help="server event loop + parser configs to compare (default: auto only; "
                        "add asyncio-h11 for the pure-Python fallback)")
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections of the load generator")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    return p


def _store(a: argparse.Namespace, tmp: str) -> tuple[str, list[str]]:
    """The store to read (``--tracking-uri`` as is, else a fresh one in ``tmp``) and its backbones."""
    if a.tracking_uri:
        uri = a.tracking_uri
        from recipe_search.store import RecipeStore

        backbones = RecipeStore(uri, create=False).backbones()
        if not backbones:
            raise SystemExit(f"no recipes in {uri}")
        return uri, backbones
    uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
    os.environ.setdefault("RECIPE_SEARCH_HOME", tmp)
    t = time.perf_counter()
    load_store(uri, BACKBONES)
    print(f"loaded {len(BACKBONES) * 2} recipes into {uri} in {time.perf_counter() - t:.1f} s")
    return uri, BACKBONES


def _cells(a: argparse.Namespace, uri: str, backbones: list[str], tmp: str) -> dict[str, dict]:
    """Every cell: one server per (impl, cached/uncached), fired at each rate in turn."""
    results: dict[str, dict] = {}
    configs = [(f"{'cached' if ttl else 'uncached'} {impl}", ttl, impl)
               for impl in a.impls for ttl in (a.ttl, 0.0)]
    for label, ttl, impl in configs:
        t = time.perf_counter()
        proc, base = start(uri, ttl, Path(tmp) / f"server-{impl}-{ttl}.log", a.max_in_flight, impl)
        print(f"{label}: server ready in {time.perf_counter() - t:.1f} s", flush=True)
        try:
            for rate in a.rates:
                count = a.count or int(rate * a.seconds)
                cell = f"{label} @ {rate:g}/s"
                results[cell] = run_loop(fire(base, backbones, rate, count, a.seconds, a.connections))
                r = results[cell]
                print(f"{cell}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['shed_503']} x 503, "
                      f"{r['errors']} errors", flush=True)
                time.sleep(1.0)  # let the server drain before the next cell
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return results


def _print_table(a: argparse.Namespace, results: dict[str, dict], load_before: float) -> None:
    print(f"\nGET /recipes/{{backbone}}, open loop, latency from the due time; cached: --cache-ttl {a.ttl:g}, "
          f"uncached: --cache-ttl 0; server --max-in-flight {a.max_in_flight} ({os.cpu_count()} CPUs, "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)")
    header = f"{'config':34}{'requests':>9}{'achieved/s':>11}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}" \
             f"{'200':>7}{'503':>7}{'errors':>8}{'client CPU':>12}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(f"{name:34}{r['requests']:>9}{r['achieved_rps']:>11.1f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
              f"{r['max_ms']:>10.2f}{r['ok']:>7}{r['shed_503']:>7}{r['errors']:>8}"
              f"{r['client_cpu_us']:>9.0f} us")


def _print_ratios(a: argparse.Namespace, results: dict[str, dict]) -> None:
    """Per rate: uncached over cached, then each other impl over the first."""
    def ratio(num: str, den: str, rate: float) -> None:
        x, y = results.get(f"{num} @ {rate:g}/s"), results.get(f"{den} @ {rate:g}/s")
        if x and y and y["p50_ms"] > 0 and y["p99_ms"] > 0:
            print(f"{num} / {den} at {rate:g}/s: p50 {x['p50_ms'] / y['p50_ms']:.1f}x, "
                  f"p99 {x['p99_ms'] / y['p99_ms']:.1f}x")

    for rate in a.rates:
        for impl in a.impls:
            ratio(f"uncached {impl}", f"cached {impl}", rate)
        for impl in a.impls[1:]:
            for kind in ("cached", "uncached"):
                ratio(f"{kind} {impl}", f"{kind} {a.impls[0]}", rate)


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        uri, backbones = _store(a, tmp)
        load_before = os.getloadavg()[0]
        results = _cells(a, uri, backbones, tmp)
    _print_table(a, results, load_before)
    _print_ratios(a, results)
    if a.json:
        print(json.dumps(results, indent=2))
    # dropped requests (connection errors, timeouts) fail the bench; 503s are load shed on purpose
    return 1 if any(r["errors"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
