"""`lovekey receive`: the HTTP server CTWing, OneNET and Huawei push readings to.

One asyncio loop serves the requests: an `asyncio.Protocol` around httptools' C parser
(uvicorn's parser), with no ASGI or web framework in between - the loop's per-request cost
is the limit, and a framework cost more than the receiver's own work (measured with `lovekey
bench receive --profile`). Each request is read by the pure platform readers
(`ingest.platforms`, through the source adapters) on the loop and handed, as the ingester's
`ReceivedMessage`s, to the committer (`ingest.group_commit`): `receive.committers` writer
threads, each with its own database connection. A writer takes whatever has queued up while
the transactions before ran, all in one transaction, through the ingester's own pipeline
(`BatchPipeline.commit`: registry checks, plausibility, staged COPY with ON CONFLICT DO
NOTHING, rejected_input, outage retries) - a group commit. Every request is answered only
after the transaction holding its rows has committed, so a 200 means stored, and a
platform's retry of the same push meets the primary keys and is stored once.

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
import time
from collections import deque
from collections.abc import Callable
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
from lovekey.ingest.group_commit import Committer
from lovekey.ingest.platforms import Push
from lovekey.ingest.sources import adapter_for
from lovekey.ingest.sources._http import PlatformAdapter
from lovekey.ingest.sources.onenet import OnenetAdapter

log = logging.getLogger(__name__)

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


# -- the requests (the loop) -----------------------------------------------------------------

# An answer: status, body, content type.
Answer = tuple[int, bytes, bytes]
Respond = Callable[[Answer], None]

_REASON_PHRASES = {
    200: b"OK",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    422: b"Unprocessable Content",
    503: b"Service Unavailable",
}
_JSON = b"application/json"
_OK: Answer = (200, b'{"result":"ok"}', _JSON)
_STOPPING: Answer = (503, b'{"error":"unavailable","detail":"not stored; send it again"}', _JSON)


def _json(code: int, **body: str) -> Answer:
    return code, orjson.dumps(body), _JSON


@dataclass(slots=True)
class Counts:
    requests: int = 0
    refused: dict[str, int] = field(default_factory=dict)


class RefusalBudget:
    """How many refused pushes of one source are kept this minute; the rest are counted.

    Times are `time.monotonic()` values passed in."""

    def __init__(self, source: str, per_minute: int) -> None:
        self.source = source
        self.per_minute = per_minute
        self.window_start = -60.0
        self.kept = 0
        self.dropped = 0

    def take(self, now_mono: float) -> bool:
        if now_mono - self.window_start >= 60.0:
            if self.dropped:
                log.warning(
                    "%s: %d more refused pushes in the last minute were answered but not kept"
                    " (receive.refused_kept_per_minute = %d)",
                    self.source,
                    self.dropped,
                    self.per_minute,
                )
            self.window_start, self.kept, self.dropped = now_mono, 0, 0
        if self.kept < self.per_minute:
            self.kept += 1
            return True
        self.dropped += 1
        return False


class Receiver:
    """What a request is answered: routes, reads, queues, answers after the commit.

    `handle` runs on the loop, synchronously: the platform readers are pure and quick, and
    the commit is waited for by a callback, not a task, so a request costs no coroutine.
    """

    def __init__(self, settings: Settings, routes: dict[str, Route], committer: Committer) -> None:
        self.routes = routes
        self.committer = committer
        self.max_body_bytes = settings.receive.max_body_bytes
        self.future_tolerance = timedelta(seconds=settings.ingest.future_tolerance_s)
        self.max_age = timedelta(days=settings.storage.retention_days)
        self.counts = Counts()
        self.refusal_budgets = {
            r.source.name: RefusalBudget(r.source.name, settings.receive.refused_kept_per_minute)
            for r in routes.values()
        }

    def handle(
        self, method: bytes, target: bytes, body: bytes, too_large: bool, client: str, respond: Respond
    ) -> None:
        """Answer one request through `respond`: at once, or once its rows are committed."""
        path, _, query_string = target.decode("latin-1").partition("?")
        if path in ("/healthz", "/readyz") and method == b"GET":
            up = path == "/healthz" or self.committer.database_up
            respond(_json(200, status="ok") if up else _json(503, status="database unavailable"))
            return
        route, path_token = self._match(path)
        if route is None:
            respond(_json(404, error="not_found"))
            return
        self.counts.requests += 1
        query = dict(parse_qsl(query_string)) if query_string else {}
        if method == b"GET" and route.source.kind == "onenet":
            self._handshake(route, query, client, respond)
            return
        if method != b"POST":
            respond(_json(405, error="method_not_allowed"))
            return
        try:
            if too_large:
                raise PayloadError(reasons.PAYLOAD_TOO_LARGE, f"body over {self.max_body_bytes} bytes")
            context = self._context()
            push = route.adapter.read(body, context, token=path_token or query.get("token"))
        except PayloadError as error:
            self._refuse(route, body, error, client, respond)
            return
        messages, failed = self._messages(route, body, push, context)
        if not messages:
            respond(_OK)  # notices, command results: nothing to store
            return
        # every reading impossible: say so (the push is kept); else 200, once committed
        answer = (
            _json(422, error="no_usable_reading", detail="every report was rejected")
            if failed == len(messages)
            else _OK
        )
        self.committer.submit(messages, lambda committed: respond(answer if committed else _STOPPING))

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

    def _refuse(self, route: Route, body: bytes, error: PayloadError, client: str, respond: Respond) -> None:
        """Keep the refused push in rejected_input, then answer 4xx with the reason.

        Anyone can post to the URL, so what refusals may write is bounded: at most
        `receive.refused_kept_per_minute` rows a source a minute are kept; past that the
        push is answered the same way, counted, and logged once a minute.
        """
        self.counts.refused[error.reason] = self.counts.refused.get(error.reason, 0) + 1
        status = _STATUS.get(error.reason, 400)
        answer = _json(status, error=error.reason, detail=error.detail)
        budget = self.refusal_budgets[route.source.name]
        if not budget.take(time.monotonic()):
            respond(answer)
            return
        if status == 403:
            log.warning("refused a push to %s from %s: %s", route.source.name, client, error.detail)
        message = ReceivedMessage(route.path, body, error, source=route.source.name)
        self.committer.submit([message], lambda committed: respond(answer if committed else _STOPPING))

    def _handshake(self, route: Route, query: dict[str, str], client: str, respond: Respond) -> None:
        adapter = route.adapter
        assert isinstance(adapter, OnenetAdapter)
        try:
            reply = adapter.handshake(query)
        except PayloadError as error:
            self._refuse(route, orjson.dumps(query), error, client, respond)
            return
        log.info("%s: answered OneNET's URL check", route.source.name)
        respond((200, reply, b"text/plain"))


# Answers one connection may owe (pipelined requests) before it is read no further: what one
# connection can queue for the committer is bounded by this plus what one read (256 KiB) holds.
MAX_OWED = 64


class _Connection(asyncio.Protocol):
    """One client connection: httptools parses, `Receiver.handle` decides, answers go out in
    request order (HTTP/1.1 pipelining), each as one write."""

    def __init__(self, server: _PushServer) -> None:
        import httptools

        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client = "?"
        self.target = b""
        self.chunks: list[bytes] = []
        self.size = 0
        # answers owed, in request order: [answer or None while its commit runs, keep-alive]
        self.owed: deque[list[Any]] = deque()
        self.closing = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "?"
        server = self.server
        if len(server.connections) >= server.max_connections:
            self._write((503, b'{"error":"too_many_connections"}', _JSON), keep_alive=False)
            return
        server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None  # answers still owed are dropped; their rows are committed anyway
        self.server.changed()

    def data_received(self, data: bytes) -> None:
        import httptools

        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._write(_json(400, error="bad_request", detail="upgrade not supported"), keep_alive=False)
        except httptools.HttpParserError as exc:
            self._write(_json(400, error="bad_request", detail=str(exc)[:200]), keep_alive=False)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.target = b""
        self.chunks = []
        self.size = 0

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"expect" and value.lower() == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.size <= self.server.max_body_bytes:
            self.chunks.append(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        slot: list[Any] = [None, self.parser.should_keep_alive()]
        self.owed.append(slot)
        if len(self.owed) >= MAX_OWED and self.transport is not None:
            self.transport.pause_reading()  # until the answers owed go out
        body = b"".join(self.chunks)
        too_large = self.size > self.server.max_body_bytes
        self.chunks = []

        def respond(answer: Answer) -> None:
            slot[0] = answer
            self._flush()

        try:
            self.server.receiver.handle(
                self.parser.get_method(),
                self.target,
                body[: self.server.max_body_bytes + 1],
                too_large,
                self.client,
                respond,
            )
        except Exception:
            log.exception("a push to %s could not be handled", self.target[:100].decode("latin-1"))
            respond(_json(500, error="internal_error"))

    # answers

    def _flush(self) -> None:
        while self.owed and self.owed[0][0] is not None:
            answer, keep_alive = self.owed.popleft()
            self._write(answer, keep_alive=keep_alive and not self.closing)
        transport = self.transport
        if len(self.owed) < MAX_OWED // 2 and transport is not None and not transport.is_reading():
            transport.resume_reading()
        self.server.changed()

    def _write(self, answer: Answer, *, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        status, body, content_type = answer
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            status,
            _REASON_PHRASES.get(status, b"Error"),
            content_type,
            len(body),
            b"" if keep_alive else b"Connection: close\r\n",
        )
        transport.write(head + body)
        if not keep_alive:
            transport.close()

    @property
    def idle(self) -> bool:
        return not self.owed

    def shut(self) -> None:
        """Answer what is owed, then close (the receiver is stopping)."""
        self.closing = True
        if self.idle and self.transport is not None:
            self.transport.close()


class _PushServer:
    """The listening socket and its connections."""

    def __init__(self, receiver: Receiver, settings: Settings) -> None:
        self.receiver = receiver
        self.max_body_bytes = settings.receive.max_body_bytes
        self.max_connections = settings.receive.max_connections
        self.connections: set[_Connection] = set()
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def drain(self, grace_s: float) -> None:
        """Let every connection get the answers it is owed (at most `grace_s`), then close all."""
        deadline = time.monotonic() + grace_s
        for connection in list(self.connections):
            connection.shut()
        while any(not c.idle for c in self.connections) and time.monotonic() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.01, deadline - time.monotonic()))
            for connection in list(self.connections):
                connection.shut()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()


# -- running it ------------------------------------------------------------------------------


async def run_receiver(
    settings: Settings,
    db_url: str,
    stop: asyncio.Event,
    *,
    host: str | None = None,
    port: int | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve the configured HTTP sources until `stop` is set; the pushes in hand are answered."""
    table = routes(settings)
    if not table:
        raise SettingsError("no HTTP source configured: add a [[sources]] of kind ctwing, onenet or huawei")
    loop = asyncio.get_running_loop()
    committer = Committer(settings, db_url, loop)
    receiver = Receiver(settings, table, committer)
    push_server = _PushServer(receiver, settings)
    host = host or settings.receive.host
    started = time.monotonic()
    committer.start()
    try:
        server = await loop.create_server(
            lambda: _Connection(push_server),
            host,
            settings.receive.port if port is None else port,
            reuse_address=True,
            backlog=2048,
        )
        bound = int(server.sockets[0].getsockname()[1])
        log.info(
            "receiving pushes on http://%s:%d for %s",
            host,
            bound,
            ", ".join(f"{r.source.name} ({r.source.kind}) at {r.path}" for r in table.values()),
        )
        if on_ready is not None:
            on_ready(bound)
        await stop.wait()
        server.close()  # no new connections; those open get their answers, then close
        committer.abandon.set()  # a commit waiting for the database answers 503 instead
        await push_server.drain(settings.receive.shutdown_grace_s)
        await server.wait_closed()
    finally:
        committer.abandon.set()
        committer.close()
        await asyncio.to_thread(committer.join)
        stored, duplicates, rejected = committer.totals()
        mean_s, p99_s = committer.write_seconds()
        log.info(
            "receiver stopped after %.0fs: %d requests, %d commits (write+commit mean %.0f ms,"
            " p99 <= %.0f ms), stored %d, duplicates %d, rejected %d",
            time.monotonic() - started,
            receiver.counts.requests,
            committer.commits,
            mean_s * 1000,
            p99_s * 1000,
            stored,
            duplicates,
            rejected,
        )
