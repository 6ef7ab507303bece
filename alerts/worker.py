"""`lovekey alerts worker`: escalation on a schedule, dispatch as soon as there is work.

One asyncio process composes:
- two `lovekey.schedule` jobs on the loop: escalation (every `escalation_interval_s`, and at
  once when PostgreSQL NOTIFYs `lovekey_alerts`) and digests; each runs its synchronous pass
  (`escalate_once`, `queue_digests`) in a thread;
- a LISTEN task on `lovekey_alerts` and `lovekey_outbox` (new alerts / queued notifications),
  reconnecting with `lovekey.retry.Backoff`;
- `dispatchers` loops, each claiming a batch of due notifications in a thread and sending them
  through a bounded pool of `send_threads` threads (Apprise's notify blocks).

Everything is in one `asyncio.TaskGroup` with named tasks and an `AsyncExitStack`; stopping is
cooperative (loops finish their batch), so a thread never outlives the connection it uses.
Several workers may run against one database: alerts and notifications are claimed with
`FOR UPDATE SKIP LOCKED`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from typing import Any

import psycopg

from lovekey.alerts.chains import ChainBook
from lovekey.alerts.channels import ChannelSender, Sender
from lovekey.alerts.dispatch import DispatchContext, dispatch_once
from lovekey.alerts.escalation_pass import EscalationContext, escalate_once
from lovekey.alerts.metrics import outbox_registry
from lovekey.config import Settings
from lovekey.errors import StorageError
from lovekey.retry import Backoff
from lovekey.schedule import Periodic, scheduled
from lovekey.storage import connect, connect_async, health

log = logging.getLogger(__name__)

CHANNEL_ALERTS = "lovekey_alerts"
CHANNEL_OUTBOX = "lovekey_outbox"
PURGE_INTERVAL_S = 24 * 3600  # resolved alerts past alerts.records_keep_days


def utc_now() -> datetime:
    return datetime.now(UTC)


_INSERT_ACK_KEY = "INSERT INTO alert_secret (name, value) VALUES ('ack', %s) ON CONFLICT DO NOTHING"
_SELECT_ACK_KEY = "SELECT value FROM alert_secret WHERE name = 'ack'"


def load_secret(conn: psycopg.Connection[Any], settings: Settings) -> bytes:
    """The key that signs acknowledgement links: from settings, else made once and kept in
    the database so every worker and web process agrees on it."""
    if settings.alerts.ack_secret:
        return settings.alerts.ack_secret.encode()
    with conn.transaction():
        conn.execute(_INSERT_ACK_KEY, (secrets.token_bytes(32),))
        row = conn.execute(_SELECT_ACK_KEY).fetchone()
    assert row is not None
    return bytes(row[0])


async def load_secret_async(conn: psycopg.AsyncConnection[Any], settings: Settings) -> bytes:
    """`load_secret` over an asynchronous connection (the acknowledgement pages)."""
    if settings.alerts.ack_secret:
        return settings.alerts.ack_secret.encode()
    async with conn.transaction():
        await conn.execute(_INSERT_ACK_KEY, (secrets.token_bytes(32),))
        row = await (await conn.execute(_SELECT_ACK_KEY)).fetchone()
    assert row is not None
    return bytes(row[0])


class Wakeup:
    """A generation counter loops wait on: a wake between a loop's check and its wait is
    never lost, and several loops can wait at once."""

    def __init__(self) -> None:
        self.generation = 0
        self._cond = asyncio.Condition()

    async def wake(self) -> None:
        async with self._cond:
            self.generation += 1
            self._cond.notify_all()

    async def wait(self, seen: int, timeout_s: float) -> None:
        async with self._cond:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cond.wait_for(lambda: self.generation != seen), timeout_s)


class AlertWorker:
    """Use as `async with AlertWorker(settings, url) as worker: await worker.run(stop)`."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        *,
        sender: Sender | None = None,
        clock: Callable[[], datetime] = utc_now,
        housekeeping: bool = True,
    ) -> None:
        self.settings = settings
        self.url = url
        self.clock = clock
        # digests and the purge of old records: the main process only; the processes beside
        # it (`alerts.processes`) escalate and dispatch
        self.housekeeps = housekeeping
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._sender = sender
        self._stack = AsyncExitStack()
        self._outbox_wake = Wakeup()
        self._escalate_lock = asyncio.Lock()
        self._escalate_dirty = True
        self._stopping = False

    async def __aenter__(self) -> AlertWorker:
        try:
            await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _open(self) -> None:
        a = self.settings.alerts
        self.chains = ChainBook.load(a.chains_file)
        if self._sender is None:
            sender = await asyncio.to_thread(
                ChannelSender,
                keepalive=a.keepalive_webhooks,
                connections=a.send_threads,
                providers=dict(a.providers),
            )
            self._stack.callback(sender.close)
            await asyncio.to_thread(sender.providers.build_all)  # not during the first burst
            self._sender = sender
        loop = asyncio.get_running_loop()
        # threads for blocking DB passes: one per dispatcher, escalation, digest, spare
        loop.set_default_executor(ThreadPoolExecutor(a.dispatchers + 4, "lovekey-alerts-db"))
        self._send_pool = self._stack.enter_context(ThreadPoolExecutor(a.send_threads, "lovekey-alerts-send"))
        self._escalate_conn = await self._connect()
        secret = await asyncio.to_thread(load_secret, self._escalate_conn, self.settings)
        self._digest_conn = await self._connect()
        self.escalation = EscalationContext(self.chains, a, self.settings.zone)
        self.dispatch = DispatchContext(a, self.settings.zone, secret, self.name)

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _connect(self, *, autocommit: bool = True) -> psycopg.Connection[Any]:
        conn = await asyncio.to_thread(connect, self.url, autocommit=autocommit)
        self._stack.push_async_callback(asyncio.to_thread, conn.close)
        return conn

    async def run(self, stop: asyncio.Event) -> None:
        a = self.settings.alerts
        jobs = [Periodic("escalate", a.escalation_interval_s, self._escalate_job)]
        if self.housekeeps:
            jobs.append(Periodic("digest", a.digest_interval_s, self._digest_job))
            jobs.append(Periodic("purge", PURGE_INTERVAL_S, self._purge_job))
        async with scheduled(*jobs, timezone=self.settings.timezone) as schedule:
            self._schedule = schedule
            log.info(
                "alert worker %s started (escalation and dispatch): %d dispatchers, %d send threads",
                self.name,
                a.dispatchers,
                a.send_threads,
            )
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._listen(stop), name="alerts-listen")
                    for i in range(a.dispatchers):
                        tg.create_task(self._dispatch_loop(i, stop), name=f"alerts-dispatch-{i}")
                    tg.create_task(self._stop_when(stop), name="alerts-stop")
            finally:
                # a running pass ends after its batch; the schedule waits for it, so no
                # thread outlives the connection it uses
                self._stopping = True
        log.info("alert worker %s stopped", self.name)

    async def _stop_when(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping = True
        await self._outbox_wake.wake()

    # --- escalation -------------------------------------------------------------------
    def _escalate_soon(self) -> None:
        self._escalate_dirty = True
        if not self._escalate_lock.locked():
            self._schedule.run_soon("escalate")

    async def _escalate_job(self) -> None:
        if self._stopping:
            return
        async with self._escalate_lock:
            while self._escalate_dirty and not self._stopping:
                self._escalate_dirty = False
                try:
                    report = await asyncio.to_thread(
                        escalate_once,
                        self._escalate_conn,
                        self.escalation,
                        self.clock(),
                        limit=self.settings.alerts.escalation_batch,
                    )
                except (psycopg.Error, StorageError) as exc:
                    log.error("escalation pass failed: %s", exc)
                    self._escalate_conn = await self._reconnect(self._escalate_conn)
                    return
                if report.notifications:
                    await self._outbox_wake.wake()
                if report.alerts:
                    log.info(
                        "escalation: %d alerts %s, %d notifications queued",
                        report.alerts,
                        report.decisions,
                        report.notifications,
                    )
                    self._escalate_dirty = True  # there may be more due than one pass takes
            self._escalate_dirty = True  # the next scheduled run always looks

    async def _digest_job(self) -> None:
        from lovekey.alerts.digest import queue_digests

        if self._stopping:
            return
        try:
            n = await asyncio.to_thread(queue_digests, self._digest_conn, self.settings, self.clock())
        except (psycopg.Error, StorageError) as exc:
            log.error("digest pass failed: %s", exc)
            self._digest_conn = await self._reconnect(self._digest_conn)
            return
        if n:
            await self._outbox_wake.wake()

    async def _purge_job(self) -> None:
        from lovekey.alerts.records import purge_alert_records, records_cutoff

        keep = self.settings.alerts.records_keep_days
        if self._stopping or keep is None:
            return

        def purge() -> None:
            # a connection of its own, once a day: its transactions must not mix with a job's
            with connect(self.url, autocommit=True) as conn:
                purge_alert_records(conn, records_cutoff(self.clock(), keep))

        try:
            await asyncio.to_thread(purge)
        except (psycopg.Error, StorageError) as exc:
            log.error("purge of old alert records failed (tried again tomorrow): %s", exc)

    async def _reconnect(
        self, conn: psycopg.Connection[Any], *, autocommit: bool = True
    ) -> psycopg.Connection[Any]:
        await asyncio.to_thread(conn.close)
        return await self._connect(autocommit=autocommit)

    # --- dispatch -----------------------------------------------------------------------
    async def _dispatch_loop(self, index: int, stop: asyncio.Event) -> None:
        conn = await self._connect()
        log_conn = await self._connect(autocommit=True)
        a = self.settings.alerts
        backoff = Backoff(first_s=1.0, max_s=30.0)
        while not self._stopping:
            seen = self._outbox_wake.generation
            try:
                report = await asyncio.to_thread(
                    dispatch_once,
                    conn,
                    log_conn,
                    self._sender_for_dispatch(),
                    self.dispatch,
                    self.clock,
                    executor=self._send_pool,
                )
                backoff.reset()
            except (psycopg.Error, StorageError) as exc:
                log.error("dispatcher %d: database error: %s", index, exc)
                await _sleep_unless(stop, backoff.next_delay_s())
                try:
                    conn = await self._reconnect(conn)
                    log_conn = await self._reconnect(log_conn, autocommit=True)
                except StorageError as again:
                    log.error("dispatcher %d: cannot reconnect: %s", index, again)
                continue
            if report.claimed:
                continue  # more may be due: no waiting while there is work
            await self._outbox_wake.wait(seen, a.poll_interval_s)

    def _sender_for_dispatch(self) -> Sender:
        # the sender itself, not a wrapper: dispatch also asks it `already_accepted` (a
        # provider's record of a message a crash cut short) when it has that method
        assert self._sender is not None
        return self._sender

    # --- LISTEN -------------------------------------------------------------------------
    async def _listen(self, stop: asyncio.Event) -> None:
        backoff = Backoff(first_s=0.5, max_s=30.0)
        while not self._stopping:
            try:
                async with await connect_async(self.url, autocommit=True) as conn:
                    await conn.execute("LISTEN lovekey_alerts")
                    await conn.execute("LISTEN lovekey_outbox")
                    backoff.reset()
                    self._escalate_soon()  # anything raised while we were not listening
                    while not self._stopping:
                        async for note in conn.notifies(timeout=1.0):
                            if note.channel == CHANNEL_ALERTS:
                                self._escalate_soon()
                            else:
                                await self._outbox_wake.wake()
            except (psycopg.Error, OSError) as exc:
                log.warning("LISTEN connection lost (%s); polling until it is back", exc)
                await _sleep_unless(stop, backoff.next_delay_s())


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_worker(
    settings: Settings,
    url: str,
    stop: asyncio.Event,
    *,
    ready: Callable[[AlertWorker], Awaitable[None]] | None = None,
) -> None:
    """The main worker process, plus `alerts.processes - 1` processes that escalate and dispatch
    beside it (digests and the purge stay in this one).

    The extra processes share the outbox through row locks exactly as separate workers do.
    Each holds the read end of a pipe from this process: when this process ends, by any
    means (SIGKILL included), the pipe closes and they finish their batch and exit.
    """
    context = multiprocessing.get_context("spawn")  # never fork a process that has threads
    children: list[tuple[BaseProcess, Any]] = []
    for i in range(settings.alerts.processes - 1):
        parent_alive, keep = context.Pipe(duplex=False)
        child = context.Process(
            target=_dispatch_process,
            args=(settings.model_dump(mode="json"), url, parent_alive),
            name=f"lovekey-alerts-dispatch-{i + 1}",
        )
        child.start()
        parent_alive.close()
        children.append((child, keep))
    try:
        async with AsyncExitStack() as stack:
            a = settings.alerts
            if a.metrics_port is not None:  # this process only: the outbox metrics cover all
                ops = health.serving(
                    outbox_registry(url),
                    host=a.metrics_host,
                    port=a.metrics_port,
                    checks={"database": health.database_check(url)},
                    name="alerts",
                )
                ops.__enter__()
                # stopping the server waits for its thread: not on the event loop
                stack.push_async_callback(asyncio.to_thread, ops.__exit__, None, None, None)
            worker = await stack.enter_async_context(AlertWorker(settings, url))
            if ready is not None:
                await ready(worker)
            await worker.run(stop)
    finally:
        for _, keep in children:
            keep.close()
        for process, _ in children:
            await asyncio.to_thread(process.join, 60)
            if process.is_alive():
                process.terminate()
                await asyncio.to_thread(process.join, 10)


def _dispatch_process(settings_data: dict[str, Any], url: str, parent_alive: Any) -> None:
    """Entry point of a process beside the main one (spawned: logging is configured here)."""
    import signal

    from lovekey.logs import configure_logging

    settings = Settings.model_validate(settings_data)
    configure_logging(settings.log_level, settings.log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent decides
    asyncio.run(_dispatch_main(settings, url, parent_alive))


async def _dispatch_main(settings: Settings, url: str, parent_alive: Any) -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def parent_gone() -> None:
        while not stop.is_set():
            if parent_alive.poll(0.5):  # readable means EOF: the parent has gone
                return

    async def watch_parent() -> None:
        await asyncio.to_thread(parent_gone)
        stop.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(watch_parent(), name="alerts-parent-watch")
        # it escalates too (passes share due alerts through SKIP LOCKED): a burst's escalation
        # then runs on every core instead of queueing behind one process's dispatchers
        async with AlertWorker(settings, url, housekeeping=False) as worker:
            await worker.run(stop)
        stop.set()
