"""`lovekey receive`: the HTTP server CTWing, OneNET and Huawei push readings to.

One asyncio loop serves the requests (uvicorn with its C parser, and a bare ASGI app: the
per-request cost is the limit, so no framework sits in between). Each request is read by
the pure platform readers (`ingest.platforms`) on the loop and handed, as the ingester's
`ReceivedMessage`s, to one committer thread that owns the database connection. The
committer writes whatever has queued up while its previous transaction ran, all in one
transaction, through the ingester's own pipeline (`BatchPipeline.commit`: registry checks,
plausibility, staged COPY with ON CONFLICT DO NOTHING, rejected_input, outage retries) -
a group commit. Every request is answered only after the transaction holding its rows has
committed, so a 200 means stored, and a platform's retry of the same push meets the
primary keys and is stored once.

Answers: 200 for a push that was understood (its readings stored; reports for unknown
devices kept in rejected_input, since a retry could not fix them); 400 for a body that
cannot be read, 403 for a wrong token or signature, 413 for a body over
`receive.max_body_bytes`, 422 when every reading of the push had impossible values - each
with a rejected_input row, written before the answer. 503 when the receiver stops while
the database is away (nothing was stored; the platform sends it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import orjson

from lovekey.config import Settings, SourceSettings
from lovekey.errors import PayloadError, SettingsError
from lovekey.ingest import reasons
from lovekey.ingest.batch import ReceivedMessage
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.inbox import Inbox
from lovekey.ingest.metrics import IngestMetrics
from lovekey.ingest.pipeline import Batch, BatchPipeline, Database
from lovekey.ingest.platforms import Push
from lovekey.ingest.sources import adapter_for
from lovekey.ingest.sources._http import PlatformAdapter
from lovekey.ingest.sources.onenet import OnenetAdapter

log = logging.getLogger(__name__)

APPLICATION_NAME = "lovekey-receive"
# How long the committer waits for work before looking at its stop flag again.
IDLE_WAIT_S = 0.25

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# status codes by the reason a whole push was refused
_STATUS = {
    reasons.BAD_SIGNATURE: 403,
    reasons.PAYLOAD_TOO_LARGE: 413,
}


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP source as the server uses it, decided once at start."""

    source: SourceSettings
    path: str  # the URL path it is served at (CTWing and Huawei: plus /{token})
    adapter: PlatformAdapter


def routes(settings: Settings) -> dict[str, Route]:
    """Path -> route for every HTTP source configured (each source's adapter built once)."""
    out: dict[str, Route] = {}
    for source in settings.sources:
        if not source.is_http:
            continue
        path = "/" + (source.path or f"/receive/{source.name}").strip("/")
        if path in out:
            raise SettingsError(f"sources {out[path].source.name} and {source.name} share {path}")
        adapter = adapter_for(source, settings)
        assert isinstance(adapter, PlatformAdapter)  # the HTTP kinds' adapters all are
        out[path] = Route(source, path, adapter)
    return out


# -- the committer (its own thread) ----------------------------------------------------------


@dataclass(slots=True)
class Pending:
    """The messages of one request, and the future its handler awaits."""

    messages: list[ReceivedMessage]
    future: asyncio.Future[bool]


