"""`lovekey detect`: the detectors on a schedule, or one sweep with `--once`."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from datetime import UTC, datetime
from typing import Any

from lovekey.config import Settings
from lovekey.errors import LoveKeyError

log = logging.getLogger(__name__)


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "detect", help="run the detectors: a sweep every detect.sweep_interval_s, events at once"
    )
    p.add_argument("--once", action="store_true", help="run one sweep and exit")
    p.add_argument("--at", metavar="TIME", help="with --once: sweep as of this time (RFC 3339)")
    p.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="judge only meters whose id hashes to shard I of N (default 0/1)",
    )
    p.set_defaults(handler=_detect)


# -- detect -----------------------------------------------------------------------------------


def _detect(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.detectors.service import DetectorShard
    from lovekey.storage import database_url

    try:
        shard = DetectorShard.parse(args.shard)
    except ValueError as exc:
        raise LoveKeyError(str(exc)) from exc
    if args.at and not args.once:
        raise LoveKeyError("--at goes with --once")
    with database_url(settings) as url:
        if args.once:
            at = settings.parse_time(args.at) if args.at else datetime.now(UTC)
            return _once(url, settings, shard, at, replay=args.at is not None)
        return _run(url, settings, shard)


def _once(url: str, settings: Settings, shard: Any, at: datetime, *, replay: bool = False) -> int:
    """One sweep as of `at`; `replay`: `at` was given, data received after it is history."""
    from lovekey.detectors.event_watcher import EventWatcher
    from lovekey.detectors.service import DetectorService
    from lovekey.storage import connect

    with connect(url) as conn:
        service = DetectorService(settings, shard=shard, replay=replay)
        service.start(conn, at)
        conn.commit()
        changes = service.sweep(conn, at)
        conn.commit()
        watcher = EventWatcher(settings, shard=shard)
        watcher.start(conn, at, lookback_s=settings.detect.ring_hours * 3600)
        raised = watcher.poll(conn, at)
        conn.commit()
    for c in changes:
        print(f"{c.action} {c.kind} {c.subject} since {datetime.fromtimestamp(c.since_s, UTC).isoformat()}")
    for a in raised:
        print(f"raise {a.kind} {a.subject} since {a.since.isoformat()}")
    print(
        f"sweep at {at.isoformat()}: {sum(c.action == 'raise' for c in changes) + len(raised)}"
        f" raised, {sum(c.action == 'clear' for c in changes)} cleared"
    )
    return 0


def _run(url: str, settings: Settings, shard: Any) -> int:
    """Until SIGTERM/SIGINT: sweeps on a schedule, life-safety events at once (detectors.daemon)."""
    from lovekey.detectors.daemon import run_detector

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run_detector(settings, url, stop, shard=shard)
    return 0
