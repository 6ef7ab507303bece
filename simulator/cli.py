"""`lovekey simulate`: a district's traffic over MQTT, its registry and its ground truth."""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lovekey.config import Settings
from lovekey.errors import SimulatorError
from lovekey.redact import redact_url
from lovekey.signals import interrupt_on_signals

if TYPE_CHECKING:
    from lovekey.simulator import Scenario, World
    from lovekey.simulator.publish_world import Job, Progress

log = logging.getLogger(__name__)

# simulator.scenario.REPORTING_MODES, spelled out so that `lovekey --help` need not import numpy
_MODES = ("minute", "quarter_hour", "hourly_batch", "four_daily", "daily")


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="publish a simulated district (households, meters, incidents) over MQTT",
        description="Simulate elderly residents living alone, their water meters, smoke and gas"
        " sensors and buttons, with incidents whose ground truth is written out, and publish"
        " the traffic to the configured broker (QoS 1, MQTT 5). Timing: --speed 1 is real"
        " time from now; --speed 3600 replays the last --days at an hour a second; no"
        " --speed backfills the last --days as fast as the broker takes it.",
    )
    p.add_argument(
        "--residents",
        type=_positive_int,
        default=100,
        metavar="N",
        help="residents living alone (default 100; a district is about 40000)",
    )
    p.add_argument("--seed", type=int, default=1, help="same seed, same traffic, byte for byte")
    p.add_argument(
        "--scenario", type=Path, metavar="FILE", help="TOML laid over simulator/scenarios/default.toml"
    )
    p.add_argument(
        "--days", type=_positive_float, default=1.0, metavar="D", help="simulated span in days (default 1)"
    )
    p.add_argument(
        "--start",
        type=_aware_time,
        metavar="TIME",
        help="RFC 3339 start (default: now for --speed 1, else now minus --days)",
    )
    p.add_argument(
        "--speed",
        type=_positive_float,
        metavar="X",
        help="simulated seconds per second (1 = real time); default: no pacing",
    )
    p.add_argument("--max-rate", type=_positive_float, metavar="R", help="at most R messages/s")
    p.add_argument(
        "--load",
        action="store_true",
        help="load test: ignore --speed/--max-rate, publish as fast as possible with"
        " one process per core, and report the rate",
    )
    p.add_argument(
        "--processes",
        type=_positive_int,
        metavar="N",
        help="publishing processes, each with its own connection and a share of the"
        " gateways (default 1, or one per core with --load)",
    )
    p.add_argument(
        "--connections",
        type=_positive_int,
        default=8,
        metavar="N",
        help="connections per process, each gateway through one of them (default 8)",
    )
    p.add_argument(
        "--max-inflight",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="unacknowledged QoS 1 messages per connection (default 1000, and never"
        " more than the broker's Receive Maximum)",
    )
    p.add_argument(
        "--door-share",
        type=_share,
        default=0.5,
        metavar="SHARE",
        help="households with a door reminder (kind door_sensor; default 0.5, as `lovekey"
        " evaluate --door-share`)",
    )
    p.add_argument(
        "--reporting", choices=_MODES, help="every meter reports this way (default: the scenario's mix)"
    )
    p.add_argument(
        "--registry-out",
        type=Path,
        metavar="FILE.csv",
        help="write the registry for `lovekey devices import`",
    )
    p.add_argument(
        "--truth-out", type=Path, metavar="FILE.jsonl", help="write the ground truth, one incident per line"
    )
    p.add_argument(
        "--no-publish", action="store_true", help="only write the files asked for; do not connect to a broker"
    )
    p.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.simulator import Scenario

    scenario = Scenario.load(args.scenario)
    if args.reporting:
        scenario = scenario.with_overrides({"meters": {"mode_share": {args.reporting: 1.0}}})
    now = datetime.now(settings.zone)
    speed = None if args.load else args.speed
    if args.start is not None:
        start = args.start
    elif speed == 1:
        start = now
    else:
        start = now - timedelta(days=args.days)
    if (
        speed is not None
        and speed > 1
        and start + timedelta(days=args.days) > now + timedelta(seconds=settings.ingest.future_tolerance_s)
    ):
        log.warning(
            "an accelerated run that ends after now sends timestamps from the future;"
            " the ingester rejects those (future_timestamp)"
        )

    from lovekey.simulator import World

    world = World.build(
        scenario,
        residents=args.residents,
        seed=args.seed,
        start=start,
        days=args.days,
        door_share=args.door_share,
    )
    if args.registry_out:
        write_registry(world, args.registry_out)
        print(
            f"registry: {args.registry_out} ({len(world.population.device_ids)} devices"
            f" of {args.residents} residents)"
        )
    if args.truth_out:
        count = write_truth(world, args.truth_out)
        print(f"ground truth: {args.truth_out} ({count} incident(s))")
    if args.no_publish:
        return 0
    if not settings.mqtt_url:
        raise SimulatorError(
            "no broker configured: set LOVEKEY_MQTT_URL (or mqtt_url in the config file) to the"
            " broker `lovekey ingest` subscribes to; an ingester started without one runs a"
            " private broker and logs its address"
        )
    return _publish(args, settings, scenario, world, speed)


