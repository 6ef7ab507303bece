"""`lovekey bench ingest`: readings through the real broker into the real database.

A district's meters (40,000 by default) are registered in a scratch database; `lovekey
ingest` runs as its own process; this process publishes a mix of single readings and
batches at QoS 1 (in-flight capped) and measures:

- stored rows/s, from the ingester's own commit counters (its metrics endpoint);
- publish-to-commit latency, p50/p99: one message in `--probe-every` is a probe, and a
  poller looks for its reading in the database every 20 ms (so figures include up to
  20 ms of polling);
- the ingester's peak resident memory (VmHWM).

Phases: a fixed rate (`--rate`, default 5,000 readings/s), then as fast as the publisher
goes (`max`), then optionally the drain of a backlog published while the ingester was
stopped (`--backlog`).

`--source chirpstack|wmbusmeters|cjt188` sends one reading a message in that source's format
(bench/support/source_load.py) to an ingester configured with the matching `[[sources]]`
entry; `--mix 1,0,0` does the same in the native format. `--baseline` also drains the same
backlog of native single readings with a bare paho -> staged COPY pipeline
(bench/support/bare_pipeline.py), the yardstick of this machine in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import psycopg

from lovekey.bench.support.bare_pipeline import BarePipeline
from lovekey.bench.support.ingester_processes import IngesterProcess, Members
from lovekey.bench.support.publisher import Publisher, wait_for
from lovekey.bench.support.seeding import register_devices
from lovekey.bench.support.source_load import SOURCE_KINDS, SourceLoad, register_source_devices, source_entry
from lovekey.config import Settings
from lovekey.errors import LoveKeyError
from lovekey.ingest.broker import find_mosquitto, start_mosquitto
from lovekey.storage import connect, database_url
from lovekey.storage.scratch import scratch_database

# message shapes: (readings per message, minutes between them) — a minute meter's single
# reading, an hourly NB-IoT report of 15-minute frozen values, a daily report of hours
SHAPES = ((1, 1), (4, 15), (24, 60))
POLL_S = 0.02


def main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="lovekey bench ingest", description=__doc__)
    parser.add_argument("--devices", type=int, default=40_000)
    parser.add_argument("--gateways", type=int, default=200)
    parser.add_argument(
        "--mix",
        default="0.6,0.3,0.1",
        help="share of messages that are singles, 4-reading and 24-reading batches (default 0.6,0.3,0.1)",
    )
    parser.add_argument("--rate", type=float, default=5000.0, help="readings/s of the fixed phase")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="also time the drain of this many readings published while the ingester is stopped",
    )
    parser.add_argument(
        "--ingesters", type=int, default=1, help="run this many ingesters on one shared subscription"
    )
    parser.add_argument("--max-inflight", type=int, default=2000)
    parser.add_argument("--probe-every", type=int, default=20)
    parser.add_argument("--phases", default="fixed,max", help="which of fixed,max to run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--source",
        choices=("native", *SOURCE_KINDS),
        default="native",
        help="message format: native (the mix above) or one reading a message from a configured source",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="with --backlog: also drain it with a bare paho -> COPY pipeline (native single readings)",
    )
    parser.add_argument(
        "--profile", metavar="SVG", help="record the ingester with py-spy into this flame graph"
    )
    args = parser.parse_args(argv)
    mix = np.array([float(x) for x in args.mix.split(",")])
    if mix.size != len(SHAPES) or mix.min() < 0 or mix.sum() <= 0:
        parser.error("--mix takes three non-negative shares")

    with ExitStack() as stack:
        server_url = stack.enter_context(database_url(settings))
        db = stack.enter_context(
            scratch_database(server_url, "ingest", storage=settings.storage, keep=args.keep)
        )
        mqtt_url = settings.mqtt_url
        if mqtt_url is None:
            binary = find_mosquitto()
            if binary is None:
                print("lovekey bench ingest needs mosquitto (or LOVEKEY_MQTT_URL)", file=sys.stderr)
                return 1
            scratch_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            mqtt_url = stack.enter_context(start_mosquitto(binary, scratch_dir / "mosquitto"))
        prefix = f"lkbench/{uuid.uuid4().hex[:8]}"
        extra_env: dict[str, str] = {}
        load: Load | SourceLoad
        if args.source == "native":
            keys = _register(db, args.devices, args.gateways)
            load = Load(
                keys, mix / mix.sum(), gateways=args.gateways, prefix=prefix, probe_every=args.probe_every
            )
        else:
            with connect(db) as conn:
                keys = register_source_devices(conn, args.source, args.devices)
            load = SourceLoad(args.source, keys, prefix=prefix, probe_every=args.probe_every)
            extra_env["LOVEKEY_SOURCES"] = json.dumps([source_entry(args.source, prefix)])
        shared = "bench" if args.ingesters > 1 else None
        ingester = Members(
            [
                IngesterProcess(db, mqtt_url, prefix, shared=shared, member=n, extra_env=extra_env)
                for n in range(args.ingesters)
            ]
        )
        print(
            f"ingesters={args.ingesters} devices={args.devices} gateways={args.gateways}"
            f" source={args.source} mix={args.mix if args.source == 'native' else '1 reading/message'}"
            f" (mean {load.mean_readings:.2f} readings/message) max_inflight={args.max_inflight}"
        )
        with Publisher(mqtt_url, max_inflight=args.max_inflight) as publisher, Prober(db) as prober:
            with ingester.running(profile=args.profile):
                ingester.wait_ready(publisher, load)
                results = []
                if "fixed" in args.phases:
                    run_phase(load, publisher, prober, ingester, rate=args.rate, seconds=3.0, label="warm-up")
                    results.append(
                        run_phase(
                            load,
                            publisher,
                            prober,
                            ingester,
                            rate=args.rate,
                            seconds=args.seconds,
                            label="fixed",
                        )
                    )
                if "max" in args.phases:
                    results.append(
                        run_phase(
                            load, publisher, prober, ingester, rate=None, seconds=args.seconds, label="max"
                        )
                    )
                ingester.catch_up(load)
                peak_mb = ingester.peak_rss_mb()
                counters = ingester.counters()
            if args.backlog:
                results.append(_drain(args.backlog, load, publisher, ingester, args.profile))
                peak_mb = max(peak_mb, ingester.last_peak_mb)
            if args.backlog and args.baseline:
                results.append(_bare_drain(args.backlog, db, mqtt_url, publisher, prefix, args.devices))
        for result in results:
            print(result.line())
        print(f"ingester peak RSS: {peak_mb:.0f} MB")
        print("ingester counters: " + " ".join(f"{k}={v:g}" for k, v in sorted(counters.items())))
    return 0


class BenchError(LoveKeyError):
    """The benchmark could not measure what it set out to (the reason says why)."""


@dataclass
class PhaseResult:
    label: str
    seconds: float
    published_readings: int
    published_messages: int
    stored_rows: float
    latencies_s: list[float] = field(default_factory=list)
    ingester_cpu_s: float = 0.0
    publisher_cpu_s: float = 0.0
    note: str = ""

    def line(self) -> str:
        stored_rate = self.stored_rows / self.seconds
        if self.label == "backlog":
            text = (
                f"{self.label:>7}: {self.published_readings:,} readings in"
                f" {self.published_messages:,} messages; stored {stored_rate:,.0f} rows/s"
                f" over {self.seconds:.1f}s"
            )
        else:
            text = (
                f"{self.label:>7}: published {self.published_readings / self.seconds:,.0f}"
                f" readings/s ({self.published_messages / self.seconds:,.0f} msg/s); stored"
                f" {stored_rate:,.0f} rows/s over {self.seconds:.1f}s"
            )
        if self.latencies_s:
            lat = np.asarray(self.latencies_s)
            text += (
                f"; publish-to-commit p50 {np.percentile(lat, 50) * 1000:,.0f} ms,"
                f" p99 {np.percentile(lat, 99) * 1000:,.0f} ms (n={lat.size})"
            )
        text += f"; CPU: ingester {self.ingester_cpu_s / self.seconds:.0%}"
        if self.publisher_cpu_s:
            text += f", publisher {self.publisher_cpu_s / self.seconds:.0%}"
        return text + (f" {self.note}" if self.note else "")


class Load:
    """Each device has one message shape and its own clock, so every reading is distinct."""

    def __init__(
        self,
        keys: dict[str, int],
        mix: np.ndarray,
        *,
        gateways: int,
        prefix: str,
        probe_every: int,
    ) -> None:
        self.prefix = prefix
        self.probe_every = probe_every
        self.devices = sorted(keys)
        self.keys = keys
        rng = np.random.default_rng(1)
        self.shape = rng.choice(len(SHAPES), size=len(self.devices), p=mix)
        self.mean_readings = float(sum(SHAPES[s][0] * p for s, p in enumerate(mix)))
        # clocks start in the past, on whole seconds, and move by each device's own interval
        origin = datetime.now(UTC).replace(microsecond=0) - timedelta(days=60)
        self.clock = [origin + timedelta(seconds=int(i) % 3600) for i in range(len(self.devices))]
        self.next = 0
        # WM-000042 is registered to GW-(42 % gateways), see _register
        self.topics = [f"{prefix}/GW-{int(d[3:]) % gateways:04d}/{d}/reading" for d in self.devices]

    def message(self) -> tuple[str, bytes, int, tuple[int, datetime]]:
        """(topic, payload, readings, (device key, ts of its last reading))."""
        i = self.next
        self.next = (i + 1) % len(self.devices)
        count, step_min = SHAPES[self.shape[i]]
        step = timedelta(minutes=step_min)
        first = self.clock[i]
        self.clock[i] = first + count * step
        base = 1000.0 + (first.timestamp() % 10_000_000) / 1000
        if count == 1:
            body: dict[str, object] = {
                "ts": first.isoformat(),
                "total_l": base,
                "flow_lpm": 0.5,
                "battery_v": 3.6,
            }
        else:
            # frozen values from NB-IoT platforms: epoch seconds, as they usually come
            start_s, step_s = int(first.timestamp()), step_min * 60
            body = {
                "readings": [{"ts": start_s + n * step_s, "total_l": base + n * 0.25} for n in range(count)]
            }
        last = first + (count - 1) * step
        return self.topics[i], orjson.dumps(body), count, (self.keys[self.devices[i]], last)


def run_phase(
    load: Load | SourceLoad,
    publisher: Publisher,
    prober: Prober,
    ingester: Members,
    *,
    rate: float | None,
    seconds: float,
    label: str,
) -> PhaseResult:
    stored_before = ingester.stored()
    prober.label = label
    readings = messages = 0
    cpu_before = ingester.cpu_s(), _own_cpu_s()
    started = time.monotonic()
    deadline = started + seconds
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if rate is not None and readings > rate * (now - started):
            time.sleep(min(0.005, readings / rate - (now - started)))
            continue
        topic, payload, count, probe = load.message()
        publisher.publish(topic, payload)
        if messages % load.probe_every == 0:
            prober.expect(probe, time.monotonic())
        readings += count
        messages += 1
    elapsed = time.monotonic() - started
    stored = ingester.stored() - stored_before
    ingester_cpu, own_cpu = ingester.cpu_s() - cpu_before[0], _own_cpu_s() - cpu_before[1]
    prober.wait_all(timeout_s=120)
    return PhaseResult(
        label,
        elapsed,
        readings,
        messages,
        stored,
        prober.latencies(label),
        ingester_cpu_s=ingester_cpu,
        publisher_cpu_s=own_cpu,
    )


class Prober:
    """Finds probe readings in the database as soon as they are committed."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.label = ""
        self._pending: dict[tuple[int, datetime], tuple[str, float]] = {}
        self._found: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="bench-prober")

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def expect(self, probe: tuple[int, datetime], published_mono: float) -> None:
        with self._lock:
            self._pending[probe] = (self.label, published_mono)

    def latencies(self, label: str) -> list[float]:
        with self._lock:
            return list(self._found.get(label, []))

    def wait_all(self, timeout_s: float) -> None:
        try:
            wait_for(lambda: not self._pending, timeout_s=timeout_s, interval_s=0.05)
        except TimeoutError:
            with self._lock:
                missing = len(self._pending)
            raise BenchError(
                f"{missing} probe readings published but never stored after {timeout_s:g} s:"
                " the broker dropped messages. Mosquitto's defaults keep 1,000 queued messages"
                " per client and drop the rest (docs/ingest.md, 'The broker'); leave"
                " LOVEKEY_MQTT_URL unset to let the bench start a broker configured for it"
            ) from None

    def _poll(self) -> None:
        with psycopg.connect(self.db, autocommit=True) as conn:
            while not self._stop.wait(POLL_S):
                with self._lock:
                    pending = list(self._pending)
                if not pending:
                    continue
                rows = conn.execute(
                    "SELECT w.device_key, w.ts FROM water_reading w"
                    " JOIN unnest(%s::int4[], %s::timestamptz[]) AS p(key, ts)"
                    " ON w.device_key = p.key AND w.ts = p.ts",
                    ([k for k, _ in pending], [t for _, t in pending]),
                ).fetchall()
                seen = time.monotonic()
                with self._lock:
                    for row in rows:
                        label, published = self._pending.pop((row[0], row[1]))
                        self._found.setdefault(label, []).append(seen - published)


