"""The operations endpoint of a long-running command: /metrics, /healthz and /readyz.

`lovekey ingest`, `lovekey detect` and `lovekey alerts worker` each serve one, on their own
`metrics_port` (off by default). It lives in storage, below every package that serves one,
because its one shared check is the database's.

- `/healthz`: the process answers. Nothing is checked; a process stuck so badly that its
  HTTP thread cannot answer is the case it catches.
- `/readyz`: every readiness check passes (the database answers `SELECT 1` within a short
  timeout; for the ingester, the broker connection is up). 200 or 503, with `ok`/`not ok`
  per check and nothing else: the answer names no host, URL or error text.
- `/metrics`: the process's own Prometheus registry (never the global one, so several parts
  in one process - tests, `lovekey run` - do not collide).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
import psycopg
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from lovekey.storage.connections import APPLICATION_NAME

log = logging.getLogger(__name__)

Check = Callable[[], bool]
# a probe that waits longer than this is "not ready": orchestrators time out at 1-5 s
CHECK_TIMEOUT_S = 2.0


def database_check(url: str, *, timeout_s: float = CHECK_TIMEOUT_S) -> Check:
    """A check that opens a connection and runs `SELECT 1`, each bounded by `timeout_s`.

    A fresh connection per probe: it tests what a restarted part would meet (address, auth,
    `max_connections`), and a probe every few seconds costs little next to the work.
    """
    timeout_ms = max(1, int(timeout_s * 1000))

    def check() -> bool:
        try:
            with psycopg.connect(
                url,
                autocommit=True,
                connect_timeout=max(1, round(timeout_s)),
                application_name=f"{APPLICATION_NAME}-readyz",
                options=f"-c statement_timeout={timeout_ms}",
            ) as conn:
                row = conn.execute("SELECT 1").fetchone()
        except psycopg.Error:
            return False
        return row == (1,)

    return check


def readiness(checks: Mapping[str, Check]) -> tuple[bool, dict[str, str]]:
    """Run every check; a check that raises counts as failed (and is logged, not answered)."""
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            ok = check()
        except Exception:
            log.exception("readiness check %s failed", name)
            ok = False
        results[name] = "ok" if ok else "not ok"
    return all(v == "ok" for v in results.values()), results


def ops_app(registry: CollectorRegistry, checks: Mapping[str, Check]) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: /healthz and /readyz here, everything else Prometheus's own exposition."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _json(start_response, 200, {"status": "ok"})
        if path == "/readyz":
            ready, results = readiness(checks)
            return _json(
                start_response, 200 if ready else 503, {"status": "ok" if ready else "not ok", **results}
            )
        served: Iterable[bytes] = metrics(environ, start_response)
        return served

    return app


def _json(start_response: Callable[..., Any], status: int, body: dict[str, str]) -> list[bytes]:
    data = orjson.dumps(body)
    reason = "OK" if status == 200 else "Service Unavailable"
    start_response(
        f"{status} {reason}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [data]


class _QuietHandler(WSGIRequestHandler):
    """No access line per probe on stderr (a probe every few seconds drowns the log)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving(
    registry: CollectorRegistry, *, host: str, port: int, checks: Mapping[str, Check], name: str
) -> Iterator[int]:
    """Serve /metrics, /healthz and /readyz on http://host:port for the block; yields the port.

    One daemon thread per request (`ThreadingWSGIServer`), so a slow readiness probe never holds
    up a scrape. Port 0 picks a free port (tests).
    """
    server = make_server(
        host, port, ops_app(registry, checks), ThreadingWSGIServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name=f"{name}-ops-http", daemon=True)
    thread.start()
    bound = int(server.server_port)
    log.info("%s: metrics and health on http://%s:%s/metrics /healthz /readyz", name, host, bound)
    try:
        yield bound
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
