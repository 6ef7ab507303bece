"""The detector's long-running loop, hostable by `lovekey detect` and by `lovekey run`.

Sweeps run on an apscheduler job every `detect.sweep_interval_s`; the calling thread waits on
LISTEN lovekey_events so smoke, gas and SOS are raised at once. Both end when `stop` is set.
Nothing lives only in memory: after a database error the state is rebuilt from the database.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from lovekey.config import Settings
from lovekey.detectors.service import DetectorService, EventWatcher
from lovekey.detectors.service import DetectorShard as Shard  # renamed in service.py (import only)
from lovekey.errors import LoveKeyError
from lovekey.storage import connect

log = logging.getLogger(__name__)


def run_detector(settings: Settings, url: str, stop: threading.Event, *, shard: Shard | None = None) -> None:
    """Sweep on a schedule and raise life-safety alerts from events until `stop` is set."""
    from apscheduler.schedulers.background import BackgroundScheduler

    shard = shard or Shard()
    state: dict[str, Any] = {"conn": None, "service": None}

    def sweep_job() -> None:
        now = datetime.now(UTC)
        try:
            if state["service"] is None:
                state["conn"] = connect(url)
                service = DetectorService(settings, shard=shard)
                service.start(state["conn"], now)
                state["conn"].commit()
                state["service"] = service
            state["service"].sweep(state["conn"], now)
            state["conn"].commit()
        except Exception:
            # whatever failed, the state in memory may be half-updated: drop it and rebuild it
            # from the database on the next run (the database is the source of truth)
            log.exception("detector sweep failed; state is rebuilt on the next sweep")
            if state["conn"] is not None:
                state["conn"].close()
            state["conn"] = state["service"] = None

    scheduler = BackgroundScheduler(timezone=settings.timezone)
    scheduler.add_job(
        sweep_job,
        "interval",
        seconds=settings.detect.sweep_interval_s,
        id="detect-sweep",
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
    )
    scheduler.start()
    log.info(
        "detector running shard=%d/%d sweep every %ss",
        shard.index,
        shard.count,
        settings.detect.sweep_interval_s,
    )
    try:
        watch_events(settings, url, stop, shard=shard)
    finally:
        scheduler.shutdown(wait=True)
        if state["conn"] is not None:
            state["conn"].close()


def watch_events(settings: Settings, url: str, stop: threading.Event, *, shard: Shard) -> None:
    """LISTEN lovekey_events; poll device_event on each notification or every events_poll_s."""
    backoff = 0.5
    started = datetime.now(UTC)
    while not stop.is_set():
        try:
            with connect(url, autocommit=True) as listen, connect(url) as conn:
                listen.execute("LISTEN lovekey_events")
                watcher = EventWatcher(settings, shard=shard)
                # after a reconnect, look back to when we last could have missed something
                watcher.start(
                    conn,
                    datetime.now(UTC),
                    lookback_s=max(
                        600.0, (datetime.now(UTC) - started).total_seconds() if backoff > 0.5 else 600.0
                    ),
                )
                conn.commit()
                backoff = 0.5
                while not stop.is_set():
                    for _ in listen.notifies(timeout=settings.detect.events_poll_s, stop_after=1):
                        pass
                    watcher.poll(conn, datetime.now(UTC))
                    conn.commit()
        except (psycopg.OperationalError, LoveKeyError):
            log.exception("event watcher lost the database; retrying in %.1fs", backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)
            started = datetime.now(UTC) - timedelta(seconds=backoff)
