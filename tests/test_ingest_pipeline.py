"""The ingester end to end against the real Mosquitto and PostgreSQL.

Each test gets a database of its own and a topic prefix nobody else uses; the ingester
runs in a thread of the test process (the crash test in test_ingest_crash.py runs it as
a separate process to kill it).
"""

from __future__ import annotations

import logging
import random
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
import psycopg
import pytest
from psycopg import sql

from lovekey.bench.support.publisher import Publisher, running_ingester, wait_for
from lovekey.bench.support.seeding import register_devices
from lovekey.config import Settings
from lovekey.ingest.broker import free_port
from lovekey.ingest.ingester import Ingester
from lovekey.ingest.mqtt import BrokerAddress, connect_properties, new_client
from lovekey.storage import connect
from lovekey.storage.maintenance import existing_partitions


@pytest.fixture
def db(postgres_factory: Any) -> str:
    return postgres_factory.create("ingest")


@pytest.fixture
def settings_for(
    make_settings: Callable[..., Settings], mqtt_url: str, topic_prefix: str
) -> Callable[..., Settings]:
    def build(database_url: str, **ingest: Any) -> Settings:
        options = {
            "batch_ms": 50,
            "retry_min_s": 0.05,
            "retry_max_s": 0.5,
            "registry_miss_retry_s": 0,
            "summary_interval_s": 3600,
            **ingest,
        }
        return make_settings(
            database_url=database_url,
            mqtt_url=mqtt_url,
            mqtt={
                "topic_prefix": topic_prefix,
                "client_id": "lkt-" + topic_prefix.rsplit("/", 1)[-1],
                "session_expiry_s": 120,  # the shared test broker forgets us soon after
            },
            ingest=options,
        )

    return build


@pytest.fixture
def publisher(mqtt_url: str) -> Iterator[Publisher]:
    with Publisher(mqtt_url) as pub:
        retained: list[str] = []
        original = pub.publish

        def publish(topic: str, payload: bytes | str, *, retain: bool = False) -> None:
            if retain:
                retained.append(topic)
            original(topic, payload, retain=retain)

        pub.publish = publish  # type: ignore[method-assign]
        yield pub
        for topic in retained:  # leave no retained messages on the shared broker
            original(topic, b"", retain=True)


def processed(ingester: Ingester, messages: int, timeout_s: float = 30.0) -> None:
    """Wait until `messages` messages were committed and acknowledged."""
    wait_for(lambda: ingester.metrics.acked >= messages, timeout_s=timeout_s)


