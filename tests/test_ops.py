"""Operations: /healthz, /readyz and /metrics over real HTTP, on the console and on the metrics
ports of the ingester, the detector and the alert worker; readiness lost when the database
is dropped or the broker is not there; metrics that move when a sweep runs or a notification
is sent."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from lovekey.alerts.metrics import outbox_registry
from lovekey.alerts.worker import AlertWorker, run_worker
from lovekey.bench.support.provider import FakeProvider
from lovekey.bench.support.seeding import register_devices
from lovekey.config import Settings
from lovekey.detectors.daemon import Sweeper, run_detector
from lovekey.detectors.metrics import DetectMetrics
from lovekey.detectors.service import DetectorShard
from lovekey.ingest.broker import free_port
from lovekey.ingest.ingester import Ingester
from lovekey.storage import connect, health
from lovekey.web.app import create_app
from tests.conftest import DatabaseFactory
from tests.fix_alerts import delivery_rig, serve_app

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (http://127.0.0.1 only)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def value(text: str, series: str) -> float | None:
    """The value of one exposition line, e.g. `lovekey_detect_sweeps_total`."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def eventually(probe: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def drop(factory: DatabaseFactory, url: str) -> None:
    name = url.rsplit("/", 1)[-1]
    with psycopg.connect(factory.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def own_db(postgres_factory: DatabaseFactory) -> str:
    """A database of this test's own, which it may drop."""
    return postgres_factory.create("ops")


# --- the shared server ---------------------------------------------------------------------


def test_readyz_reports_each_check_and_nothing_else() -> None:
    checks = {"database": lambda: True, "broker": lambda: False}
    with health.serving(
        outbox_registry("postgresql://nobody@127.0.0.1:1/x"),
        host="127.0.0.1",
        port=0,
        checks=checks,
        name="t",
    ) as port:
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, '{"status":"ok"}')
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503
        assert body == '{"status":"not ok","database":"ok","broker":"not ok"}'
        # the outbox cannot be read: said so, and nothing else is made up
        status, text = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert value(text, "lovekey_alerts_database_up") == 0
        assert "lovekey_alerts_notifications_queued" not in text


# --- console -------------------------------------------------------------------------------


def test_console_health_needs_no_sign_in_and_readyz_fails_when_the_database_goes(
    postgres_factory: DatabaseFactory, own_db: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_url=own_db)
    with serve_app(create_app(settings, own_db)) as base, httpx.Client(base_url=base, timeout=10) as client:
        healthz = client.get("/healthz")
        assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
        readyz = client.get("/readyz")
        assert (readyz.status_code, readyz.json()) == (200, {"status": "ok", "database": "ok"})
        assert readyz.headers["cache-control"] == "no-store"
        with connect(own_db) as conn:  # not audited: a probe is not a staff action
            assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)

        drop(postgres_factory, own_db)
        started = time.monotonic()
        readyz = client.get("/readyz")
        assert (readyz.status_code, readyz.json()) == (503, {"status": "not ok", "database": "not ok"})
        assert time.monotonic() - started < 5
        assert client.get("/healthz").status_code == 200  # alive, only not ready


# --- ingester ------------------------------------------------------------------------------


