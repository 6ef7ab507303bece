"""A small HTTP/1.1 client over kept-alive connections, for the provider calls of a burst.

Why not urllib3: 1,000 alerts must reach their providers within a second on two cores, which
leaves about 2 ms of CPU a notification for everything on the machine (docs/alerts.md,
"Speed"). A POST of a provider's size through a urllib3 pool costs about 0.6 ms of client
CPU here (its pool queue, Timeout and Retry objects, URL parsing, header dicts, and
`http.client`, which reads every response's headers through the `email` parser); the same
request written in one `sendall` and its answer parsed from the socket's bytes costs about
0.1 ms (measured with 16 threads against a server in another process).

What it speaks: one request at a time per connection, `Content-Length` bodies (no chunked
uploads), answers framed by `Content-Length`, `Transfer-Encoding: chunked` or the end of the
connection; interim 1xx answers skipped; a connection kept only when the answer was HTTP/1.1,
fully read and not `Connection: close`. TLS through `ssl` with the CA bundle given (certifi's
by default) and the host name checked. No proxies, no redirects (a caller follows them): a
caller that needs a proxy uses urllib3. As with urllib3 and `retries=False`, a request is
never sent twice (only a connection that could not be made is tried again, if asked):
an idle connection the server has closed is noticed before it is used (it polls readable) and
replaced, but a request that failed once it was written raises.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import threading
import weakref
from collections.abc import Iterator, Mapping
from urllib.parse import quote, urlsplit

from lovekey.errors import LoveKeyError

_MAX_HEAD_BYTES = 64 * 1024  # status line and headers of one answer
_MAX_HEADERS = 100
_MAX_BODY_BYTES = 1024 * 1024  # a provider's answer is a few hundred bytes, an error page a few KB
_CHUNK = 64 * 1024
_NO_BODY = frozenset({204, 304})
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_URL_SAFE = "".join(chr(c) for c in range(33, 127))  # printable ASCII but the space: kept as is


class ProtocolError(LoveKeyError, OSError):
    """The server's answer is not HTTP/1.x as this client reads it (or is too large). An
    OSError too: to a caller it is the network failing, like a reset connection."""


class Headers(Mapping[str, str]):
    """An answer's headers: looked up without regard to case, listed as sent; a repeated
    header's values joined with ", " (as urllib3 and requests do)."""

    __slots__ = ("_items",)

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in pairs:
            key = name.lower()
            seen = self._items.get(key)
            self._items[key] = (name, value) if seen is None else (seen[0], f"{seen[1]}, {value}")

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


class Response:
    """A whole answer: `status`, `reason`, `headers`, `data` (the body) and `version` (11 or 10)."""

    __slots__ = ("data", "headers", "reason", "status", "version")

    def __init__(self, status: int, reason: str, headers: Headers, data: bytes, version: int) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.data = data
        self.version = version