def query(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with connect(url) as conn:
        return conn.execute(statement, params or None).fetchall()  # type: ignore[arg-type]


def reading(ts: datetime, total_l: float, **extra: Any) -> bytes:
    return orjson.dumps({"ts": ts.isoformat(), "total_l": total_l, **extra})


NOW = datetime.now(UTC).replace(microsecond=0)


def test_duplicates_and_out_of_order_store_exactly_the_distinct_readings(
    db, settings_for, publisher, topic_prefix
):
    rng = random.Random(7)
    with connect(db) as conn:
        keys = register_devices(conn, [(f"WM-{n}", "GW-1", "water_meter", f"R-{n}") for n in range(10)])
    expected: set[tuple[int, datetime, float]] = set()
    messages: list[tuple[str, bytes]] = []
    rows_sent = 0
    for device, key in keys.items():
        topic = f"{topic_prefix}/GW-1/{device}/reading"
        values = [(NOW - timedelta(minutes=15 * (100 - i)), 1000.0 + 2.5 * i) for i in range(100)]
        expected |= {(key, ts, total) for ts, total in values}
        rng.shuffle(values)  # out of order, even inside batches
        position = 0
        while position < len(values):
            size = rng.choice([1, 1, 1, 4, 8, 24])
            chunk = values[position : position + size]
            position += size
            if len(chunk) == 1:
                messages.append((topic, reading(*chunk[0])))
            else:
                body = {"readings": [{"ts": ts.isoformat(), "total_l": t} for ts, t in chunk]}
                messages.append((topic, orjson.dumps(body)))
            rows_sent += len(chunk)
        for ts, total in rng.sample(values, 15):  # the same reading sent again alone
            messages.append((topic, reading(ts, total)))
            rows_sent += 1
    repeats = rng.sample(messages, len(messages) // 5)  # whole messages redelivered
    rows_sent += sum(len(orjson.loads(p).get("readings", [None])) for _, p in repeats)
    messages += repeats
    rng.shuffle(messages)
    with running_ingester(settings_for(db)) as ingester:
        for topic, payload in messages:
            publisher.publish(topic, payload)
        processed(ingester, len(messages))
        duplicates = ingester.metrics.duplicates
    stored = query(db, "SELECT device_key, ts, total_l FROM water_reading_wide")
    assert len(stored) == len(expected) == 1000
    assert set(stored) == expected
    assert duplicates == rows_sent - len(expected)
    assert query(db, "SELECT count(*) FROM rejected_input") == [(0,)]
    last_seen = query(db, "SELECT count(*) FROM device WHERE last_seen IS NOT NULL")
    assert last_seen == [(10,)]


def bad_inputs(prefix: str) -> list[tuple[str, bytes, str]]:
    """(topic, payload, reason) for inputs that must each end in rejected_input."""
    ts = (NOW - timedelta(minutes=5)).isoformat()

    def j(body: Any) -> bytes:
        return orjson.dumps(body)

    meter = f"{prefix}/GW-1/WM-1/reading"
    event = f"{prefix}/GW-1/SOS-1/event"
    return [
        (meter, b"{not json", "malformed_json"),
        (meter, b"\xff\xfe\xfd", "malformed_json"),
        (meter, b"", "malformed_json"),
        (meter, b"[1, 2, 3]", "malformed_json"),
        (meter, b'{"ts": NaN, "total_l": 1}', "malformed_json"),
        (meter, b'{"ts": 1, "total_l": 1e999}', "malformed_json"),
        (meter, b'{"pad": "' + b"x" * 70_000 + b'"}', "payload_too_large"),
        (meter, j({"total_l": 5}), "missing_field"),
        (meter, j({"ts": ts}), "missing_field"),
        (meter, j({"ts": ts, "battery_v": 3.0}), "missing_field"),
        (meter, j({"ts": ts, "total_l": -3}), "bad_value"),
        (meter, j({"ts": ts, "total_l": "12.5"}), "bad_value"),
        (meter, j({"ts": ts, "total_l": 5, "total_m3": 0.005}), "bad_value"),
        (meter, j({"ts": ts, "total_l": 5, "flow_lpm": -1}), "bad_value"),
        (meter, j({"ts": ts, "total_l": 5, "battery_v": 500}), "bad_value"),
        (meter, j({"ts": ts, "total_l": 5, "seq": "x"}), "bad_value"),
        (meter, j({"readings": {"ts": ts}}), "bad_value"),
        (meter, j({"readings": []}), "empty_batch"),
        (meter, j({"ts": "not a time", "total_l": 5}), "bad_timestamp"),
        (meter, j({"ts": "2024-06-01T08:00:00", "total_l": 5}), "bad_timestamp"),
        (meter, j({"ts": 1e30, "total_l": 5}), "bad_timestamp"),
        (meter, j({"ts": (NOW + timedelta(days=2)).isoformat(), "total_l": 5}), "future_timestamp"),
        (meter, j({"ts": "2001-01-01T00:00:00Z", "total_l": 5}), "too_old"),
        (meter, j({"ts": ts, "total_l": 5, "device_id": "WM-2"}), "device_mismatch"),
        (event, j({"ts": ts, "type": "earthquake", "active": True}), "unknown_event"),
        (event, j({"ts": ts, "active": True}), "missing_field"),
        (event, j({"ts": ts, "type": "sos", "active": "yes"}), "bad_value"),
        (f"{prefix}/GW-1/status", b"rebooting", "bad_status"),
        (f"{prefix}/GW-1/status", j({"status": 1}), "bad_status"),
        (f"{prefix}//WM-1/reading", j({"ts": ts, "total_l": 5}), "bad_topic"),
        (f"{prefix}/GW-1//event", j({"ts": ts, "type": "sos", "active": True}), "bad_topic"),
        (f"{prefix}/{'G' * 300}/status", b"online", "bad_topic"),
        (f"{prefix}/GW-1/WM-404/reading", j({"ts": ts, "total_l": 5}), "unknown_device"),
        (f"{prefix}/GW-1/WM-2/reading", j({"ts": ts, "total_l": 5}), "wrong_gateway"),
        (f"{prefix}/GW-404/status", b"online", "unknown_gateway"),
        (f"{prefix}/GW-1/SM-1/reading", j({"ts": ts, "total_l": 5}), "wrong_kind"),
        (meter, j({"ts": ts, "gas_lel_pct": 4.0}), "wrong_kind"),
    ]


def test_bad_inputs_are_kept_with_their_reason_and_good_ones_keep_flowing(
    db, settings_for, publisher, topic_prefix
):
    with connect(db) as conn:
        register_devices(
            conn,
            [
                ("WM-1", "GW-1", "water_meter", "R-1"),
                ("SOS-1", "GW-1", "sos_button", "R-1"),
                ("SM-1", "GW-1", "smoke", "R-1"),
                ("WM-2", "GW-2", "water_meter", "R-2"),
            ],
        )
    corpus = bad_inputs(topic_prefix)
    assert len(corpus) >= 30
    good_topic = f"{topic_prefix}/GW-1/WM-1/reading"
    batch_with_bad_rows = orjson.dumps(
        {
            "readings": [
                {"ts": (NOW - timedelta(hours=3)).isoformat(), "total_l": 50.0},
                {"ts": (NOW - timedelta(hours=2)).isoformat(), "total_l": -50.0},
                {"ts": (NOW - timedelta(hours=1)).isoformat(), "smoke": 2.0},
            ]
        }
    )
    with running_ingester(settings_for(db)) as ingester:
        for n, (topic, payload, _) in enumerate(corpus):
            publisher.publish(topic, payload)
            publisher.publish(good_topic, reading(NOW - timedelta(minutes=10, seconds=n), n))
        publisher.publish(good_topic, batch_with_bad_rows)
        processed(ingester, 2 * len(corpus) + 1)
        # still running: one more good reading after all that
        publisher.publish(good_topic, reading(NOW, 400.0))  # 400 L in 10 min: plausible
        processed(ingester, 2 * len(corpus) + 2)
        rejected_counts = dict(ingester.metrics.rejected)
    rejected = query(db, "SELECT topic, reason, payload_bytes, detail FROM rejected_input")
    expected = Counter((topic, reason) for topic, _, reason in corpus)
    expected[(good_topic, "bad_value")] += 1  # both bad rows of the batch, in one row
    assert Counter((topic, reason) for topic, reason, _, _ in rejected) == expected
    assert rejected_counts == dict(Counter(reason for _, reason in expected.elements()))
    sizes = {reason: size for _, reason, size, _ in rejected}
    assert sizes["payload_too_large"] > 70_000
    kept = query(db, "SELECT length(payload) FROM rejected_input WHERE reason = 'payload_too_large'")
    assert kept == [(8192,)]
    (row_detail,) = [d for _, _, _, d in rejected if " readings rejected: " in d]
    assert row_detail.startswith("2 of 3 readings rejected: readings[1]: bad_value: ")
    assert "; readings[2]: wrong_kind: " in row_detail
    stored = query(db, "SELECT total_l FROM water_reading_wide ORDER BY total_l")
    assert [t for (t,) in stored] == [*map(float, range(len(corpus))), 50.0, 400.0]


def test_an_impossible_jump_is_rejected_across_batches_and_restarts_and_a_swap_is_stored(
    db, settings_for, publisher, topic_prefix
):
    # issue 16, finding 3: +5e11 L between two 15-minute readings was stored
    with connect(db) as conn:
        register_devices(conn, [("WM-1", "GW-1", "water_meter", "R-1")])
    topic = f"{topic_prefix}/GW-1/WM-1/reading"

    def at(minutes: int) -> datetime:
        return NOW - timedelta(minutes=minutes)

    with running_ingester(settings_for(db)) as ingester:
        publisher.publish(topic, reading(at(60), 1000.0))
        processed(ingester, 1)
        publisher.publish(topic, reading(at(45), 5e11))  # judged against the committed 1000 L
        processed(ingester, 2)
        batch = {
            "readings": [
                {"ts": at(30).isoformat(), "total_l": 1005.0},
                {"ts": at(25).isoformat(), "total_l": 6e11},
            ]
        }
        publisher.publish(topic, orjson.dumps(batch))
        processed(ingester, 3)
    with running_ingester(settings_for(db)) as ingester:  # a restart: the last total from the database
        publisher.publish(topic, reading(at(20), 7e11))
        processed(ingester, 1)
        publisher.publish(topic, reading(at(15), 1010.0))
        publisher.publish(topic, reading(at(10), 4.0))  # the meter swapped: restarts near zero
        processed(ingester, 3)
    stored = query(db, "SELECT total_l FROM water_reading_wide ORDER BY ts")
    assert [t for (t,) in stored] == [1000.0, 1005.0, 1010.0, 4.0]
    rejected = query(db, "SELECT reason, detail FROM rejected_input ORDER BY id")
    assert [reason for reason, _ in rejected] == ["implausible_jump"] * 3
    assert rejected[1][1].startswith("1 of 2 readings rejected: readings[1]: implausible_jump: ")


def test_database_outage_holds_messages_and_loses_nothing(
    db, settings_for, publisher, topic_prefix, postgres_factory, caplog
):
    caplog.set_level(logging.INFO, logger="lovekey.ingest")
    name = urlsplit(db).path.lstrip("/")
    with connect(db) as conn:
        register_devices(conn, [("WM-1", "GW-1", "water_meter", "R-1")])
    topic = f"{topic_prefix}/GW-1/WM-1/reading"
    admin = postgres_factory.admin_url
    with running_ingester(settings_for(db)) as ingester:
        for n in range(100):
            publisher.publish(topic, reading(NOW - timedelta(minutes=n), n))
        processed(ingester, 100)
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
                )
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
            for n in range(100, 300):
                publisher.publish(topic, reading(NOW - timedelta(minutes=n), n))
            publisher.publish(topic, b"garbage while down")
            wait_for(lambda: ingester.metrics.outages == 1 and ingester.metrics.received >= 301)
            time.sleep(1.0)  # let it retry a few times
            assert ingester.metrics.acked == 100  # nothing acknowledged while it cannot commit
            assert not ingester.metrics.database_up
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name)))
        processed(ingester, 301)
        assert ingester.metrics.database_up
    assert query(db, "SELECT count(*), count(DISTINCT total_l) FROM water_reading_wide") == [(300, 300)]
    assert query(db, "SELECT reason FROM rejected_input") == [("malformed_json",)]
    records = [r for r in caplog.records if r.name == "lovekey.ingest.pipeline"]
    down = [r for r in records if "database unavailable" in r.getMessage()]
    back = [r for r in records if "database back" in r.getMessage()]
    assert [r.levelname for r in down] == ["ERROR"]
    assert len(back) == 1


