"""The console for benchmarks and tests: a clock they can move, and the app served by uvicorn
on a free loopback port in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

import uvicorn

from lovekey.config import Settings
from lovekey.web.app import create_app

C = TypeVar("C", bound=Callable[[], datetime])


class FakeClock:
    """A settable clock: `clock()` returns the current fake time; `advance()` moves it."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when


@dataclass(frozen=True, slots=True)
class Served(Generic[C]):
    base_url: str
    clock: C
    port: int


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def served_console(settings: Settings, database_url: str, clock: C) -> Iterator[Served[C]]:
    """Serve the console on 127.0.0.1 in a background thread until the block exits."""
    app = create_app(settings, database_url, clock=clock)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="on", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"console-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the console did not start")
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", clock, port)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