class _Connection:
    __slots__ = ("buffer", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def dropped(self) -> bool:
        """An idle connection that is readable was closed by the server (or sent something
        unasked for): not to be used again."""
        if self.buffer:
            return True
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        try:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def fill(self) -> None:
        data = self.sock.recv(_CHUNK)
        if not data:
            raise ConnectionResetError("the server closed the connection before the answer was complete")
        self.buffer += data

    def read_until(self, mark: bytes, limit: int) -> bytes:
        start = 0
        while True:
            at = self.buffer.find(mark, start)
            if at >= 0:
                end = at + len(mark)
                line = bytes(self.buffer[:end])
                del self.buffer[:end]
                return line
            if len(self.buffer) > limit:
                raise ProtocolError(f"no {mark!r} within {limit} bytes")
            start = max(0, len(self.buffer) - len(mark) + 1)
            self.fill()

    def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.fill()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def read_to_end(self) -> bytes:
        while True:
            data = self.sock.recv(_CHUNK)
            if not data:
                break
            self.buffer += data
            if len(self.buffer) > _MAX_BODY_BYTES:
                raise ProtocolError(f"an answer over {_MAX_BODY_BYTES} bytes")
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def close(self) -> None:
        self.sock.close()


class KeepAlivePool:
    """Kept-alive connections per (scheme, host, port), up to `maxsize` idle ones each;
    thread-safe (a connection serves one request at a time). `verify=False` accepts any
    certificate (a json:// target with `verify=no`)."""

    def __init__(self, *, maxsize: int = 16, ca_certs: str | None = None, verify: bool = True) -> None:
        self._maxsize = maxsize
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._lock = threading.Lock()
        self._ca_certs = ca_certs
        self._verify = verify
        self._tls: ssl.SSLContext | None = None  # built on the first https request
        # idle connections close with the pool, also when it is dropped without clear()
        weakref.finalize(self, _close_all, self._idle)

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout_s: float | None = None,
        read_timeout_s: float | None = None,
        connect_attempts: int = 1,
    ) -> Response:
        """Send one request and read its whole answer. Raises OSError (a connection refused,
        reset or timed out; `ssl.SSLError`; `ProtocolError`). `connect_attempts`: how often a
        new connection is tried when none can be made (nothing has been sent then)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not target.isascii() or " " in target:
            target = quote(target, safe=_URL_SAFE)  # UTF-8, percent-encoded, as requests does
        head = [f"{method} {target} HTTP/1.1\r\n"]
        names = set()
        for name, value in (headers or {}).items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"a line break in header {name!r}")
            head.append(f"{name}: {value}\r\n")
            names.add(name.lower())
        if "host" not in names:
            netloc = parts.netloc.rpartition("@")[2]
            if not netloc.isascii():
                netloc = host.encode("idna").decode() + (f":{parts.port}" if parts.port else "")
            head.append(f"Host: {netloc}\r\n")
        if body is not None and "content-length" not in names:
            head.append(f"Content-Length: {len(body)}\r\n")
        head.append("\r\n")
        message = "".join(head).encode("latin-1") + (body or b"")

        key = (scheme, host, port)
        conn = self._take(key) or self._connect(scheme, host, port, connect_timeout_s, connect_attempts)
        try:
            conn.sock.settimeout(read_timeout_s)
            conn.sock.sendall(message)
            response, reusable = _read_response(conn, method)
        except BaseException:
            conn.close()
            raise
        if reusable:
            self._give_back(key, conn)
        else:
            conn.close()
        return response

    def clear(self) -> None:
        with self._lock:
            _close_all(self._idle)

    def _take(self, key: tuple[str, str, int]) -> _Connection | None:
        while True:
            with self._lock:
                conns = self._idle.get(key)
                conn = conns.pop() if conns else None
            if conn is None or not conn.dropped():
                return conn
            conn.close()

    def _give_back(self, key: tuple[str, str, int], conn: _Connection) -> None:
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < self._maxsize:
                conns.append(conn)
                return
        conn.close()

    def _connect(
        self, scheme: str, host: str, port: int, timeout_s: float | None, attempts: int
    ) -> _Connection:
        for _ in range(attempts - 1):
            try:
                return self._open(scheme, host, port, timeout_s)
            except OSError:
                continue  # refused or timed out: nothing was sent, so once more is safe
        return self._open(scheme, host, port, timeout_s)

    def _open(self, scheme: str, host: str, port: int, timeout_s: float | None) -> _Connection:
        sock = socket.create_connection((host, port), timeout=timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._context().wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            if self._verify:
                context = ssl.create_default_context(cafile=self._ca_certs or _certifi())
            else:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls = context
        return self._tls


def _close_all(idle: dict[tuple[str, str, int], list[_Connection]]) -> None:
    for conns in idle.values():
        for conn in conns:
            conn.close()
    idle.clear()


def _read_response(conn: _Connection, method: str) -> tuple[Response, bool]:
    """The answer to the request just sent, and whether the connection may carry another."""
    while True:
        head = conn.read_until(b"\r\n\r\n", _MAX_HEAD_BYTES)
        lines = head[:-4].split(b"\r\n")
        version, status, reason = _status_line(lines[0])
        if not 100 <= status < 200 or status == 101:
            break  # an interim answer (100 Continue, 103 Early Hints) is followed by the real one
    if len(lines) - 1 > _MAX_HEADERS:
        raise ProtocolError(f"more than {_MAX_HEADERS} headers")
    pairs = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise ProtocolError(f"a malformed header line {bytes(line[:80])!r}")
        pairs.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    headers = Headers(pairs)
    tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    reusable = version == 11 and "close" not in tokens
    encoding = headers.get("Transfer-Encoding", "").lower()
    if method == "HEAD" or status in _NO_BODY or 100 <= status < 200:
        data = b""
    elif encoding:
        if encoding.rsplit(",", 1)[-1].strip() != "chunked":
            raise ProtocolError(f"unsupported Transfer-Encoding {encoding!r}")
        data = _read_chunked(conn)
    elif "Content-Length" in headers:
        data = conn.read_exactly(_content_length(headers["Content-Length"]))
    else:
        data = conn.read_to_end()  # framed by the end of the connection
        reusable = False
    return Response(status, reason, headers, data, version), reusable


def _status_line(line: bytes) -> tuple[int, int, str]:
    parts = line.split(b" ", 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {bytes(line[:80])!r}")
    status = int(parts[1])
    if not 100 <= status <= 999:
        raise ProtocolError(f"status {status} out of range")
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    return (11 if parts[0] == b"HTTP/1.1" else 10), status, reason


def _content_length(value: str) -> int:
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1 or not ((only := values.pop()).isascii() and only.isdigit()):
        raise ProtocolError(f"an invalid Content-Length {value!r}")
    n = int(only)
    if n > _MAX_BODY_BYTES:
        raise ProtocolError(f"an answer of {n} bytes, over {_MAX_BODY_BYTES}")
    return n


def _read_chunked(conn: _Connection) -> bytes:
    body = bytearray()
    while True:
        size_line = conn.read_until(b"\r\n", 1024)
        size_text = size_line[:-2].split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_text):
            raise ProtocolError(f"an invalid chunk size {bytes(size_text[:20])!r}")
        size = int(size_text, 16)
        if len(body) + size > _MAX_BODY_BYTES:
            raise ProtocolError(f"an answer over {_MAX_BODY_BYTES} bytes")
        if size == 0:
            while conn.read_until(b"\r\n", _MAX_HEAD_BYTES) != b"\r\n":
                pass  # trailers: read and dropped
            return bytes(body)
        body += conn.read_exactly(size)
        if conn.read_exactly(2) != b"\r\n":
            raise ProtocolError("a chunk not followed by CRLF")


def _certifi() -> str | None:
    try:
        import certifi
    except ImportError:  # the system's store then
        return None
    return str(certifi.where())