def test_two_ingesters_on_a_shared_subscription_store_every_reading_once(
    db, settings_for, publisher, topic_prefix
):
    with connect(db) as conn:
        keys = register_devices(conn, [(f"WM-{n}", "GW-1", "water_meter", f"R-{n}") for n in range(20)])
    settings = settings_for(db)
    group = "lkt" + uuid.uuid4().hex[:8]
    base = settings.mqtt.client_id
    with (
        running_ingester(settings, shared_group=group, client_id=f"{base}-a") as first,
        running_ingester(settings, shared_group=group, client_id=f"{base}-b") as second,
    ):
        assert first.topics()[0] == f"$share/{group}/{topic_prefix}/+/+/reading"
        for n in range(100):
            for device in keys:
                publisher.publish(
                    f"{topic_prefix}/GW-1/{device}/reading", reading(NOW - timedelta(minutes=n), n)
                )
        wait_for(lambda: first.metrics.acked + second.metrics.acked >= 2000, timeout_s=60)
        shares = (first.metrics.received, second.metrics.received)
        duplicates = first.metrics.duplicates + second.metrics.duplicates
        stored = first.metrics.stored["water_reading"] + second.metrics.stored["water_reading"]
    assert min(shares) > 0, f"one ingester got nothing: {shares}"
    assert sum(shares) == 2000  # each message went to one member of the group
    assert (stored, duplicates) == (2000, 0)
    assert query(db, "SELECT count(*) FROM water_reading") == [(2000,)]


