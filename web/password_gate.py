"""How many argon2 hashes and verifications the console runs at once.

Each one costs tens of milliseconds of a core and 64 MiB (see `auth._HASHER`). The sign-in
throttles bound the attempts per address and per name, but many addresses at once could still
keep every core hashing and starve the rest of the console. The gate lets `web.max_concurrent_hashes`
of them run at a time, in worker threads off the event loop; a sign-in that waits longer than
`web.hash_wait_s` for a turn is answered 429 instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from lovekey.errors import ConsoleError

T = TypeVar("T")


class PasswordGateBusy(ConsoleError):
    """No turn to hash a password came within the wait; `retry_after_s` is worth saying."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"password hashing busy, retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class PasswordGate:
    def __init__(self, *, max_concurrent: int, wait_s: float) -> None:
        if max_concurrent < 1 or wait_s <= 0:
            raise ValueError("max_concurrent must be >= 1 and wait_s > 0")
        # asyncio primitives bind to the running loop on first use, so this can be built
        # before the app is served
        self._slots = asyncio.BoundedSemaphore(max_concurrent)
        self._wait_s = wait_s

    async def run(self, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` in a worker thread once a turn is free; PasswordGateBusy if none
        came within the wait."""
        try:
            async with asyncio.timeout(self._wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise PasswordGateBusy(max(1, round(self._wait_s))) from None
        # the turn is given back when the thread is done, not when the awaiting request is:
        # a cancelled request cannot stop a running hash, so it must not free its turn early
        thread = asyncio.ensure_future(asyncio.to_thread(work, *args))
        thread.add_done_callback(lambda _: self._slots.release())
        return await asyncio.shield(thread)
