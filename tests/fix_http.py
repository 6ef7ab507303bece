"""A socket server that answers HTTP requests with scripted bytes (tests of the kept-alive
client and of the json:// sender: framing, reuse, redirects, dropped connections)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading


class ScriptedServer:
    """Accepts connections; reads each request (head and Content-Length body) and writes the
    next scripted answer. An answer of None closes the connection without a word. Records
    (connection number, request bytes)."""

    def __init__(self, answers: list[bytes | None], *, tls: ssl.SSLContext | None = None) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[int, bytes]] = []
        self.connections = 0
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._open: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def url(self, path: str = "/send") -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            thread = threading.Thread(target=self._serve, args=(sock, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError):
                sock.close()
                return
        self._open.append(sock)
        buffer = b""
        with sock:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    buffer += sock.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                with self._lock:
                    self.requests.append((number, head + b"\r\n\r\n" + body))
                    answer = self.answers.pop(0) if self.answers else None
                if answer is None:
                    return
                sock.sendall(answer)
                if b"Connection: close" in answer or answer.startswith(b"HTTP/1.0"):
                    return

    def drop_idle(self) -> None:
        """Close every connection from the server's side (as an idle timeout does)."""
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        self.drop_idle()
        for thread in self._threads:
            thread.join(timeout=5)