def test_ingester_readyz_needs_the_database_and_the_broker(
    own_db: str,
    postgres_factory: DatabaseFactory,
    mqtt_url: str,
    topic_prefix: str,
    make_settings: Callable[..., Settings],
) -> None:
    def settings_for(broker: str) -> Settings:
        return make_settings(
            database_url=own_db,
            mqtt_url=broker,
            mqtt={
                "topic_prefix": topic_prefix,
                "client_id": "lkt-ops-" + topic_prefix[-12:],
                "session_expiry_s": 0,
            },
            ingest={"metrics_port": 0},
        )

    with Ingester(settings_for(mqtt_url), own_db, mqtt_url) as ingester:
        assert ingester.subscribed.wait(10)
        base = f"http://127.0.0.1:{ingester.metrics_port}"
        assert get(f"{base}/readyz") == (200, '{"status":"ok","database":"ok","broker":"ok"}')
        assert value(get(f"{base}/metrics")[1], "lovekey_ingest_received_messages_total") == 0
        drop(postgres_factory, own_db)
        assert get(f"{base}/readyz") == (503, '{"status":"not ok","database":"not ok","broker":"ok"}')

    closed = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    db = postgres_factory.create("ops_broker")
    with Ingester(settings_for(closed).with_overrides(database_url=db), db, closed) as ingester:
        base = f"http://127.0.0.1:{ingester.metrics_port}"
        assert get(f"{base}/readyz") == (503, '{"status":"not ok","database":"ok","broker":"not ok"}')
        assert get(f"{base}/healthz")[0] == 200


# --- detector ------------------------------------------------------------------------------


def test_sweep_moves_the_detector_metrics(database_url: str, make_settings: Callable[..., Settings]) -> None:
    with connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE alert_history, alert, water_reading, device, gateway RESTART IDENTITY CASCADE")
        register_devices(
            conn,
            [
                ("WM-OPS-1", "GW-OPS", "water_meter", "R-OPS-1"),
                ("WM-OPS-2", "GW-OPS", "water_meter", "R-OPS-2"),
            ],
        )
        # one meter heard from two days ago (silent), one a minute ago
        conn.execute(
            "UPDATE device SET last_seen = now() - CASE id WHEN 'WM-OPS-1' THEN interval '2 days'"
            " ELSE interval '1 minute' END"
        )
    metrics = DetectMetrics()
    sweeper = Sweeper(make_settings(database_url=database_url), database_url, DetectorShard(), metrics)
    checks = {"database": health.database_check(database_url)}
    with health.serving(metrics.registry(), host="127.0.0.1", port=0, checks=checks, name="detect") as port:
        before = get(f"http://127.0.0.1:{port}/metrics")[1]
        assert value(before, "lovekey_detect_sweeps_total") == 0
        assert value(before, "lovekey_detect_last_sweep_timestamp_seconds") == 0
        try:
            sweeper.sweep()
        finally:
            sweeper.close()
        after = get(f"http://127.0.0.1:{port}/metrics")[1]
    assert value(after, "lovekey_detect_sweeps_total") == 1
    assert value(after, "lovekey_detect_sweep_seconds_count") == 1
    assert value(after, "lovekey_detect_meters") == 2
    assert value(after, "lovekey_detect_meters_silent") == 1
    assert value(after, 'lovekey_detect_alerts_raised_total{kind="meter_silent"}') == 1
    assert abs((value(after, "lovekey_detect_last_sweep_timestamp_seconds") or 0) - time.time()) < 60
    # no resident, device or gateway in any label
    assert "R-OPS" not in after
    assert "WM-OPS" not in after
    assert "GW-OPS" not in after


