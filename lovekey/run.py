"""`lovekey run`: ingest, detectors, the alert worker, the console and maintenance in one process
(and the HTTP push receiver, when `[[sources]]` name a CTWing, OneNET or Huawei source, and
the bridge, when a source has a broker of its own).

For a district on one machine. Each part is still its own command for scale-out
(`lovekey ingest --shared`, `lovekey detect --shard`, `lovekey alerts worker`, `lovekey serve`).

Threads host the synchronous parts (the paho ingester, the detector); the asyncio loop hosts
the alert worker, the console and maintenance. Periodic work (maintenance here, the detector's
sweeps, the worker's escalation and digests) is declared through `lovekey.schedule`. One stop
event ends them all, and any part that fails stops the rest: a half-running pipeline is worse
than a stopped one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lovekey.config import Settings
from lovekey.signals import stop_on_signals

log = logging.getLogger(__name__)

PARTS = ("ingest", "detect", "alerts", "console", "maintain", "receive", "bridge")


@dataclass(frozen=True, slots=True)
class Endpoints:
    database_url: str
    mqtt_url: str
    console_url: str


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run", help="ingest + detectors + alert worker + console + maintenance in one process"
    )
    p.add_argument(
        "--without",
        action="append",
        default=[],
        choices=PARTS,
        metavar="PART",
        help=f"leave a part out (repeatable): {', '.join(PARTS)}",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    parts = tuple(p for p in PARTS if p not in args.without)
    with ExitStack() as stack:
        db_url, mqtt_url = open_services(stack, settings, need_broker="ingest" in parts or "bridge" in parts)
        stop = threading.Event()
        stack.enter_context(stop_on_signals(stop))
        asyncio.run(run_pipeline(settings, db_url, mqtt_url, stop=stop, parts=parts))
    return 0


def open_services(stack: ExitStack, settings: Settings, *, need_broker: bool = True) -> tuple[str, str]:
    """The database (embedded when none is configured, migrated) and the broker URLs."""
    from lovekey.ingest.broker import broker_url
    from lovekey.storage import connect, database_url, migrate

    db_url = stack.enter_context(database_url(settings))
    with connect(db_url, autocommit=True) as conn:
        migrate(conn, settings.storage)
    mqtt_url = stack.enter_context(broker_url(settings)) if need_broker else ""
    return db_url, mqtt_url


async def run_pipeline(
    settings: Settings,
    db_url: str,
    mqtt_url: str,
    *,
    stop: threading.Event,
    parts: tuple[str, ...] = PARTS,
    extra: dict[str, Callable[[asyncio.Event], Awaitable[None]]] | None = None,
) -> None:
    """Run the chosen parts until `stop` is set or one of them fails (then re-raise)."""
    astop = asyncio.Event()
    jobs: dict[str, Callable[[], Awaitable[None]]] = {}
    if "ingest" in parts:
        jobs["ingest"] = lambda: in_thread("lovekey-ingest", _ingest, settings, db_url, mqtt_url, stop)
    if "detect" in parts:
        jobs["detect"] = lambda: in_thread("lovekey-detect", _detect, settings, db_url, stop)
    if "alerts" in parts:
        jobs["alerts"] = lambda: _alerts(settings, db_url, astop)
    if "console" in parts:
        jobs["console"] = lambda: _console(settings, db_url, astop)
    if "maintain" in parts:
        jobs["maintain"] = lambda: _maintain(settings, db_url, astop)
    # the push receiver runs when there is something to receive: an HTTP source configured
    if "receive" in parts and any(source.is_http for source in settings.sources):
        jobs["receive"] = lambda: _receive(settings, db_url, astop)
    # and the bridge when a source has a broker of its own (`lovekey bridge` on its own)
    if "bridge" in parts and mqtt_url and _bridged(settings):
        jobs["bridge"] = lambda: _bridge(settings, mqtt_url, astop)
    for name, part in (extra or {}).items():
        jobs[name] = functools.partial(part, astop)

    async def guarded(name: str, job: Callable[[], Awaitable[None]]) -> None:
        try:
            await job()
        finally:
            if not stop.is_set():
                log.error("%s ended; stopping the others", name)
            stop.set()
            astop.set()

    # the thread-side event (signals, threads) and the loop-side event move together
    watcher = asyncio.create_task(in_thread("lovekey-stop", stop.wait), name="stop-watch")
    watcher.add_done_callback(lambda _: astop.set())
    try:
        async with asyncio.TaskGroup() as group:
            for name, job in jobs.items():
                group.create_task(guarded(name, job), name=name)
            log.info("running: %s", ", ".join(jobs))
    finally:
        stop.set()
        astop.set()
        await watcher


async def in_thread(name: str, function: Callable[..., object], *args: object) -> None:
    """Run a long blocking `function` on a thread of its own (never the shared executor,
    which the console and the alert worker need for their short calls) and wait for it.

    If this wait is cancelled, the function is expected to end on the stop event its caller
    sets; the thread is joined before this returns either way.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def target() -> None:
        error: BaseException | None = None
        try:
            function(*args)
        except BaseException as exc:
            error = exc
        loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=target, name=name).start()
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        # the caller's stop event ends the function: wait for that, leave no thread behind
        with contextlib.suppress(Exception):
            await done
        raise


