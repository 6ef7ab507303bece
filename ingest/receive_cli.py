"""`lovekey receive`: serve the HTTP push sources (CTWing, OneNET, Huawei) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from contextlib import ExitStack
from typing import Any

from lovekey.config import Settings

log = logging.getLogger(__name__)


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "receive",
        help="receive readings that NB-IoT platforms (CTWing, OneNET, Huawei) push over HTTP",
        description="Serve the [[sources]] of kind ctwing, onenet and huawei on receive.host:"
        "receive.port, answering each push only once its readings are committed. Without"
        " LOVEKEY_DATABASE_URL the embedded PostgreSQL is started. See docs/sources/.",
    )
    p.add_argument("--host", help="address to listen on (default: receive.host)")
    p.add_argument("--port", type=int, help="port to listen on (default: receive.port; 0: any free port)")
    p.set_defaults(handler=_receive)


def _receive(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.ingest.cli import _wait_for_database
    from lovekey.ingest.http_receiver import routes
    from lovekey.signals import stop_on_signals
    from lovekey.storage import connect, database_url, migrate

    routes(settings)  # a configuration without HTTP sources, or a bad one, fails before anything starts
    stop = threading.Event()
    with ExitStack() as stack:
        stack.enter_context(stop_on_signals(stop))
        db_url = stack.enter_context(database_url(settings))
        if not _wait_for_database(db_url, stop):
            return 0
        with connect(db_url, autocommit=True) as conn:
            migrate(conn, settings.storage)
        asyncio.run(_serve(settings, db_url, stop, args.host, args.port))
        log.info("receive stopped")
    return 0


async def _serve(
    settings: Settings, db_url: str, stop: threading.Event, host: str | None, port: int | None
) -> None:
    from lovekey.ingest.http_receiver import run_receiver

    astop = asyncio.Event()
    # the signal handler sets the thread-side event; the loop-side one follows it
    watcher = asyncio.create_task(asyncio.to_thread(stop.wait), name="receive-stop-watch")
    watcher.add_done_callback(lambda _: astop.set())
    try:
        await run_receiver(settings, db_url, astop, host=host, port=port)
    finally:
        stop.set()
        await watcher