def _drain(
    readings: int,
    load: Load | SourceLoad,
    publisher: Publisher,
    ingester: Members,
    profile: str | None,
) -> PhaseResult:
    """Publish a backlog while the ingester is down, then time how fast it is written.

    The clock starts at the first commit, so start-up is not counted; the publisher is
    idle meanwhile, so this is the ingester's own pace with broker and database.
    """
    published = messages = 0
    while published < readings:
        topic, payload, count, _ = load.message()
        publisher.publish(topic, payload)
        published += count
        messages += 1
    publisher.flush(timeout_s=600)
    if profile:
        profile = str(Path(profile).with_stem(Path(profile).stem + "-backlog"))
    with ingester.running(profile=profile):
        wait_for(lambda: _stored_or_zero(ingester) > 0, timeout_s=120, interval_s=0.01)
        started, stored_first, cpu_first = time.monotonic(), ingester.stored(), ingester.cpu_s()
        wait_for(lambda: ingester.stored() >= published, timeout_s=900, interval_s=0.05)
        elapsed = time.monotonic() - started
        stored, cpu = ingester.stored() - stored_first, ingester.cpu_s() - cpu_first
    return PhaseResult(
        "backlog",
        elapsed,
        published,
        messages,
        stored,
        ingester_cpu_s=cpu,
        note="(drained from the broker, publisher idle)",
    )


