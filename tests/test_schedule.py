"""The one way periodic work is declared and run (`lovekey.schedule`)."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

import pytest

from lovekey.schedule import Periodic, scheduled

NOW = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


def test_first_run_is_at_once_unless_asked_to_wait_an_interval() -> None:
    assert Periodic("a", 60, lambda: None).first_run(NOW) == NOW
    assert Periodic("b", 60, lambda: None, at_once=False).first_run(NOW) is None


def test_an_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="every_s"):
        Periodic("a", 0, lambda: None)


async def test_job_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        async with scheduled(Periodic("a", 1, lambda: None), Periodic("a", 2, lambda: None)):
            pass


async def test_a_blocking_job_runs_on_a_thread_an_async_one_on_the_loop() -> None:
    threads: dict[str, threading.Thread] = {}
    ran = asyncio.Event()
    blocked = threading.Event()

    def blocking() -> None:
        threads["blocking"] = threading.current_thread()
        blocked.set()

    async def on_loop() -> None:
        threads["async"] = threading.current_thread()
        ran.set()

    async with scheduled(Periodic("blocking", 60, blocking), Periodic("async", 60, on_loop)):
        await asyncio.wait_for(ran.wait(), 5)
        assert await asyncio.to_thread(blocked.wait, 5)
    assert threads["async"] is threading.main_thread()
    assert threads["blocking"] is not threading.main_thread()


async def test_a_job_runs_every_interval_and_not_at_once_when_told() -> None:
    runs: list[float] = []
    started = time.monotonic()
    async with scheduled(Periodic("tick", 0.2, lambda: runs.append(time.monotonic()), at_once=False)):
        await asyncio.sleep(0.75)
    assert 2 <= len(runs) <= 4
    assert runs[0] - started >= 0.15  # the first run waited one interval


async def test_runs_never_overlap_and_the_end_waits_for_a_run_in_progress() -> None:
    running = 0
    most = 0
    finished: list[bool] = []

    def slow() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        time.sleep(0.5)  # longer than the interval
        running -= 1
        finished.append(True)

    async with scheduled(Periodic("slow", 0.1, slow)):
        await asyncio.sleep(0.3)  # the first run is still going when the block ends
    assert most == 1
    assert finished == [True]  # waited for, not abandoned on its thread
    assert running == 0


async def test_run_soon_brings_the_next_run_forward() -> None:
    ran = asyncio.Event()

    async def job() -> None:
        ran.set()

    async with scheduled(Periodic("later", 3600, job, at_once=False)) as schedule:
        await asyncio.sleep(0.05)
        assert not ran.is_set()
        schedule.run_soon("later")
        await asyncio.wait_for(ran.wait(), 5)