def test_a_reading_published_by_mosquitto_pub_is_stored(db, settings_for, mqtt_url, topic_prefix):
    with connect(db) as conn:
        keys = register_devices(conn, [("WM-1", "GW-1", "water_meter", "R-1")])
    address = urlsplit(mqtt_url)
    ts = NOW - timedelta(minutes=1)
    with running_ingester(settings_for(db)) as ingester:
        subprocess.run(
            [
                "mosquitto_pub",
                "-h",
                address.hostname or "127.0.0.1",
                "-p",
                str(address.port or 1883),
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-t",
                f"{topic_prefix}/GW-1/WM-1/reading",
                "-m",
                f'{{"ts": "{ts.isoformat()}", "total_m3": 12.345, "battery_v": 3.6}}',
            ],
            check=True,
            timeout=20,
        )
        processed(ingester, 1)
    assert query(db, "SELECT device_key, ts, total_l FROM water_reading_wide") == [
        (keys["WM-1"], ts, pytest.approx(12345.0)),
    ]
    assert query(db, "SELECT battery_v FROM device") == [(pytest.approx(3.6),)]


def test_away_and_home_buttons_set_the_resident_status_and_events_notify(
    db, settings_for, publisher, topic_prefix
):
    with connect(db) as conn:
        register_devices(
            conn,
            [
                ("AW-1", "GW-1", "away_button", "R-1"),
                ("SOS-1", "GW-1", "sos_button", "R-1"),
                ("AW-2", "GW-1", "away_button", "R-2"),
            ],
        )
        conn.execute("UPDATE resident SET status = 'moved' WHERE id = 'R-2'")
        conn.commit()

    def event(device: str, kind: str, ts: datetime, active: bool = True) -> None:
        publisher.publish(
            f"{topic_prefix}/GW-1/{device}/event",
            orjson.dumps({"ts": ts.isoformat(), "type": kind, "active": active}),
        )

    def residents() -> dict[str, tuple[Any, ...]]:
        rows = query(db, "SELECT id, status, away_until, away_reason FROM resident")
        return {row[0]: row[1:] for row in rows}

    away_at = NOW - timedelta(minutes=30)
    with (
        psycopg.connect(db, autocommit=True) as listener,
        running_ingester(settings_for(db, away_default_h=48)) as ingester,
    ):
        listener.execute("LISTEN lovekey_events")
        event("AW-1", "away", away_at)
        event("AW-2", "away", away_at)
        processed(ingester, 2)
        assert residents() == {
            "R-1": ("away", away_at + timedelta(hours=48), "away_button"),
            "R-2": ("moved", None, None),
        }
        event("AW-1", "home", NOW - timedelta(minutes=10))
        processed(ingester, 3)
        assert residents()["R-1"] == ("active", None, None)
        event("AW-1", "away", NOW - timedelta(minutes=20))  # late: older than the home press
        event("AW-1", "home", NOW - timedelta(minutes=10))  # redelivered duplicate
        processed(ingester, 5)
        assert residents()["R-1"] == ("active", None, None)
        while list(listener.notifies(timeout=0.1)):  # drain what came so far
            pass
        event("SOS-1", "sos", NOW)
        notices = list(listener.notifies(timeout=10, stop_after=1))
        assert [n.channel for n in notices] == ["lovekey_events"]
        processed(ingester, 6)
    assert query(db, "SELECT type, active FROM device_event ORDER BY ts, type") == [
        ("away", True),
        ("away", True),
        ("away", True),
        ("home", True),
        ("sos", True),
    ]


