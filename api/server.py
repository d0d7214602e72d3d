"""Run the API with uvicorn: ``python -m api.server --port 8000 --tracking-uri ...``.

uvicorn handles SIGINT/SIGTERM gracefully: it stops accepting connections, lets
in-flight requests finish (up to ``graceful_timeout`` seconds) and then exits.
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
) -> None:
    """Serve the API until SIGINT/SIGTERM (blocking)."""
    import uvicorn

    # An unreachable MLflow server must answer 503 within seconds, not after
    # MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    app = create_app(tracking_uri, cache_ttl=cache_ttl, cors_origins=cors_origins)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=int(graceful_timeout),
        proxy_headers=False,
        server_header=False,
    )
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m api.server", description="Serve the recipe-search API.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI of the store (default: $MLFLOW_TRACKING_URI or "
                        "sqlite under $RECIPE_SEARCH_HOME)")
    p.add_argument("--cache-ttl", type=float, default=2.0, help="seconds reads are cached (0: off)")
    p.add_argument("--cors-origin", action="append", default=None, dest="cors_origins",
                   help="allow this browser origin (repeatable); CORS is off by default")
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    serve(a.host, a.port, a.tracking_uri, cache_ttl=a.cache_ttl, cors_origins=a.cors_origins,
          log_level=a.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
