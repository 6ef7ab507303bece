"""`lovekey migrate` and `lovekey maintain`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from lovekey.config import Settings

log = logging.getLogger(__name__)


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("migrate", help="create or update the database schema")
    p.set_defaults(handler=_migrate)

    p = subparsers.add_parser("maintain", help="create partitions ahead and apply retention (on a schedule)")
    p.add_argument("--once", action="store_true", help="run one pass and exit")
    p.set_defaults(handler=_maintain)

    p = subparsers.add_parser("export", help="export data for analysts and auditors")
    what = p.add_subparsers(dest="what", required=True)
    r = what.add_parser("readings", help="water readings of a period, hot and packed alike")
    r.add_argument("--from", dest="first", required=True, type=date.fromisoformat, help="first UTC day")
    r.add_argument("--to", dest="last", required=True, type=date.fromisoformat, help="last UTC day, included")
    r.add_argument("--community", help="only this community's meters")
    r.add_argument("--format", dest="fmt", choices=["csv", "parquet"], default="csv")
    r.add_argument("--out", required=True, type=Path, help="file to write")
    r.set_defaults(handler=_export_readings)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.storage import connect, database_url, migrate

    with database_url(settings) as url, connect(url, autocommit=True) as conn:
        result = migrate(conn, settings.storage)
    applied = ", ".join(result.applied) or "nothing to apply"
    print(f"layout: {result.layout.value}; applied: {applied}")
    return 0


def _maintain(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.signals import stop_on_signals
    from lovekey.storage import connect, database_url, run_maintenance

    stop = threading.Event()
    with database_url(settings) as url:

        def job() -> None:
            with connect(url, autocommit=True) as conn:
                # packing a backlog can take minutes: it stops between two batches when asked
                report = run_maintenance(conn, settings.storage, stop=stop.is_set)
            packing = report.packing
            packed = f"{packing.readings} readings ({packing.mode})" if packing else "nothing"
            print(
                f"layout: {report.layout.value}; created {len(report.created)} partition(s);"
                f" dropped {len(report.dropped)}; compression: {report.compression}; packed {packed}",
                flush=True,
            )

        with stop_on_signals(stop):
            job()  # the first pass here: a database that cannot be maintained fails the command
            if args.once or stop.is_set():
                return 0
            asyncio.run(_maintain_until(stop, settings, job))
    return 0


async def _maintain_until(stop: threading.Event, settings: Settings, job: Callable[[], None]) -> None:
    """Run `job` every maintenance interval (on a thread) until `stop` is set."""
    from lovekey.schedule import Periodic, scheduled

    every = settings.storage.maintenance_interval_s
    async with scheduled(Periodic("maintenance", every, job, at_once=False), timezone=settings.timezone):
        log.info("maintenance scheduled every %ss", every)
        await asyncio.to_thread(stop.wait)


def _export_readings(args: argparse.Namespace, settings: Settings) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from lovekey.storage import connect, database_url
    from lovekey.storage.export import export_readings

    days = (args.last - args.first).days + 1
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with (
        database_url(settings) as url,
        connect(url, autocommit=True) as conn,
        Progress(*columns, transient=True) as bar,
    ):
        task = bar.add_task("days", total=days)
        seen: set[date] = set()

        def progress(day: date, rows: int) -> None:
            if day not in seen:
                seen.add(day)
                bar.update(task, completed=(day - args.first).days)
            bar.update(task, description=f"{day} {rows:,} readings")

        count = export_readings(
            conn,
            args.out,
            first=args.first,
            last=args.last,
            fmt=args.fmt,
            community=args.community,
            progress=progress,
        )
        bar.update(task, completed=days)
    print(f"exported {count:,} readings of {days} day(s) to {args.out}")
    return 0
