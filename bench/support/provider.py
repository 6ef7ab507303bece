"""A fake notification provider for benchmarks and tests.

`FakeProvider` is a real HTTP server on a free local port that stands in for an SMS gateway or
a push/webhook service at the outer edge: Apprise `json://` URLs point at it, and it records
every request (path, headers, JSON body) as a `ProviderRequest`. It can answer with scripted
status codes and hold responses for a while, and it honours `Idempotency-Key` the way a
careful provider does.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """One request the fake provider received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at_monotonic: float
    at_wall: float
    method: str = "POST"
    target: str = ""  # the request target as sent: path and query
    raw: bytes = b""  # the body as sent

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass(slots=True)
class _Script:
    statuses: list[int] = field(default_factory=list)


class FakeProvider:
    """`with FakeProvider() as fake:`; `fake.url("push/a")` -> 'json://127.0.0.1:PORT/push/a'.

    An asyncio HTTP/1.1 server in a thread of its own: cheap per request (a provider's cost
    must not weigh on a benchmark of our side), and `hold_s` delays answers without a thread
    per request.
    """

    def __init__(self, *, hold_s: float = 0.0) -> None:
        self.hold_s = hold_s
        self.connections = 0  # TCP connections accepted
        self._clients: set[asyncio.Task[Any]] = set()
        self._lock = threading.Lock()
        self._received: list[ProviderRequest] = []
        self._scripts: dict[str, _Script] = {}
        self._arrived = threading.Condition(self._lock)
        self._loop = asyncio.new_event_loop()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fake-provider")
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._client, sock=self._sock, backlog=1024)
        self._ready.set()
        async with server:
            await self._stopped.wait()
        # kept-alive connections (the client's pool) are closed by the server, as a real one does
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        with self._lock:
            self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                request_line = lines[0].split(" ")
                method = request_line[0]
                path = request_line[1] if len(request_line) > 1 else "/"
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"raw": raw.decode("utf-8", "replace")}
                status = self._record(path, headers, body, method=method, raw=raw)
                if self.hold_s:
                    await asyncio.sleep(self.hold_s)
                close = headers.get("connection", "").lower() == "close"
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}\r\n"
                    f"Content-Length: 0\r\nConnection: {'close' if close else 'keep-alive'}"
                    "\r\n\r\n".encode()
                )
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._clients.discard(task)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def url(self, path: str, *, schema: str = "json") -> str:
        return f"{schema}://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def sms_template(self) -> str:
        """An Apprise URL template for `alerts.sms_url`: a JSON SMS gateway at /sms."""
        return (
            f"json://127.0.0.1:{self.port}/sms/{{phone_digits}}"
            "?:to={phone}&+Idempotency-Key={idempotency_key}"
        )

    def __enter__(self) -> FakeProvider:
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("fake provider did not start")
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        stopped = self._stopped
        if stopped is not None:
            self._loop.call_soon_threadsafe(stopped.set)
        self._thread.join(timeout=10)
        self._sock.close()

    def script(self, path_prefix: str, statuses: Sequence[int]) -> None:
        """Answer the next requests whose path starts with `path_prefix` with `statuses`, in
        order (then 200)."""
        with self._lock:
            self._scripts["/" + path_prefix.lstrip("/")] = _Script(list(statuses))

    def _record(
        self,
        path: str,
        headers: dict[str, str],
        body: dict[str, Any],
        *,
        method: str = "POST",
        raw: bytes = b"",
    ) -> int:
        with self._lock:
            self._received.append(
                ProviderRequest(
                    path.split("?", 1)[0],
                    headers,
                    body,
                    time.monotonic(),
                    time.time(),
                    method=method,
                    target=path,
                    raw=raw,
                )
            )
            self._arrived.notify_all()
            for prefix, script in self._scripts.items():
                if path.startswith(prefix) and script.statuses:
                    return script.statuses.pop(0)
        return 200

    def received(self, path_prefix: str = "/") -> list[ProviderRequest]:
        prefix = "/" + path_prefix.lstrip("/")
        with self._lock:
            return [r for r in self._received if r.path.startswith(prefix)]

    def wait_for(self, count: int, timeout_s: float = 10.0, path_prefix: str = "/") -> bool:
        prefix = "/" + path_prefix.lstrip("/")
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while sum(r.path.startswith(prefix) for r in self._received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(left)
        return True

    def counts_by_key(self) -> Counter[str | None]:
        with self._lock:
            return Counter(r.idempotency_key for r in self._received)

    def clear(self) -> None:
        with self._lock:
            self._received.clear()
