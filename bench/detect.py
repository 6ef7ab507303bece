"""`lovekey bench detect`: the detector core at city scale, and its memory for a district.

1. One sweep over 1,000,000 meters x 96 buckets with the state in memory (target < 100 ms):
   every rule evaluated for every meter, alert states stepped.
2. An incremental update of 1,000,000 new readings (target < 150 ms): one reading per meter,
   as a sweep's query returns them (ordered by meter and time), and shuffled.
3. Detector memory for a district of 40,000 meters with the default settings (target
   < 200 MB): the arrays held, and the peak traced while learning days and sweeping.
4. With a database (`--events N`, default 50; 0 skips): life-safety events committed one at
   a time (with the NOTIFY ingest sends) until their alert row is committed by the running
   event loop (target < 2 s), in a throw-away database on the configured server.

The machine is shared and timings are noisy: each figure is the best of `--repeat` runs, with
the median beside it.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from functools import partial

import numpy as np

from lovekey.config import DetectSettings, Settings
from lovekey.detectors.engine import Detector, Registry
from lovekey.detectors.params import uniform_params
from lovekey.detectors.profile import RoutineProfile

BS = 900
T0 = 1_767_196_800  # 2026-01-01 00:00 +08:00
# chance that a bucket has water use, by local hour: quiet nights, busy mornings and evenings
_HOUR_WEIGHT = np.array([0.05] * 6 + [0.6] * 3 + [0.3] * 9 + [0.5] * 4 + [0.1] * 2)


def main(argv: list[str], settings: Settings) -> int:
    ap = argparse.ArgumentParser(prog="lovekey bench detect", description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=1_000_000)
    ap.add_argument("--buckets", type=int, default=96)
    ap.add_argument("--district", type=int, default=40_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--events", type=int, default=50, help="smoke/SOS events for the commit-to-alert latency (0: skip)"
    )
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    print(f"detector core: {args.meters:,} meters x {args.buckets} buckets of {BS // 60} min")
    det, total = _warm(settings.detect, args.meters, args.buckets, rng)
    state_mb = _state_bytes(det) / 2**20
    print(f"  state in memory: {state_mb:,.0f} MB")
    meters = np.arange(args.meters, dtype=np.int64)
    sweeps, updates, shuffled = [], [], []
    t = T0 + (args.buckets + 1) * BS
    for _ in range(args.repeat):
        ts = t + rng.integers(-20, 20, args.meters)
        total += rng.random(args.meters) * 4
        updates.append(_timed(partial(det.apply, meters, ts, total.copy(), ts + 5)))
        sweeps.append(_timed(partial(det.sweep, t + 60)))
        t += BS
        order = rng.permutation(args.meters)
        ts = t + rng.integers(-20, 20, args.meters)
        total += rng.random(args.meters) * 4
        shuffled.append(_timed(partial(det.apply, meters[order], ts[order], total[order], ts[order] + 5)))
        det.sweep(t + 60)
        t += BS
    # the quiet rules' window computed for every meter, as when a quarter or more of them may
    # fire (a night, a district-wide outage): the worst case of a sweep
    det.quiet_subset_share = 0.0
    worst = [_timed(partial(det.sweep, t + 60)) for _ in range(args.repeat)]
    det.quiet_subset_share = Detector.quiet_subset_share
    maybe = det.quiet_candidates / args.meters
    _report(
        f"one sweep, every rule for every meter ({maybe:.1%} of meters long enough dry for a quiet rule)",
        sweeps,
        100,
    )
    _report("one sweep, quiet rules computed for every meter (the worst case)", worst, 100)
    _report("update with 1 reading per meter, in (meter, ts) order", updates, 150)
    _report("update with 1 reading per meter, shuffled", shuffled, None)
    del det
    gc.collect()

    print(
        f"district: {args.district:,} meters, default settings "
        f"({settings.detect.ring_hours} h ring, {settings.detect.routine_history_days} learned days)"
    )
    held, peak, sweep_ms = _district(settings.detect, args.district, rng)
    print(
        f"  arrays held: {held / 2**20:,.0f} MB; peak traced while learning and sweeping:"
        f" {peak / 2**20:,.0f} MB (target < 200 MB)"
    )
    print(f"  one district sweep: {sweep_ms:.1f} ms")
    if args.events:
        latencies = _event_latency(settings, args.events)
        ms = sorted(1000 * x for x in latencies)
        print(
            f"life-safety events: {len(ms)} committed one by one; commit to alert committed:"
            f" median {statistics.median(ms):.0f} ms, p99 {ms[int(0.99 * (len(ms) - 1))]:.0f} ms,"
            f" max {ms[-1]:.0f} ms (target < 2000 ms)"
        )
    return 0


def _event_latency(settings: Settings, count: int) -> list[float]:
    """Seconds from an event's commit to its alert's commit, through detectors.daemon."""
    import threading
    from datetime import UTC, datetime

    from lovekey.bench.support.seeding import register_devices
    from lovekey.detectors.daemon import watch_events
    from lovekey.detectors.service import DetectorShard
    from lovekey.storage import connect, database_url
    from lovekey.storage.scratch import scratch_database

    out: list[float] = []
    with (
        database_url(settings) as server,
        scratch_database(server, "detect", storage=settings.storage) as url,
        connect(url) as conn,
    ):
        sos_buttons = [(f"SOS-{i}", "GW-1", "sos_button", f"R-{i}") for i in range(count)]
        registered = register_devices(conn, sos_buttons)
        conn.commit()
        keys = [registered[f"SOS-{i}"] for i in range(count)]
        stop = threading.Event()
        run = settings.model_copy(update={"database_url": url})
        thread = threading.Thread(
            target=watch_events, args=(run, url, stop), kwargs={"shard": DetectorShard()}, daemon=True
        )
        thread.start()
        try:
            time.sleep(1.0)  # let it LISTEN
            for i, key in enumerate(keys):
                conn.execute(
                    "INSERT INTO device_event (ts, device_key, type, active) VALUES (%s, %s, 'sos', true)",
                    (datetime.now(UTC), key),
                )
                conn.execute("SELECT pg_notify('lovekey_events', '')")
                conn.commit()
                committed = time.perf_counter()
                while True:  # the alert row, as any other session sees it
                    row = conn.execute("SELECT 1 FROM alert WHERE subject = %s", (f"R-{i}",)).fetchone()
                    conn.commit()
                    if row is not None:
                        out.append(time.perf_counter() - committed)
                        break
                    if time.perf_counter() - committed > 30:
                        raise RuntimeError("no alert 30 s after the event")
                    time.sleep(0.002)
        finally:
            stop.set()
            thread.join(timeout=60)
    return out


def _warm(
    st: DetectSettings, meters: int, buckets: int, rng: np.random.Generator
) -> tuple[Detector, np.ndarray]:
    """A detector whose ring holds `buckets` buckets of data for every meter, with learned
    routine thresholds (drawn, since this ring is too short to learn days from)."""
    bench = st.model_copy(update={"ring_hours": max(1, buckets * BS // 3600)})
    reg = Registry(
        [f"WM-{i}" for i in range(meters)],
        [f"R-{i}" for i in range(meters)],
        [f"GW-{g}" for g in range(-(-meters // 20))],
        np.arange(meters, dtype=np.int64),
        np.arange(meters, dtype=np.int64) // 20,
        uniform_params(bench, meters),
    )
    det = Detector(reg, bench, now_s=T0, utc_offset_s=8 * 3600, learn_days=False)
    prof: RoutineProfile = det.profile
    prof.threshold[:] = rng.integers(8, 40, prof.threshold.shape, dtype=np.uint8)
    prof.low_threshold[:] = rng.integers(40, 60, prof.low_threshold.shape, dtype=np.uint16)
    prof.allowance[:] = rng.integers(10, 40, prof.allowance.shape, dtype=np.int16)
    total = rng.random(meters) * 1e5
    ids = np.arange(meters, dtype=np.int64)
    for k in range(buckets + 1):
        ts = T0 + k * BS + rng.integers(-20, 20, meters)
        used = rng.random(meters) < _HOUR_WEIGHT[((k * BS) // 3600 + 8) % 24]
        total += np.where(used, rng.random(meters) * 12, 0.0)
        det.apply(ids, ts, total, ts + 5)
    det.sweep(T0 + (buckets + 1) * BS)
    return det, total


def _district(st: DetectSettings, meters: int, rng: np.random.Generator) -> tuple[int, int, float]:
    """Memory of a district detector run through 30 days of synthetic use (days learned)."""
    gc.collect()
    tracemalloc.start()
    reg = Registry(
        [f"WM-{i}" for i in range(meters)],
        [f"R-{i}" for i in range(meters)],
        [f"GW-{g}" for g in range(-(-meters // 16))],
        np.arange(meters, dtype=np.int64),
        np.arange(meters, dtype=np.int64) // 16,
        uniform_params(st, meters),
    )
    det = Detector(reg, st, now_s=T0, utc_offset_s=8 * 3600)
    ids = np.arange(meters, dtype=np.int64)
    total = rng.random(meters) * 1e5
    hour_weight = _HOUR_WEIGHT
    sweep_ms = 0.0
    for k in range(30 * 96):
        hour = ((k * BS) // 3600 + 8) % 24
        ts = T0 + k * BS + rng.integers(-20, 20, meters)
        used = rng.random(meters) < hour_weight[hour]
        total += np.where(used, rng.random(meters) * 10, 0.0)
        det.apply(ids, ts, total, ts + 5)
        started = time.perf_counter()
        det.sweep(T0 + k * BS + 60)
        sweep_ms = (time.perf_counter() - started) * 1000
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return _state_bytes(det), peak, sweep_ms


def _state_bytes(det: Detector) -> int:
    """Bytes of every numpy array the detector holds (its state, not temporaries)."""
    seen: set[int] = set()
    total = 0
    for owner in (
        det,
        det.ring,
        det.runs,
        det.profile,
        det.registry,
        det.registry.params,
        *det.states.values(),
    ):
        for value in (
            vars(owner).values()
            if hasattr(owner, "__dict__")
            else (
                getattr(owner, f)
                for f in owner.__slots__  # type: ignore[attr-defined]
            )
        ):
            if isinstance(value, np.ndarray) and value.base is None and id(value) not in seen:
                seen.add(id(value))
                total += value.nbytes
    return total


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def _report(what: str, ms: list[float], target: float | None) -> None:
    goal = f" (target < {target:.0f} ms)" if target else ""
    print(f"  {what}: best {min(ms):.1f} ms, median {statistics.median(ms):.1f} ms{goal}")
