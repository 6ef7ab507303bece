"""SIGINT/SIGTERM to a stop event, for the long-running commands."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (finish the work in hand, then end); the previous
    handlers come back when the block exits."""

    def handler(signum: int, frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt like SIGINT does, for a command whose work is one
    blocking call with no stop event (`lovekey simulate`): the caller catches it, lets the
    `with` blocks it unwinds finish, and exits 0. The previous handlers come back after."""

    def handler(signum: int, frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def serve_until_signalled(config: Any) -> None:
    """Run a uvicorn server (`uvicorn.Config`) until SIGINT or SIGTERM, then return.

    uvicorn's own handling shuts down gracefully and then raises the signal again once its
    handlers are restored, so a stopped server ends with status 130 (SIGINT) or -15
    (SIGTERM) and, for SIGINT, a KeyboardInterrupt traceback. Here the signal only asks the
    server to exit (a second one forces it, as in uvicorn) and the command returns 0."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            def handler(signum: int, frame: object) -> None:
                log.info("received %s, stopping", signal.Signals(signum).name)
                self.handle_exit(signum, None)

            sigs = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, handler) for sig in sigs}
            try:
                yield
            finally:
                for sig, old in previous.items():
                    signal.signal(sig, old)

    Server(config).run()