def _publish(
    args: argparse.Namespace,
    settings: Settings,
    scenario: Scenario,
    world: World,
    speed: float | None,
) -> int:
    from lovekey.ingest.mqtt import TlsFiles
    from lovekey.simulator.publish import Pacing
    from lovekey.simulator.publish_world import Job, publish_world

    processes = args.processes or (min(2, os.cpu_count() or 1) if args.load else 1)
    job = Job(
        scenario=scenario,
        residents=args.residents,
        seed=args.seed,
        start=world.start,
        days=args.days,
        mqtt_url=settings.mqtt_url or "",
        topic_prefix=settings.mqtt.topic_prefix,
        max_inflight=args.max_inflight,
        lanes=args.connections,
        tls_files=TlsFiles.from_settings(settings.mqtt),
        door_share=args.door_share,
        pacing=Pacing(
            speed=speed,
            max_rate=None if args.load else args.max_rate,
            sim_origin=float(world.start_s),
            wall_origin=time.time(),
        ),
    )
    log.info(
        "simulate: publishing %d residents' traffic to %s with %d process(es); Ctrl+C stops",
        args.residents,
        redact_url(job.mqtt_url),
        processes,
    )
    try:
        with interrupt_on_signals(), _progress_display(job, world) as show:
            result = publish_world(job, processes=processes, on_progress=show)
    except KeyboardInterrupt:
        # a stop, not a failure: what was published is acknowledged (BrokerPublisher waits)
        print("simulate: stopped")
        return 0
    print(
        f"published {result.published} messages in {result.elapsed_s:.1f} s"
        f" ({result.rate:,.0f} messages/s, {processes} process(es)),"
        f" simulated {world.start.isoformat()} .. {world.end.isoformat()}"
    )
    return 0


class _NoDisplay:
    def __enter__(self) -> Any:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress_display(job: Job, world: World) -> Any:
    """A rich progress bar on a terminal (simulated clock and messages/s); nothing elsewhere."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        return _NoDisplay()
    return _RichDisplay(console, world)


class _RichDisplay:
    def __init__(self, console: Any, world: World) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.world = world
        self.progress = Progress(
            TextColumn("[bold]simulate"),
            BarColumn(),
            TextColumn("{task.fields[clock]}"),
            TextColumn("{task.fields[sent]} msgs"),
            TextColumn("{task.fields[rate]} msg/s"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task(
            "simulate", total=world.end_s - world.start_s, clock="", sent="0", rate="0"
        )

    def __enter__(self) -> Any:
        self.progress.start()
        return self.update

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, progress: Progress) -> None:
        from lovekey.simulator.incidents import local_datetime

        done = max(0.0, progress.simulated_ts - self.world.start_s) if progress.simulated_ts else 0
        clock = local_datetime(progress.simulated_ts).strftime("%Y-%m-%d %H:%M") if done else ""
        self.progress.update(
            self.task,
            completed=done,
            clock=clock,
            sent=f"{progress.published:,}",
            rate=f"{progress.rate:,.0f}",
        )


def write_registry(world: World, path: Path) -> None:
    """The registry CSV (full form of docs/registry.md)."""
    rows = world.registry_rows()
    with _open_out(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_truth(world: World, path: Path) -> int:
    """The ground truth as JSON Lines; returns the number of incidents."""
    import orjson

    truth = world.truth()
    with _open_out(path) as fh:
        for incident in truth:
            fh.write(orjson.dumps(incident.to_json()).decode() + "\n")
    return len(truth)


def _open_out(path: Path) -> Any:
    if str(path) == "-":
        return _Unclosed(sys.stdout)
    try:
        return path.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise SimulatorError(f"cannot write {path}: {exc}") from exc


class _Unclosed:
    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __enter__(self) -> Any:
        return self.stream

    def __exit__(self, *exc: object) -> None:
        self.stream.flush()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _aware_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from exc
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("give the UTC offset, e.g. 2024-05-01T00:00:00+08:00")
    return value
