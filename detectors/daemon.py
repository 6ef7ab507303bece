"""The detector's long-running loop, hostable by `lovekey detect` and by `lovekey run`.

`run_detector` blocks the calling thread until `stop` is set. It runs an event loop of its
own for `lovekey.schedule`: the sweep is a blocking `Periodic` job every
`detect.sweep_interval_s` (on a thread of that loop's executor), and `watch_events` waits on
LISTEN lovekey_events on another thread so smoke, gas and SOS are raised at once. Nothing
lives only in memory: after a database error the state is rebuilt from the database.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import psycopg

from lovekey.config import Settings
from lovekey.detectors.event_watcher import EventWatcher
from lovekey.detectors.metrics import DetectMetrics
from lovekey.detectors.service import DetectorService, DetectorShard
from lovekey.errors import LoveKeyError
from lovekey.retry import Backoff
from lovekey.schedule import Periodic, scheduled
from lovekey.storage import connect, health
from lovekey.vocabulary import AlertKind

log = logging.getLogger(__name__)


def run_detector(
    settings: Settings,
    url: str,
    stop: threading.Event,
    *,
    shard: DetectorShard | None = None,
    metrics: DetectMetrics | None = None,
) -> None:
    """Sweep on a schedule and raise life-safety alerts from events until `stop` is set.

    With `detect.metrics_port` set, /metrics, /healthz and /readyz are served meanwhile.
    """
    metrics = metrics or DetectMetrics()
    with ExitStack() as stack:
        d = settings.detect
        if d.metrics_port is not None:
            checks = {"database": health.database_check(url)}
            stack.enter_context(
                health.serving(
                    metrics.registry(), host=d.metrics_host, port=d.metrics_port, checks=checks, name="detect"
                )
            )
        asyncio.run(_run_detector(settings, url, stop, shard or DetectorShard(), metrics))


async def _run_detector(
    settings: Settings, url: str, stop: threading.Event, shard: DetectorShard, metrics: DetectMetrics
) -> None:
    sweeper = Sweeper(settings, url, shard, metrics)
    try:
        every = settings.detect.sweep_interval_s
        async with scheduled(Periodic("detect-sweep", every, sweeper.sweep), timezone=settings.timezone):
            log.info("detector running shard=%d/%d sweep every %ss", shard.index, shard.count, every)
            await asyncio.to_thread(watch_events, settings, url, stop, shard=shard, metrics=metrics)
    finally:
        sweeper.close()


class Sweeper:
    """The sweep job: one connection and the detector state built over it, rebuilt from the
    database after any failure."""

    def __init__(
        self, settings: Settings, url: str, shard: DetectorShard, metrics: DetectMetrics | None = None
    ) -> None:
        self.settings = settings
        self.url = url
        self.shard = shard
        self.metrics = metrics or DetectMetrics()
        self._conn: psycopg.Connection | None = None
        self._service: DetectorService | None = None

    def sweep(self) -> None:
        now = datetime.now(UTC)
        started = time.monotonic()
        try:
            if self._conn is None or self._service is None:
                self._conn = connect(self.url)
                service = DetectorService(self.settings, shard=self.shard)
                service.start(self._conn, now)
                self._conn.commit()
                self._service = service
            changes = self._service.sweep(self._conn, now)
            self._conn.commit()
        except Exception:
            # whatever failed, the state in memory may be half-updated: drop it and rebuild it
            # from the database on the next run (the database is the source of truth)
            log.exception("detector sweep failed; state is rebuilt on the next sweep")
            self.metrics.sweep_failures += 1
            self.close()
            return
        # counted after the commit: a change rolled back was never raised
        self.metrics.count_changes((c.kind, c.action) for c in changes)
        detector = self._service.detector
        silent = detector.states[AlertKind.METER_SILENT].active if detector is not None else None
        self.metrics.observe_sweep(
            time.monotonic() - started,
            at_unix_s=time.time(),
            meters=0 if silent is None else int(silent.size),
            meters_silent=0 if silent is None else int(silent.sum()),
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._service = None


def watch_events(
    settings: Settings,
    url: str,
    stop: threading.Event,
    *,
    shard: DetectorShard,
    metrics: DetectMetrics | None = None,
) -> None:
    """LISTEN lovekey_events; poll device_event on each notification or every events_poll_s."""
    metrics = metrics or DetectMetrics()
    backoff = Backoff(first_s=0.5, max_s=30.0)
    lost_at: datetime | None = None  # when the database went away, until we are back
    while not stop.is_set():
        try:
            with connect(url, autocommit=True) as listen, connect(url) as conn:
                listen.execute("LISTEN lovekey_events")
                watcher = EventWatcher(settings, shard=shard)
                # after a reconnect, look back over the whole outage (and at least 10 minutes)
                now = datetime.now(UTC)
                outage_s = (now - lost_at).total_seconds() if lost_at is not None else 0.0
                watcher.start(conn, now, lookback_s=max(600.0, outage_s))
                conn.commit()
                backoff.reset()
                lost_at = None
                while not stop.is_set():
                    for _ in listen.notifies(timeout=settings.detect.events_poll_s, stop_after=1):
                        pass
                    raised = watcher.poll(conn, datetime.now(UTC))
                    conn.commit()
                    metrics.count_changes((a.kind, "raise") for a in raised)
        except (psycopg.OperationalError, LoveKeyError):
            delay_s = backoff.next_delay_s()
            log.exception("event watcher lost the database; retrying in %.1fs", delay_s)
            if lost_at is None:
                # the last poll may have been up to one poll interval before the failure
                lost_at = datetime.now(UTC) - timedelta(seconds=settings.detect.events_poll_s)
            stop.wait(delay_s)