def test_gateway_status_and_last_seen(db, settings_for, publisher, topic_prefix):
    with connect(db) as conn:
        register_devices(
            conn, [("WM-1", "GW-1", "water_meter", "R-1"), ("WM-2", "GW-2", "water_meter", "R-2")]
        )

    def gateways() -> dict[str, tuple[Any, ...]]:
        rows = query(
            db, "SELECT id, online, status_changed_at IS NOT NULL, last_seen IS NOT NULL FROM gateway"
        )
        return {row[0]: row[1:] for row in rows}

    with running_ingester(settings_for(db)) as ingester:
        publisher.publish(f"{topic_prefix}/GW-1/status", b"online", retain=True)
        publisher.publish(f"{topic_prefix}/GW-2/WM-2/reading", reading(NOW, 1.0))
        processed(ingester, 2)
        assert gateways() == {"GW-1": (True, True, True), "GW-2": (None, False, True)}
        changed = query(db, "SELECT status_changed_at FROM gateway WHERE id = 'GW-1'")
        publisher.publish(f"{topic_prefix}/GW-1/status", b"online", retain=True)
        processed(ingester, 3)
        assert query(db, "SELECT status_changed_at FROM gateway WHERE id = 'GW-1'") == changed
        publisher.publish(f"{topic_prefix}/GW-1/status", b'{"status": "offline"}', retain=True)
        processed(ingester, 4)
        assert gateways()["GW-1"] == (False, True, True)
        assert query(db, "SELECT status_changed_at > %s FROM gateway WHERE id = 'GW-1'", changed[0][0]) == [
            (True,)
        ]