def _ingest(settings: Settings, db_url: str, mqtt_url: str, stop: threading.Event) -> None:
    from lovekey.ingest import Ingester

    with Ingester(settings, db_url, mqtt_url) as ingester:
        ingester.run(stop)


def _detect(settings: Settings, db_url: str, stop: threading.Event) -> None:
    from lovekey.detectors.daemon import run_detector

    run_detector(settings, db_url, stop)


async def _alerts(settings: Settings, db_url: str, stop: asyncio.Event) -> None:
    from lovekey.alerts.worker import run_worker

    await run_worker(settings, db_url, stop)


class _HostedServer:
    """uvicorn without its own signal handling: `lovekey run` owns the signals."""

    def __init__(self, app: Any, settings: Settings) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(
            app,
            host=settings.web.host,
            port=settings.web.port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        self.server = Server(config)

    async def serve(self, stop: asyncio.Event) -> None:
        async def stopper() -> None:
            await stop.wait()
            self.server.should_exit = True

        task = asyncio.create_task(stopper(), name="console-stopper")
        try:
            await self.server.serve()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _console(settings: Settings, db_url: str, stop: asyncio.Event) -> None:
    from lovekey.web.app import create_app

    await _HostedServer(create_app(settings, db_url), settings).serve(stop)


async def _receive(settings: Settings, db_url: str, stop: asyncio.Event) -> None:
    from lovekey.ingest.http_receiver import run_receiver

    await run_receiver(settings, db_url, stop)


def _bridged(settings: Settings) -> bool:
    from lovekey.ingest.bridge import bridged_sources

    return bool(bridged_sources(settings))


async def _bridge(settings: Settings, mqtt_url: str, stop: asyncio.Event) -> None:
    from lovekey.ingest.bridge import run_bridges

    await run_bridges(settings, mqtt_url, stop)


async def _maintain(settings: Settings, db_url: str, stop: asyncio.Event) -> None:
    from lovekey.schedule import Periodic, scheduled
    from lovekey.storage import connect, run_maintenance

    def once() -> None:
        with connect(db_url, autocommit=True) as conn:
            # packing a backlog can take minutes: it stops between two batches when asked
            report = run_maintenance(conn, settings.storage, now=datetime.now(UTC), stop=stop.is_set)
        log.info("maintenance created=%d dropped=%d", len(report.created), len(report.dropped))

    # the first pass here, as `lovekey maintain` does: a database that cannot be maintained
    # stops the pipeline at start; a later pass that fails is logged and tried again
    await asyncio.to_thread(once)
    every = settings.storage.maintenance_interval_s
    async with scheduled(Periodic("maintenance", every, once, at_once=False), timezone=settings.timezone):
        await stop.wait()
