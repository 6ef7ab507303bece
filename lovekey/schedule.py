"""Periodic work, declared one way: a `Periodic` per job, run by `scheduled(...)`.

Every periodic job in LoveKey (partition maintenance, detector sweeps, the alert worker's
escalation and digest passes) is a `Periodic`: a name, an interval and a callable. The jobs
of one process run under `async with scheduled(*jobs, timezone=...)`, which starts an
apscheduler 3.x `AsyncIOScheduler` on the running event loop and stops it when the block
ends. There is no other scheduler class in the code base and no hand-written timing loop.

How jobs, threads and the event loop relate:
- The scheduler itself lives on the event loop: it only decides when a job is due.
- A job given as an `async def` runs on that loop. It must not block; it hands blocking
  work to `asyncio.to_thread`, as the alert worker's passes do.
- A job given as a plain function is blocking work (a database pass): it runs on a thread of
  the loop's default executor, so it never holds up the loop.
- A synchronous process with no loop of its own (`lovekey maintain`, the detector's thread)
  starts one with `asyncio.run` around its `scheduled` block.

Every job has `max_instances=1` and `coalesce=True`: a run never overlaps the previous one
of the same job, and runs missed while the process was busy (or the previous run was still
going) collapse into one. A run more than `MISFIRE_GRACE_S` late is skipped and the job
waits for its next interval (apscheduler's default, stated here so it is a choice).

Stopping: when the block ends (the caller's stop event, SIGTERM through
`lovekey.signals`, or an error), no new run starts, the runs in progress are waited for
(a pass in a thread finishes with the connection it holds; nothing is cancelled half-way),
and then the scheduler shuts down.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

# A run this late is skipped (apscheduler's own default for interval jobs).
MISFIRE_GRACE_S = 1


@dataclass(frozen=True, slots=True)
class Periodic:
    """Call `run` every `every_s` seconds: first at once, or after one interval if
    `at_once` is False. `run` is an `async def` (runs on the loop) or a plain function
    (blocking; runs on a thread of the loop's default executor)."""

    name: str
    every_s: float
    run: Callable[[], Awaitable[None]] | Callable[[], object]
    at_once: bool = True

    def __post_init__(self) -> None:
        if not self.every_s > 0:
            raise ValueError(f"job {self.name!r}: every_s must be positive, got {self.every_s}")

    def first_run(self, now: datetime) -> datetime | None:
        """When the first run is due; None means one interval after the scheduler starts."""
        return now if self.at_once else None

    def as_coroutine(self) -> Callable[[], Awaitable[None]]:
        """The job as a coroutine function for the loop: a blocking `run` goes to a thread."""
        run = self.run
        if inspect.iscoroutinefunction(run):
            return run

        async def in_thread() -> None:
            await asyncio.to_thread(run)

        return in_thread


class Schedule:
    """The running jobs of one `scheduled` block."""

    def __init__(self, jobs: tuple[Periodic, ...], timezone: tzinfo | str) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"job names must be unique, got {names}")
        self._scheduler = AsyncIOScheduler(timezone=timezone)
        self._running: set[asyncio.Task[None]] = set()
        now = datetime.now(UTC)
        for job in jobs:
            first = job.first_run(now)
            # apscheduler reads an explicit next_run_time=None as "add paused": leave it out
            when = {} if first is None else {"next_run_time": first}
            self._scheduler.add_job(
                self._tracked(job.as_coroutine()),
                "interval",
                seconds=job.every_s,
                id=job.name,
                name=job.name,
                **when,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=MISFIRE_GRACE_S,
            )

    def _tracked(self, run: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        # apscheduler runs each job as a task of its own; remember it so the block's end
        # can wait for it instead of cancelling it
        async def tracked() -> None:
            task = asyncio.current_task()
            assert task is not None
            self._running.add(task)
            try:
                await run()
            finally:
                self._running.discard(task)

        return tracked

    def run_soon(self, name: str) -> None:
        """Bring the next run of job `name` forward to now (skipped, as any run, if the
        job is still running)."""
        job = self._scheduler.get_job(name)
        if job is not None:
            job.modify(next_run_time=datetime.now(UTC))

    def _start(self) -> None:
        self._scheduler.start()

    async def _stop(self) -> None:
        self._scheduler.pause()
        while self._running:
            # asyncio.wait never cancels what it waits for
            await asyncio.wait(set(self._running))
        self._scheduler.shutdown(wait=False)
        await asyncio.sleep(0)  # AsyncIOScheduler shuts down in a callback: let it run


@asynccontextmanager
async def scheduled(*jobs: Periodic, timezone: tzinfo | str = UTC) -> AsyncIterator[Schedule]:
    """Run `jobs` on the running event loop for the duration of the block (see the module)."""
    schedule = Schedule(jobs, timezone)
    schedule._start()
    try:
        yield schedule
    finally:
        await schedule._stop()