def test_refused_rows_are_kept_and_missing_partitions_are_created(
    db, settings_for, publisher, topic_prefix, caplog
):
    caplog.set_level(logging.WARNING, logger="lovekey.ingest")
    with connect(db, autocommit=True) as conn:
        register_devices(conn, [("WM-1", "GW-1", "water_meter", "R-1")])
        # a rule the codec does not know, so only the database can refuse the row
        conn.execute(
            "ALTER TABLE water_reading ADD CONSTRAINT test_cap"
            " CHECK (reading_total_l(total_dl, total_l_exact) < 1e6)"
        )
        current = [p for p, lo, hi in existing_partitions(conn, "water_reading") if lo <= NOW < hi]
        conn.execute(
            sql.SQL("ALTER TABLE water_reading DETACH PARTITION {}").format(sql.Identifier(current[0]))
        )
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(current[0])))
    topic = f"{topic_prefix}/GW-1/WM-1/reading"
    with running_ingester(settings_for(db, batch_ms=300)) as ingester:
        for n in range(20):
            publisher.publish(topic, reading(NOW - timedelta(minutes=n), 10.0 * n))
        # before the others in time, so no earlier reading makes it an implausible jump
        publisher.publish(topic, reading(NOW - timedelta(minutes=25), 5e6))
        processed(ingester, 21)
    assert query(db, "SELECT count(*) FROM water_reading") == [(20,)]
    ((reason, detail, payload),) = query(db, "SELECT reason, detail, payload FROM rejected_input")
    assert reason == "storage_refused"
    assert detail.startswith("23514")
    assert orjson.loads(payload)["total_l"] == 5e6
    assert any("created missing partitions" in r.getMessage() for r in caplog.records)


def test_metrics_endpoint(db, settings_for, publisher, topic_prefix):
    with connect(db) as conn:
        register_devices(conn, [("WM-1", "GW-1", "water_meter", "R-1")])
    port = free_port()
    with running_ingester(settings_for(db, metrics_port=port)) as ingester:
        for n in range(3):
            publisher.publish(f"{topic_prefix}/GW-1/WM-1/reading", reading(NOW, float(n)))
        publisher.publish(f"{topic_prefix}/GW-1/WM-1/reading", b"?")
        processed(ingester, 4)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    assert 'lovekey_ingest_stored_rows_total{table="water_reading"} 1.0' in text
    assert "lovekey_ingest_duplicate_rows_total 2.0" in text
    assert 'lovekey_ingest_rejected_total{reason="malformed_json"} 1.0' in text
    assert "lovekey_ingest_received_messages_total 4.0" in text
    assert "lovekey_ingest_database_up 1.0" in text
    assert 'lovekey_ingest_lag_seconds_bucket{le="+Inf"} 3.0' in text


def test_readings_events_and_duplicates_on_each_backend(backend, settings_for, publisher, topic_prefix):
    db = backend.create("ingest_backend")
    with connect(db) as conn:
        register_devices(conn, [("WM-1", "GW-1", "water_meter", "R-1"), ("GAS-1", "GW-1", "gas", "R-1")])
    meter = f"{topic_prefix}/GW-1/WM-1/reading"
    with running_ingester(settings_for(db)) as ingester:
        for n in range(30):
            publisher.publish(meter, reading(NOW - timedelta(days=n), float(n)))
        publisher.publish(
            meter,
            orjson.dumps(
                {
                    "readings": [
                        {"ts": (NOW - timedelta(days=n)).isoformat(), "total_l": float(n)} for n in range(10)
                    ]
                }
            ),
        )
        publisher.publish(
            f"{topic_prefix}/GW-1/GAS-1/reading", orjson.dumps({"ts": NOW.isoformat(), "gas_lel_pct": 12.5})
        )
        publisher.publish(
            f"{topic_prefix}/GW-1/GAS-1/event",
            orjson.dumps({"ts": NOW.isoformat(), "type": "gas", "active": True}),
        )
        processed(ingester, 33)
        assert ingester.metrics.duplicates == 10
    assert query(db, "SELECT count(*) FROM water_reading") == [(30,)]
    assert query(db, "SELECT gas_lel_pct FROM sensor_reading") == [(12.5,)]
    assert query(db, "SELECT type, active FROM device_event") == [("gas", True)]


