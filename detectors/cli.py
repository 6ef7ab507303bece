"""`lovekey detect` and `lovekey evaluate`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lovekey.config import Settings
from lovekey.errors import LoveKeyError

log = logging.getLogger(__name__)

DEFAULT_START = "2026-03-01T00:00:00+08:00"


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

    p = subparsers.add_parser(
        "evaluate", help="replay history through the detectors and score them against the truth"
    )
    p.add_argument(
        "--truth",
        type=Path,
        metavar="FILE",
        help="ground truth (JSON Lines); without --residents the history is read from the database",
    )
    p.add_argument("--residents", type=int, help="simulate this many residents in-process")
    p.add_argument("--days", type=float, default=30.0, help="days scored (default 30)")
    p.add_argument(
        "--warmup-days",
        type=float,
        default=28.0,
        help="simulated days before the scored ones, for learning (default 28)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scenario", type=Path, help="simulator scenario file (default scenario)")
    p.add_argument("--start", default=DEFAULT_START, help="start of the simulation (RFC 3339)")
    p.add_argument("--step-min", type=int, default=15, help="minutes between sweeps (default 15)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--alerts-out", type=Path, metavar="FILE", help="also write every alert raised (JSON Lines)"
    )
    p.set_defaults(handler=_evaluate)


def _parse_time(text: str, settings: Settings) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise LoveKeyError(f"not an RFC 3339 time: {text!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=settings.zone)


# -- detect -----------------------------------------------------------------------------------


def _detect(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.detectors.runner import Shard
    from lovekey.storage import database_url

    try:
        shard = Shard.parse(args.shard)
    except ValueError as exc:
        raise LoveKeyError(str(exc)) from exc
    if args.at and not args.once:
        raise LoveKeyError("--at goes with --once")
    with database_url(settings) as url:
        if args.once:
            at = _parse_time(args.at, settings) if args.at else datetime.now(UTC)
            return _once(url, settings, shard, at)
        return _run(url, settings, shard)


def _once(url: str, settings: Settings, shard: Any, at: datetime) -> int:
    from lovekey.detectors.runner import DetectorService, EventWatcher
    from lovekey.storage import connect

    with connect(url) as conn:
        service = DetectorService(settings, shard=shard)
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
    """Until SIGTERM/SIGINT: sweeps on a schedule, life-safety events at once (detectors.loop)."""
    from lovekey.detectors.loop import run_detector

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run_detector(settings, url, stop, shard=shard)
    return 0


# -- evaluate ---------------------------------------------------------------------------------


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.detectors.evaluate import alerts_json, render, replay, score

    st = settings.detect
    started = time.perf_counter()
    if args.residents:
        from lovekey.detectors.sources import from_world
        from lovekey.simulator import Scenario, World

        start = _parse_time(args.start, settings)
        world = World.build(
            Scenario.load(args.scenario),
            residents=args.residents,
            seed=args.seed,
            start=start,
            days=args.warmup_days + args.days,
        )
        source = from_world(world, st)
        scored_from = source.data.start_s + int(args.warmup_days * 86400)
    elif args.truth:
        from lovekey.detectors.sources import from_database
        from lovekey.storage import connect, database_url

        with database_url(settings) as url, connect(url) as conn:
            source = from_database(conn, st, args.truth)
        scored_from = source.data.start_s + int(args.warmup_days * 86400)
        if scored_from >= source.data.end_s:
            scored_from = source.data.start_s
    else:
        raise LoveKeyError("give --residents N (simulate in-process) or --truth FILE")
    offset = settings.zone.utcoffset(datetime.fromtimestamp(source.data.start_s, UTC))
    offset_s = int(offset.total_seconds()) if offset is not None else 0
    built = time.perf_counter()
    alerts = replay(
        source.data,
        st,
        step_s=args.step_min * 60,
        utc_offset_s=offset_s,
        away_default_s=int(settings.ingest.away_default_h * 3600),
    )
    replayed = time.perf_counter()
    report = score(
        alerts,
        source.truth,
        households=source.households,
        start_s=scored_from,
        end_s=source.data.end_s,
        report_interval_s=source.report_interval_s,
        gateway_of=source.gateway_of,
        settings=st,
        utc_offset_s=offset_s,
        away_presses=[
            (e.resident_id, e.ts_s) for e in source.data.events if e.type == "away" and e.resident_id
        ],
    )
    report["run"] = {
        "residents": args.residents,
        "seed": args.seed if args.residents else None,
        "warmup_days": args.warmup_days,
        "readings": len(source.data.ts_s),
        "sweep_every_min": args.step_min,
        "history_s": round(built - started, 1),
        "replay_s": round(replayed - built, 1),
    }
    if args.alerts_out:
        with args.alerts_out.open("w", encoding="utf-8") as fh:
            for row in alerts_json(alerts):
                fh.write(json.dumps(row) + "\n")
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(render(report))
        run = report["run"]
        print(f"({run['readings']:,} readings; history {run['history_s']} s, replay {run['replay_s']} s)")
    return 0