class Committer:
    """Writes what requests queued, one transaction at a time per writer, and settles their
    futures.

    Requests that arrive while a transaction runs are written together in the next: under
    load a commit holds hundreds of requests, with no timer anywhere. `receive.committers`
    writers (threads, each with its own connection and pipeline) take turns at the queue,
    so one writes while another waits for its commit to be flushed.
    """

    def __init__(self, settings: Settings, db_url: str, loop: asyncio.AbstractEventLoop) -> None:
        # the pipeline's inbox is the MQTT ingester's; here requests queue in `_waiting`
        self._pipelines = [
            BatchPipeline(settings, Inbox(max_messages=1, max_bytes=1), IngestMetrics())
            for _ in range(settings.receive.committers)
        ]
        self._db_url = db_url
        self._loop = loop
        self._commit_rows = settings.receive.commit_rows
        self._waiting: deque[Pending] = deque()
        self._ready = threading.Condition()
        self._closing = False
        # set when the receiver stops: a commit waiting out a database outage gives up
        self.abandon = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(pipeline,), name=f"lovekey-receive-commit-{n}")
            for n, pipeline in enumerate(self._pipelines)
        ]
        self.commits = 0

    @property
    def database_up(self) -> bool:
        return any(p.metrics.database_up for p in self._pipelines)

    def totals(self) -> tuple[int, int, int]:
        """Rows stored, duplicates and rejected rows, over every writer."""
        stored = sum(sum(p.metrics.stored.values()) for p in self._pipelines)
        duplicates = sum(p.metrics.duplicates for p in self._pipelines)
        rejected = sum(sum(p.metrics.rejected.values()) for p in self._pipelines)
        return stored, duplicates, rejected

    def write_seconds(self) -> tuple[float, float]:
        """Mean seconds a transaction took to write and commit, and its 99th percentile bucket."""
        total = sum(p.metrics.batch_seconds.total for p in self._pipelines)
        count = sum(int(p.metrics.batch_seconds.counts.sum()) for p in self._pipelines)
        p99 = max((p.metrics.batch_seconds.quantile(0.99) or 0.0) for p in self._pipelines)
        return (total / count if count else 0.0), p99

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, messages: list[ReceivedMessage]) -> asyncio.Future[bool]:
        """Queue a request's messages; the future says True once they are committed."""
        future: asyncio.Future[bool] = self._loop.create_future()
        with self._ready:
            self._waiting.append(Pending(messages, future))
            self._ready.notify()
        return future

    def close(self) -> None:
        """Write what is queued, then end (call once no request can submit any more)."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _take(self) -> list[Pending] | None:
        """What has queued, up to `commit_rows` rows; None once closed and drained."""
        with self._ready:
            while not self._waiting:
                if self._closing:
                    return None
                self._ready.wait(IDLE_WAIT_S)
            taken: list[Pending] = []
            rows = 0
            while self._waiting and (not taken or rows < self._commit_rows):
                pending = self._waiting.popleft()
                taken.append(pending)
                rows += len(pending.messages)
            return taken

    def _run(self, pipeline: BatchPipeline) -> None:
        with Database(self._db_url) as database:
            while (taken := self._take()) is not None:
                batch = Batch(received=[m for p in taken for m in p.messages])
                committed = pipeline.commit(database, batch, self.abandon) is not None
                self.commits += 1  # a counter for the log: an update lost to a race is no harm
                # one hand-over to the loop per commit, not one per request
                self._loop.call_soon_threadsafe(_settle, [p.future for p in taken], committed)


def _settle(futures: list[asyncio.Future[bool]], committed: bool) -> None:
    for future in futures:
        if not future.done():  # the client may have gone; its rows are stored all the same
            future.set_result(committed)


# -- the ASGI app (the loop) -----------------------------------------------------------------


@dataclass(slots=True)
class Counts:
    requests: int = 0
    refused: dict[str, int] = field(default_factory=dict)


class ReceiverApp:
    """The bare ASGI application: routes, reads, queues, answers after the commit."""

    def __init__(self, settings: Settings, routes: dict[str, Route], committer: Committer) -> None:
        self.settings = settings
        self.routes = routes
        self.committer = committer
        self.max_body_bytes = settings.receive.max_body_bytes
        self.keep_bytes = settings.ingest.rejected_keep_bytes
        self.future_tolerance = timedelta(seconds=settings.ingest.future_tolerance_s)
        self.max_age = timedelta(days=settings.storage.retention_days)
        self.counts = Counts()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path in ("/healthz", "/readyz") and method == "GET":
            up = path == "/healthz" or self.committer.database_up
            await _answer(send, 200 if up else 503, {"status": "ok" if up else "database unavailable"})
            return
        route, path_token = self._match(path)
        if route is None:
            await _answer(send, 404, {"error": "not_found"})
            return
        self.counts.requests += 1
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        kind = route.source.kind
        if method == "GET" and kind == "onenet":
            await self._handshake(route, query, send)
            return
        if method != "POST":
            await _answer(send, 405, {"error": "method_not_allowed"})
            return
        body, too_large = await _read_body(receive, self.max_body_bytes)
        if body is None:
            return  # the client went away before sending its body
        try:
            if too_large:
                raise PayloadError(reasons.PAYLOAD_TOO_LARGE, f"body over {self.max_body_bytes} bytes")
            context = self._context()
            push = route.adapter.read(body, context, token=path_token or query.get("token"))
        except PayloadError as error:
            await self._refuse(route, body, error, send, scope)
            return
        messages, failed = self._messages(route, body, push, context)
        if messages and not await self._commit(messages, send):
            return
        if messages and failed == len(messages):
            await _answer(send, 422, {"error": "no_usable_reading", "detail": "every report was rejected"})
            return
        await _answer(send, 200, {"result": "ok"})

    def _match(self, path: str) -> tuple[Route | None, str | None]:
        route = self.routes.get(path)
        if route is not None:
            return route, None
        prefix, _, last = path.rpartition("/")
        return self.routes.get(prefix), last or None

    def _context(self) -> DecodeContext:
        now = datetime.now(UTC)
        return DecodeContext(now, now + self.future_tolerance, now - self.max_age)

    def _messages(
        self, route: Route, body: bytes, push: Push, context: DecodeContext
    ) -> tuple[list[ReceivedMessage], int]:
        """The push's reports as the ingester's messages, and how many were refused here."""
        name = route.source.name
        decoded = route.adapter.messages(push, context)
        if push.notes:
            log.debug("%s: %s", name, "; ".join(push.notes))
        failed = sum(isinstance(d, PayloadError) for d in decoded)
        return [ReceivedMessage(route.path, body, d, source=name) for d in decoded], failed

    async def _commit(self, messages: list[ReceivedMessage], send: Send) -> bool:
        """Queue and wait for the commit; False (answered 503) when the receiver stopped first."""
        if await self.committer.submit(messages):
            return True
        await _answer(send, 503, {"error": "unavailable", "detail": "stopping; send it again"})
        return False

    async def _refuse(self, route: Route, body: bytes, error: PayloadError, send: Send, scope: Scope) -> None:
        """Keep the refused push in rejected_input, then answer 4xx with the reason."""
        self.counts.refused[error.reason] = self.counts.refused.get(error.reason, 0) + 1
        status = _STATUS.get(error.reason, 400)
        if status == 403:
            client = scope.get("client") or ("?", 0)
            log.warning("refused a push to %s from %s: %s", route.source.name, client[0], error.detail)
        message = ReceivedMessage(route.path, body, error, source=route.source.name)
        if not await self._commit([message], send):
            return
        await _answer(send, status, {"error": error.reason, "detail": error.detail})

    async def _handshake(self, route: Route, query: dict[str, str], send: Send) -> None:
        adapter = route.adapter
        assert isinstance(adapter, OnenetAdapter)
        try:
            reply = adapter.handshake(query)
        except PayloadError as error:
            raw = orjson.dumps(query)
            scope: Scope = {}
            await self._refuse(route, raw, error, send, scope)
            return
        log.info("%s: answered OneNET's URL check", route.source.name)
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(reply))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply})


async def _read_body(receive: Receive, limit: int) -> tuple[bytes | None, bool]:
    """The request body, cut at `limit` bytes (True when it was longer); None on disconnect."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None, False
        chunk: bytes = message.get("body", b"")
        if size <= limit:
            chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    return (body[: limit + 1], True) if size > limit else (body, False)


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    data = orjson.dumps(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


# -- running it ------------------------------------------------------------------------------


class _Server:
    """uvicorn without its own signal handling: the caller's stop event ends it."""

    def __init__(self, app: ReceiverApp, settings: Settings, host: str, port: int) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        receive = settings.receive
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http="httptools",
            loop="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            limit_concurrency=receive.max_connections,
            proxy_headers=False,  # the platforms connect directly; no X-Forwarded-* to trust
            timeout_graceful_shutdown=int(max(1, receive.shutdown_grace_s)),
            server_header=False,
            date_header=False,
        )
        self.server = Server(config)

    @property
    def port(self) -> int | None:
        for server in getattr(self.server, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return None


async def run_receiver(
    settings: Settings,
    db_url: str,
    stop: asyncio.Event,
    *,
    host: str | None = None,
    port: int | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve the configured HTTP sources until `stop` is set; in-flight requests finish."""
    table = routes(settings)
    if not table:
        raise SettingsError(
            "no HTTP source configured: add a [[sources]] entry of kind ctwing, onenet or huawei"
        )
    loop = asyncio.get_running_loop()
    committer = Committer(settings, db_url, loop)
    app = ReceiverApp(settings, table, committer)
    server = _Server(
        app, settings, host or settings.receive.host, settings.receive.port if port is None else port
    )
    committer.start()

    async def stopper() -> None:
        await stop.wait()
        committer.abandon.set()  # a commit waiting for the database answers 503 instead
        server.server.should_exit = True

    async def announce() -> None:
        # uvicorn says it is up by a flag, not an event
        while not server.server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        bound = server.port or 0
        log.info(
            "receiving pushes on http://%s:%d for %s",
            host or settings.receive.host,
            bound,
            ", ".join(f"{r.source.name} ({r.source.kind}) at {r.path}" for r in table.values()),
        )
        if on_ready is not None:
            on_ready(bound)

    started = time.monotonic()
    stopping = asyncio.create_task(stopper(), name="receive-stopper")
    announcing = asyncio.create_task(announce(), name="receive-announce")
    try:
        await server.server.serve()
    finally:
        for task in (stopping, announcing):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        committer.abandon.set()
        committer.close()
        await asyncio.to_thread(committer.join)
        stored, duplicates, rejected = committer.totals()
        mean_s, p99_s = committer.write_seconds()
        log.info(
            "receiver stopped after %.0fs: %d requests, %d commits (write+commit mean %.0f ms,"
            " p99 <= %.0f ms), stored %d, duplicates %d, rejected %d",
            time.monotonic() - started,
            app.counts.requests,
            committer.commits,
            mean_s * 1000,
            p99_s * 1000,
            stored,
            duplicates,
            rejected,
        )