def test_retiring_a_shared_member_writes_what_its_session_held(
    db, settings_for, publisher, mqtt_url, topic_prefix
):
    with connect(db) as conn:
        register_devices(conn, [(f"WM-{n}", "GW-1", "water_meter", f"R-{n}") for n in range(10)])
    settings = settings_for(db)
    group = "lkt" + uuid.uuid4().hex[:8]
    gone = f"{settings.mqtt.client_id}-gone"
    with running_ingester(settings, shared_group=group, client_id=gone):
        pass  # joined the group, then left for good: its session stays and gets its share
    with running_ingester(settings, shared_group=group, client_id=f"{settings.mqtt.client_id}-a") as a:
        for n in range(200):
            publisher.publish(
                f"{topic_prefix}/GW-1/WM-{n % 10}/reading", reading(NOW - timedelta(minutes=n), float(n))
            )
        publisher.flush()
        wait_for(lambda: a.metrics.received > 0 and a.metrics.acked == a.metrics.received)
        time.sleep(0.5)
        live_share = a.metrics.acked
    waiting = 200 - live_share
    assert query(db, "SELECT count(*) FROM water_reading") == [(live_share,)]
    assert waiting > 0, "the broker gave everything to the live member"
    with running_ingester(settings, shared_group=group, client_id=gone, retire=True) as retiring:
        wait_for(lambda: retiring.retired, timeout_s=30)
        assert retiring.metrics.acked == waiting
    assert query(db, "SELECT count(*) FROM water_reading") == [(200,)]
    # the broker no longer keeps (or routes anything to) the retired session
    address = BrokerAddress.parse(mqtt_url)
    present: list[bool] = []
    probe = new_client(address, gone)
    probe.on_connect = lambda c, u, flags, r, p: present.append(flags.session_present)
    probe.connect(
        address.host,
        address.port,
        clean_start=False,
        properties=connect_properties(session_expiry_s=0, receive_maximum=10),
    )
    probe.loop_start()
    try:
        wait_for(lambda: present, timeout_s=10)
    finally:
        probe.disconnect()
        probe.loop_stop()
    assert present == [False]


def test_events_a_device_kind_cannot_produce_change_nothing_and_are_kept_as_wrong_kind(
    db, settings_for, publisher, topic_prefix
):
    with connect(db) as conn:
        register_devices(
            conn,
            [
                ("WM-1", "GW-1", "water_meter", "R-1"),
                ("SM-1", "GW-1", "smoke", "R-1"),
                ("AW-1", "GW-1", "away_button", "R-1"),
            ],
        )

    def event(device: str, kind: str) -> None:
        publisher.publish(
            f"{topic_prefix}/GW-1/{device}/event",
            orjson.dumps({"ts": (NOW - timedelta(minutes=5)).isoformat(), "type": kind, "active": True}),
        )

    with running_ingester(settings_for(db)) as ingester:
        event("WM-1", "away")  # a meter cannot say the resident went out ...
        event("WM-1", "smoke")  # ... nor raise a fire alarm
        event("SM-1", "sos")  # a smoke detector cannot call for help
        event("AW-1", "home")  # the real button still works
        processed(ingester, 4)
    assert query(db, "SELECT status, away_until FROM resident WHERE id = 'R-1'") == [("active", None)]
    assert query(db, "SELECT type FROM device_event") == [("home",)]
    rejected = query(db, "SELECT device_id, reason, detail FROM rejected_input ORDER BY device_id, detail")
    assert [(device, reason) for device, reason, _ in rejected] == [
        ("SM-1", "wrong_kind"),
        ("WM-1", "wrong_kind"),
        ("WM-1", "wrong_kind"),
    ]
    assert "'sos'" in rejected[0][2]
