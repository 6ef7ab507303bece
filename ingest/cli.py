"""`lovekey ingest`: run the MQTT ingester until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import threading
from contextlib import ExitStack
from typing import Any

from lovekey.config import Settings

log = logging.getLogger(__name__)


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="store MQTT readings and events in the database",
        description="Subscribe to the gateways' topics and store every reading once. Without"
        " LOVEKEY_MQTT_URL a local broker is started; without LOVEKEY_DATABASE_URL the"
        " embedded PostgreSQL. The schema is migrated on start.",
    )
    p.add_argument(
        "--shared",
        metavar="GROUP",
        help="subscribe through $share/GROUP/... so several ingesters split one stream",
    )
    p.add_argument(
        "--client-id",
        metavar="ID",
        help="MQTT client id (default: mqtt.client_id, plus -GROUP-HOSTNAME with --shared);"
        " keep it stable across restarts so the broker keeps the session",
    )
    p.add_argument(
        "--retire",
        action="store_true",
        help="with --shared and the --client-id of a member that is gone for good: take over"
        " its session, write what the broker queued for it, end the session and exit",
    )
    p.set_defaults(handler=_ingest)

    b = subparsers.add_parser(
        "bridge",
        help="read sources on their own brokers and republish them on LoveKey's",
        description="For each [[sources]] entry with a broker_url (ChirpStack, The Things Stack,"
        " Zigbee2MQTT on a broker of their own), subscribe there and republish every message"
        " on LoveKey's broker, where `lovekey ingest` reads it (docs/sources/README.md).",
    )
    b.add_argument(
        "--source", action="append", default=[], metavar="NAME", help="only this source (repeatable)"
    )
    b.set_defaults(handler=_bridge)


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.ingest.broker import broker_url
    from lovekey.ingest.ingester import Ingester
    from lovekey.signals import stop_on_signals
    from lovekey.storage import connect, database_url, migrate

    stop = threading.Event()
    with ExitStack() as stack:
        stack.enter_context(stop_on_signals(stop))
        db_url = stack.enter_context(database_url(settings))
        if not _wait_for_database(db_url, stop):
            return 0  # stopped while waiting: nothing was received, nothing to write
        with connect(db_url, autocommit=True) as conn:
            migrate(conn, settings.storage)
        mqtt_url = stack.enter_context(broker_url(settings))
        ingester = stack.enter_context(
            Ingester(
                settings,
                db_url,
                mqtt_url,
                shared_group=args.shared,
                client_id=args.client_id,
                retire=args.retire,
            )
        )
        ingester.run(stop)
        log.info("ingest stopping")
    return 0


def _wait_for_database(db_url: str, stop: threading.Event) -> bool:
    """Connect once the database answers, retrying with `Backoff`: an ingester started
    with (or before) a database that is down waits for it, as it does for one that goes
    away mid-stream, instead of exiting. Logs once that it waits. False if stopped first."""
    from lovekey.errors import StorageError
    from lovekey.retry import Backoff
    from lovekey.storage import connect

    backoff = Backoff(first_s=0.5, max_s=15.0)
    while not stop.is_set():
        try:
            with connect(db_url, autocommit=True):
                pass
        except StorageError as exc:
            if backoff.failures == 0:
                log.warning("waiting for the database: %s", exc)
            stop.wait(backoff.next_delay_s())
            continue
        if backoff.failures:
            log.info("the database answers; starting")
        return True
    return False


def _bridge(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import signal

    from lovekey.ingest.bridge import bridged_sources, run_bridges
    from lovekey.ingest.broker import broker_url

    if not bridged_sources(settings, args.source):
        log.error("no [[sources]] entry has a broker_url: nothing to bridge")
        return 1

    async def main(url: str) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_bridges(settings, url, stop, args.source)

    with broker_url(settings) as url:
        asyncio.run(main(url))
    return 0
