"""The MQTT sources end to end: real Mosquitto, real PostgreSQL, the ingester in a thread.

For each source: its documented example payloads are stored exactly once (each is published
twice), every kind of bad input of tests/test_sources_adapters.py that the source's
subscription delivers is kept in `rejected_input` with its reason and the source's name,
and the good messages published after the bad ones are stored all the same.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from paho.mqtt.client import topic_matches_sub

from lovekey.bench.support.publisher import Publisher, running_ingester, wait_for
from lovekey.config import Settings
from lovekey.devices.registry import DeviceRow, GatewayRow, HouseholdRow, ResidentRow, upsert_rows
from lovekey.ingest.ingester import Ingester
from lovekey.storage import connect
from tests import test_sources_adapters as bad
from tests.fix_sources import (
    CHIRPSTACK_APP,
    CHIRPSTACK_OPTIONS,
    CHIRPSTACK_UP,
    CJT188_2004_BODY,
    CJT188_2018_BODY,
    CJT188_ADDRESS,
    TTS_TOPIC,
    TTS_UP,
    WMBUS_IPERL,
    WMBUS_MULTICAL21,
    Z2M_GAS_ALARM,
    Z2M_GAS_QUIET,
    Z2M_ONLINE_LEGACY,
    Z2M_SMOKE_ALARM,
    Z2M_SMOKE_QUIET,
    as_hex_text,
    chirpstack_two_gateways,
    cjt188_frame,
    dumps,
)

# the documented examples date from 2015 to 2024: keep them inside retention
RETENTION_DAYS = 4500
PARTITION_DAYS = 366


@dataclass
class Case:
    """One source: its `[[sources]]` entry (topic under the test's prefix), its devices,
    good messages (each published twice), and bad ones with the reason each must get."""

    entry: dict[str, Any]
    devices: list[tuple[str, str, str]]  # (device id, kind, external id)
    good: list[tuple[str, bytes]]
    bad: list[tuple[str, bytes, str]]
    water: int = 0  # distinct readings the good messages hold
    sensor: int = 0
    events: list[tuple[str, bool]] = field(default_factory=list)  # (type, active), in ts order


def chirpstack(prefix: str) -> Case:
    topic = f"{prefix}/cs/application/{CHIRPSTACK_APP}/device/0101010101010101/event/up"
    unknown = copy.deepcopy(CHIRPSTACK_UP)
    unknown["deviceInfo"]["devEui"] = "0202020202020202"
    return Case(
        entry={
            "kind": "chirpstack",
            "topic": f"{prefix}/cs/application/+/device/+/event/up",
            "options": CHIRPSTACK_OPTIONS,
        },
        devices=[("WM-CS-1", "water_meter", "0101010101010101")],
        # the second uplink was heard by two radio gateways: one event, one reading
        good=[(topic, dumps(CHIRPSTACK_UP)), (topic, dumps(chirpstack_two_gateways()))],
        bad=[(f"{prefix}/cs/{t}", p, r) for t, p, r in bad.CHIRPSTACK_BAD]
        + [
            (topic.replace("0101010101010101", "0202020202020202"), dumps(unknown), "unknown_device"),
            (topic, b"{" + b" " * 70_000 + b"}", "payload_too_large"),
        ],
        water=2,
    )


def tts(prefix: str) -> Case:
    topic = f"{prefix}/{TTS_TOPIC}"
    stranger = copy.deepcopy(TTS_UP)
    stranger["end_device_ids"]["dev_eui"] = "70B3D57ED0000000"
    return Case(
        entry={"kind": "tts", "topic": f"{prefix}/v3/+/devices/+/up", "options": CHIRPSTACK_OPTIONS},
        devices=[("WM-TTS-1", "water_meter", "0004a30b001c0530")],  # any case
        good=[(topic, dumps(TTS_UP))],
        bad=[(f"{prefix}/{t}", p, r) for t, p, r in bad.TTS_BAD]
        + [(topic, dumps(stranger), "unknown_device")],
        water=1,
    )


def wmbusmeters(prefix: str) -> Case:
    return Case(
        entry={"kind": "wmbusmeters", "topic": f"{prefix}/wmbusmeters/#"},
        devices=[("WM-WB-1", "water_meter", "33225544"), ("WM-WB-2", "water_meter", "12345678")],
        good=[
            (f"{prefix}/wmbusmeters/33225544", WMBUS_IPERL),
            (f"{prefix}/wmbusmeters/12345678", WMBUS_MULTICAL21),
        ],
        bad=[(f"{prefix}/wmbusmeters/33225544", p, r) for p, r in bad.WMBUS_BAD]
        + [(f"{prefix}/wmbusmeters/1", WMBUS_IPERL.replace(b"33225544", b"99999999"), "unknown_device")],
        water=2,
    )


def zigbee2mqtt(prefix: str) -> Case:
    base = f"{prefix}/zigbee2mqtt"
    now = datetime.now(UTC).replace(microsecond=0)

    def at(minutes: int, body: dict[str, Any]) -> bytes:
        return dumps({**body, "last_seen": (now - timedelta(minutes=60 - minutes)).isoformat()})

    smoke, gas = f"{base}/kitchen smoke", f"{base}/0x00158d0001a2b3c4"
    return Case(
        entry={"kind": "zigbee2mqtt", "topic": f"{base}/#"},
        devices=[("SM-Z-1", "smoke", "kitchen smoke"), ("GS-Z-1", "gas", "0x00158d0001a2b3c4")],
        good=[
            (f"{base}/bridge/state", Z2M_ONLINE_LEGACY),
            (f"{base}/bridge/info", b'{"version":"1.35.1"}'),  # bookkeeping: a sign of life
            (smoke, at(1, Z2M_SMOKE_QUIET)),
            (smoke, at(2, Z2M_SMOKE_ALARM)),  # raised once ...
            (smoke, at(3, Z2M_SMOKE_ALARM)),  # ... however often the snapshot repeats
            (smoke, at(4, Z2M_SMOKE_QUIET)),
            (gas, at(5, {**Z2M_GAS_QUIET, "voltage": 3000})),
            (gas, at(6, {**Z2M_GAS_ALARM, "voltage": 2900})),
        ],
        bad=[(f"{prefix}/{t}", p, r) for t, p, r in bad.Z2M_BAD]
        + [
            (f"{base}/hall smoke", dumps(Z2M_SMOKE_ALARM), "unknown_device"),
            (smoke, at(7, {"smoke": False, "gas": True}), "wrong_kind"),
        ],
        sensor=2,
        events=[("smoke", True), ("smoke", False), ("gas", True)],
    )


def cjt188(prefix: str) -> Case:
    other = CJT188_2018_BODY.replace("44 33 22 11 00", "45 33 22 11 00", 1)
    return Case(
        entry={"kind": "cjt188", "topic": f"{prefix}/cjt188/#", "timezone": "Asia/Shanghai"},
        devices=[("WM-C-1", "water_meter", CJT188_ADDRESS)],
        good=[
            (f"{prefix}/cjt188/c1", as_hex_text(cjt188_frame(CJT188_2018_BODY))),
            (f"{prefix}/cjt188/c1", cjt188_frame(CJT188_2004_BODY, wake=0)),  # binary, no preamble
        ],
        bad=[(f"{prefix}/cjt188/c1", p, r) for p, r in bad.CJT188_BAD]
        + [(f"{prefix}/cjt188/c1", cjt188_frame(other), "unknown_device")],
        water=2,
        events=[("battery_low", True)],
    )


CASES: dict[str, Callable[[str], Case]] = {
    "chirpstack": chirpstack,
    "tts": tts,
    "wmbusmeters": wmbusmeters,
    "zigbee2mqtt": zigbee2mqtt,
    "cjt188": cjt188,
}


@pytest.fixture
def db(postgres_factory: Any) -> str:
    return postgres_factory.create("sources", retention_days=RETENTION_DAYS, partition_days=PARTITION_DAYS)


@pytest.fixture
def settings_for(
    make_settings: Callable[..., Settings], mqtt_url: str, topic_prefix: str
) -> Callable[..., Settings]:
    def build(database_url: str, sources: list[dict[str, Any]]) -> Settings:
        return make_settings(
            database_url=database_url,
            mqtt_url=mqtt_url,
            mqtt={
                "topic_prefix": topic_prefix,
                "client_id": "lkt-" + topic_prefix.rsplit("/", 1)[-1],
                "session_expiry_s": 120,
            },
            ingest={"batch_ms": 50, "registry_miss_retry_s": 0, "summary_interval_s": 3600},
            storage={"retention_days": RETENTION_DAYS, "partition_days": PARTITION_DAYS},
            sources=sources,
        )

    return build


@pytest.fixture
def publisher(mqtt_url: str) -> Iterator[Publisher]:
    with Publisher(mqtt_url) as pub:
        yield pub


def register(url: str, gateway: str, devices: list[tuple[str, str, str]]) -> None:
    rows: list[Any] = [GatewayRow(gateway), HouseholdRow("H-S"), ResidentRow("R-S", "H-S")]
    rows += [
        DeviceRow(device_id, kind, "H-S", gateway, resident_id="R-S", external_id=external_id)
        for device_id, kind, external_id in devices
    ]
    with connect(url) as conn:
        upsert_rows(conn, rows)


def query(url: str, statement: str) -> list[tuple[Any, ...]]:
    with connect(url) as conn:
        return conn.execute(statement).fetchall()  # type: ignore[arg-type]


def processed(ingester: Ingester, messages: int) -> None:
    wait_for(lambda: ingester.metrics.acked >= messages, timeout_s=30)


@pytest.mark.parametrize("kind", list(CASES))
def test_source_stores_documented_payloads_once_and_keeps_every_bad_input(
    kind: str, db: str, settings_for: Callable[..., Settings], publisher: Publisher, topic_prefix: str
) -> None:
    case = CASES[kind](topic_prefix)
    name = f"src-{kind}"
    register(db, name, case.devices)
    # only what the subscription delivers: a topic outside the filter never reaches LoveKey
    delivered = [b for b in case.bad if topic_matches_sub(case.entry["topic"], b[0])]
    assert len({reason for _, _, reason in delivered}) >= 5, "too few kinds of bad input"
    assert len(delivered) >= 10
    settings = settings_for(db, [{"name": name, **case.entry}])
    with running_ingester(settings) as ingester:
        sent = 0
        first, rest = case.good[:1], case.good[1:]
        for topic, payload in [*first, *((t, p) for t, p, _ in delivered), *rest, *case.good]:
            publisher.publish(topic, payload)
            sent += 1
        processed(ingester, sent)
    water = query(db, "SELECT count(*), count(DISTINCT (device_key, ts)) FROM water_reading")[0]
    assert water == (case.water, case.water)  # each good message was published twice
    assert query(db, "SELECT count(*) FROM sensor_reading")[0][0] == case.sensor
    events = query(db, "SELECT type, active FROM device_event ORDER BY ts")
    assert events == case.events
    rejected = query(db, "SELECT source, reason, payload FROM rejected_input ORDER BY id")
    assert [(source, reason) for source, reason, _ in rejected] == [(name, r) for _, _, r in delivered]
    kept = [payload for *_, payload in rejected]
    assert kept == [p[: settings.ingest.rejected_keep_bytes] for _, p, _ in delivered]


def test_zigbee2mqtt_bridge_state_moves_the_gateway(
    db: str, settings_for: Callable[..., Settings], publisher: Publisher, topic_prefix: str
) -> None:
    register(db, "z2m", [("SM-Z-1", "smoke", "kitchen smoke")])
    base = f"{topic_prefix}/zigbee2mqtt"
    settings = settings_for(db, [{"name": "z2m", "kind": "zigbee2mqtt", "topic": f"{base}/#"}])
    with running_ingester(settings) as ingester:
        publisher.publish(f"{base}/bridge/state", b'{"state":"online"}')
        processed(ingester, 1)
        assert query(db, "SELECT online FROM gateway WHERE id = 'z2m'") == [(True,)]
        publisher.publish(f"{base}/kitchen smoke/availability", b"offline")  # a device's: no change
        publisher.publish(f"{base}/bridge/state", b"offline")
        processed(ingester, 3)
    assert query(db, "SELECT online FROM gateway WHERE id = 'z2m'") == [(False,)]


def test_a_restart_raises_no_alarm_again(
    db: str, settings_for: Callable[..., Settings], publisher: Publisher, topic_prefix: str
) -> None:
    """The edge is kept in the database: the same alarm snapshot after a restart is no new event."""
    register(db, "z2m", [("SM-Z-1", "smoke", "kitchen smoke")])
    base = f"{topic_prefix}/zigbee2mqtt"
    settings = settings_for(db, [{"name": "z2m", "kind": "zigbee2mqtt", "topic": f"{base}/#"}])
    for _ in range(2):  # no last_seen: each snapshot is read at its receipt
        with running_ingester(settings) as ingester:
            publisher.publish(f"{base}/kitchen smoke", dumps(Z2M_SMOKE_ALARM))
            processed(ingester, 1)
    assert query(db, "SELECT type, active FROM device_event") == [("smoke", True)]
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM rejected_input").fetchone() == (0,)


def test_an_alarm_that_clears_within_one_batch_is_still_raised(
    db: str, settings_for: Callable[..., Settings], publisher: Publisher, topic_prefix: str
) -> None:
    """Without last_seen each snapshot is read at its own receipt: an alarm and its clearing
    a few milliseconds apart, in one batch, are two events, not one time with two states."""
    register(db, "z2m", [("SM-Z-1", "smoke", "kitchen smoke")])
    base = f"{topic_prefix}/zigbee2mqtt"
    settings = settings_for(db, [{"name": "z2m", "kind": "zigbee2mqtt", "topic": f"{base}/#"}])
    with running_ingester(settings) as ingester:
        for body in (Z2M_SMOKE_QUIET, Z2M_SMOKE_ALARM, Z2M_SMOKE_QUIET):
            publisher.publish(f"{base}/kitchen smoke", dumps(body))
        processed(ingester, 3)
    assert query(db, "SELECT type, active FROM device_event ORDER BY ts") == [
        ("smoke", True),
        ("smoke", False),
    ]
