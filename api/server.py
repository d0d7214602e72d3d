"""Run the API with uvicorn: ``python -m api.server --port 8000 --tracking-uri ...``.

uvicorn handles SIGINT/SIGTERM gracefully: it stops accepting connections, lets
in-flight requests finish (up to ``graceful_timeout`` seconds) and then exits; running
search jobs are sent SIGINT and become resumable (``interrupted``).

Overload: the app answers 503 with ``Retry-After`` past ``--max-in-flight`` requests
(``api/overload.py``); uvicorn's ``limit_concurrency`` (connections + tasks) is a looser
backstop above it, and the listen ``backlog`` holds connections the loop has not accepted
yet, so a burst is answered or shed, never dropped.
"""

from __future__ import annotations

import argparse
import os
import sys

from .app import create_app


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    tracking_uri: str | None = None,
    *,
    cache_ttl: float = 2.0,
    cors_origins: list[str] | None = None,
    log_level: str = "info",
    graceful_timeout: float = 10.0,
    data_roots: list[str] | None = None,
    max_jobs: int = 1,
    max_trials: int = 64,
    job_cpus: int | None = None,
    max_in_flight: int = 64,
    backlog: int = 2048,
    loop: str = "auto",
    http: str = "auto",
) -> None:
    """Serve the API until SIGINT/SIGTERM (blocking)."""
    import uvicorn

    from .jobs import JobsConfig

    # An unreachable MLflow server must answer 503 within seconds, not after
    # MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    jobs = JobsConfig.from_strings(data_roots, max_jobs=max_jobs, max_trials=max_trials, num_cpus=job_cpus)
    app = create_app(tracking_uri, cache_ttl=cache_ttl, cors_origins=cors_origins, jobs=jobs,
                     max_in_flight=max_in_flight)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=int(graceful_timeout),
        proxy_headers=False,
        server_header=False,
        # a backstop well above the app's own limit: the app sheds first, with Retry-After
        limit_concurrency=max(1024, 8 * max_in_flight) if max_in_flight > 0 else None,
        backlog=backlog,
        loop=loop,  # auto: uvloop and httptools when installed (uvicorn[standard]), see bench/bench_api.py
        http=http,
    )
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m api.server", description="Serve the recipe-search API.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; see the README "
                                                         "before binding anything else)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI of the store (default: $MLFLOW_TRACKING_URI or "
                        "sqlite under $RECIPE_SEARCH_HOME)")
    p.add_argument("--cache-ttl", type=float, default=2.0, help="seconds reads are cached (0: off)")
    p.add_argument("--cors-origin", action="append", default=None, dest="cors_origins",
                   help="allow this browser origin (repeatable); CORS is off by default")
    p.add_argument("--log-level", default="info")
    p.add_argument("--data-root", action="append", default=None, dest="data_roots", metavar="NAME=PATH",
                   help="a dataset search jobs may name (repeatable), e.g. cifar10=/data/cifar10-jpeg.tar.gz; "
                        "`synthetic` is always available")
    p.add_argument("--max-jobs", type=int, default=1, help="search jobs running at once (default 1; then 429)")
    p.add_argument("--max-trials", type=int, default=64, help="most trials a job's search may ask for")
    p.add_argument("--job-cpus", type=int, default=None, help="--num-cpus of each job's search (default: all)")
    p.add_argument("--max-in-flight", type=int, default=64,
                   help="requests handled at once; more get 503 + Retry-After (0: no limit)")
    p.add_argument("--backlog", type=int, default=2048, help="listen backlog of the socket")
    p.add_argument("--loop", default="auto", choices=("auto", "asyncio", "uvloop"),
                   help="event loop (auto: uvloop when installed)")
    p.add_argument("--http", default="auto", choices=("auto", "h11", "httptools"),
                   help="HTTP/1.1 parser (auto: httptools when installed)")
    a = p.parse_args(argv)
    if a.max_jobs < 1 or a.max_trials < 2:
        p.error("--max-jobs must be >= 1 and --max-trials >= 2")
    try:
        from .jobs import parse_data_root

        for r in a.data_roots or []:
            parse_data_root(r)
    except ValueError as e:
        p.error(str(e))
    serve(a.host, a.port, a.tracking_uri, cache_ttl=a.cache_ttl, cors_origins=a.cors_origins,
          log_level=a.log_level, data_roots=a.data_roots, max_jobs=a.max_jobs, max_trials=a.max_trials,
          job_cpus=a.job_cpus, max_in_flight=a.max_in_flight, backlog=a.backlog, loop=a.loop, http=a.http)
    return 0


if __name__ == "__main__":
    sys.exit(main())