def test_detector_port_serves_until_the_database_is_dropped(
    own_db: str, postgres_factory: DatabaseFactory, make_settings: Callable[..., Settings]
) -> None:
    port = free_port()
    settings = make_settings(
        database_url=own_db, detect={"metrics_port": port, "sweep_interval_s": 1, "events_poll_s": 0.2}
    )
    stop = threading.Event()
    thread = threading.Thread(target=run_detector, args=(settings, own_db, stop), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(
            lambda: (
                (value(get(f"{base}/metrics")[1] if _up(base) else "", "lovekey_detect_sweeps_total") or 0)
                >= 1
            )
        )
        assert get(f"{base}/readyz") == (200, '{"status":"ok","database":"ok"}')
        drop(postgres_factory, own_db)
        assert get(f"{base}/readyz") == (503, '{"status":"not ok","database":"not ok"}')
        eventually(
            lambda: (value(get(f"{base}/metrics")[1], "lovekey_detect_sweep_failures_total") or 0) >= 1
        )
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()


def _up(base: str) -> bool:
    try:
        return get(f"{base}/healthz")[0] == 200
    except OSError:
        return False


# --- alert outbox --------------------------------------------------------------------------


def test_outbox_metrics_move_when_a_notification_is_queued_and_sent(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    with FakeProvider() as fake:
        settings = make_settings(database_url=database_url, alerts={"sms_url": fake.sms_template()})
        with (
            delivery_rig(database_url, settings, fake) as rig,
            health.serving(
                outbox_registry(database_url), host="127.0.0.1", port=0, checks={}, name="alerts"
            ) as port,
        ):
            metrics = f"http://127.0.0.1:{port}/metrics"
            empty = get(metrics)[1]
            assert value(empty, "lovekey_alerts_database_up") == 1
            assert value(empty, "lovekey_alerts_notifications_queued_total") == 0
            assert value(empty, "lovekey_alerts_outbox_oldest_pending_seconds") == 0

            rig.raise_("low_usage", "R-1", T0)
            from lovekey.alerts.escalation_pass import escalate_once

            escalate_once(rig.conn, rig.escalation, T0)
            queued = get(metrics)[1]
            assert value(queued, "lovekey_alerts_notifications_queued_total") == 1
            assert value(queued, 'lovekey_alerts_outbox_notifications{state="pending"}') == 1
            assert (value(queued, "lovekey_alerts_outbox_oldest_pending_seconds") or 0) > 0
            assert (value(queued, "lovekey_alerts_outbox_oldest_due_seconds") or 0) > 0

            rig.run(T0)
            sent = get(metrics)[1]
    assert value(sent, 'lovekey_alerts_outbox_notifications{state="pending"}') == 0
    assert value(sent, 'lovekey_alerts_outbox_notifications{state="sent"}') == 1
    assert value(sent, 'lovekey_alerts_delivery_attempts_total{channel="push",result="ok"}') == 1
    assert value(sent, "lovekey_alerts_outbox_oldest_due_seconds") == 0
    assert "R-1" not in sent
    assert "13800" not in sent


def test_outbox_failures_are_counted_by_channel(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    with FakeProvider() as fake:
        settings = make_settings(database_url=database_url, alerts={"sms_url": fake.sms_template()})
        with delivery_rig(database_url, settings, fake) as rig:
            fake.script("/push/lkh", [500, 500, 500, 500])
            rig.raise_("low_usage", "R-1", T0)
            rig.run(T0)
            with health.serving(
                outbox_registry(database_url), host="127.0.0.1", port=0, checks={}, name="alerts"
            ) as port:
                text = get(f"http://127.0.0.1:{port}/metrics")[1]
    assert (value(text, 'lovekey_alerts_delivery_attempts_total{channel="push",result="failed"}') or 0) >= 1


async def test_alert_worker_serves_its_port(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    port = free_port()
    settings = make_settings(
        database_url=database_url, alerts={"metrics_port": port, "processes": 1, "dispatchers": 1}
    )
    stop = asyncio.Event()
    answers: dict[str, Any] = {}

    async def ready(worker: AlertWorker) -> None:
        answers["readyz"] = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/readyz")
        answers["metrics"] = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/metrics")
        stop.set()

    await asyncio.wait_for(run_worker(settings, database_url, stop, ready=ready), 30)
    assert answers["readyz"] == (200, '{"status":"ok","database":"ok"}')
    assert value(answers["metrics"][1], "lovekey_alerts_database_up") == 1
    with pytest.raises(urllib.error.URLError, match="refused"):  # closed with the worker
        get(f"http://127.0.0.1:{port}/healthz")


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    before = {t.name for t in threading.enumerate()}
    yield
    leftover = {t.name for t in threading.enumerate()} - before
    assert not [n for n in leftover if n.endswith("-ops-http")]
