"""`lovekey migrate` and `lovekey maintain`."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from lovekey.config import Settings

log = logging.getLogger(__name__)


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("migrate", help="create or update the database schema")
    p.set_defaults(handler=_migrate)

    p = subparsers.add_parser("maintain", help="create partitions ahead and apply retention (on a schedule)")
    p.add_argument("--once", action="store_true", help="run one pass and exit")
    p.set_defaults(handler=_maintain)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.storage import connect, database_url, migrate

    with database_url(settings) as url, connect(url, autocommit=True) as conn:
        result = migrate(conn, settings.storage)
    applied = ", ".join(result.applied) or "nothing to apply"
    print(f"layout: {result.layout.value}; applied: {applied}")
    return 0


def _maintain(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.storage import connect, database_url, run_maintenance

    with database_url(settings) as url:

        def job() -> None:
            with connect(url, autocommit=True) as conn:
                report = run_maintenance(conn, settings.storage)
            print(
                f"layout: {report.layout.value}; created {len(report.created)} partition(s);"
                f" dropped {len(report.dropped)}; compression: {report.compression}",
                flush=True,
            )

        job()
        if args.once:
            return 0
        from apscheduler.schedulers.blocking import BlockingScheduler

        scheduler = BlockingScheduler(timezone=settings.timezone)
        scheduler.add_job(
            job,
            "interval",
            seconds=settings.storage.maintenance_interval_s,
            id="maintenance",
            max_instances=1,
            coalesce=True,
        )
        log.info("maintenance scheduled every %ss", settings.storage.maintenance_interval_s)
        scheduler.start()
    return 0