def _bare_drain(
    readings: int, db: str, mqtt_url: str, publisher: Publisher, prefix: str, devices: int
) -> PhaseResult:
    """The same backlog of native single readings, drained by the bare pipeline."""
    bare_prefix = prefix + "-bare"
    with connect(db) as conn:
        keys = register_devices(
            conn,
            ((f"WB-{i:06d}", "GW-BARE", "water_meter", None) for i in range(devices)),
            report_interval_s=60,
        )
    load = Load(keys, np.array([1.0, 0.0, 0.0]), gateways=1, prefix=bare_prefix, probe_every=10**9)
    load.topics = [f"{bare_prefix}/GW-BARE/{d}/reading" for d in load.devices]
    bare = BarePipeline(db, mqtt_url, f"{bare_prefix}/+/+/reading", keys)
    bare.connect()
    for _ in range(readings):
        topic, payload, _, _ = load.message()
        publisher.publish(topic, payload)
    publisher.flush(timeout_s=600)
    cpu_before = _own_cpu_s()
    seconds, stored = bare.drain(readings)
    return PhaseResult(
        "bare",
        seconds,
        readings,
        readings,
        stored,
        ingester_cpu_s=_own_cpu_s() - cpu_before,
        note="(bare paho -> staged COPY, no checks: this machine's yardstick; CPU is its process's)",
    )


def _stored_or_zero(ingester: Members) -> float:
    try:
        return ingester.stored()
    except OSError:
        return 0.0


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _register(db: str, devices: int, gateways: int) -> dict[str, int]:
    """Water meters WM-000000... spread over the gateways, each in a household of its own."""
    with connect(db) as conn:
        return register_devices(
            conn,
            ((f"WM-{i:06d}", f"GW-{i % gateways:04d}", "water_meter", None) for i in range(devices)),
            report_interval_s=60,
        )
