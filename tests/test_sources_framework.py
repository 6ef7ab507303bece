"""The sources framework: `[[sources]]` settings, the registry's `external_id`, the planner's
lookup by it, state levels stored as events only where they change, and `rejected_input`
keeping the source's name - on real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lovekey.config import load_settings
from lovekey.devices import apply_registry, export_registry, parse_registry
from lovekey.errors import ImportRejected, PayloadError, SettingsError
from lovekey.ingest import reasons
from lovekey.ingest.batch import ReceivedMessage, plan_batch
from lovekey.ingest.decoded import DecodedMessage, EventMessage, WaterReading
from lovekey.ingest.registry_cache import find_by_external_id, load_external, load_registry
from lovekey.ingest.writer import prepare, write_plan
from lovekey.storage import connect
from lovekey.vocabulary import EventType

NOW = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)

REGISTRY = """device_id,gateway_id,resident_id,kind,external_id
WM-1,cs-east,R-1,water_meter,0101010101010101
SMK-1,z2m-home,R-1,smoke,kitchen smoke
WM-2,GW-1,R-2,water_meter,
"""


def test_sources_are_read_from_the_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "lovekey.toml"
    path.write_text(
        """
[[sources]]
name = "cs-east"
kind = "chirpstack"
topic = "application/+/device/+/event/up"

[[sources]]
name = "z2m-home"
kind = "zigbee2mqtt"
broker_url = "mqtt://z2m:secret@10.0.0.5:1883"
timezone = "Asia/Shanghai"

[[sources]]
name = "ctwing"
kind = "ctwing"
path = "/receive/ctwing"
token = "s3cret-token"
""",
        encoding="utf-8",
    )
    settings = load_settings(path, environ={})
    cs, z2m, ctwing = settings.sources
    assert (cs.kind, cs.gateway, cs.topic) == ("chirpstack", "cs-east", "application/+/device/+/event/up")
    assert z2m.broker_url == "mqtt://z2m:secret@10.0.0.5:1883"
    assert not z2m.is_http
    assert ctwing.is_http
    assert ctwing.path == "/receive/ctwing"
    described = settings.describe()["sources"]
    assert "secret" not in repr(described)
    assert "s3cret" not in repr(described)
    assert "secret" not in repr(settings.sources)


@pytest.mark.parametrize(
    "entries",
    [
        [{"name": "a", "kind": "chirpstack"}, {"name": "a", "kind": "tts"}],  # same name
        [{"name": "A B", "kind": "chirpstack"}],  # not one topic level
        [{"name": "a", "kind": "nbiot"}],  # unknown kind
        [{"name": "a", "kind": "ctwing", "topic": "x/#"}],  # HTTP with a topic
        [{"name": "a", "kind": "tts", "path": "/x"}],  # MQTT with a path
        [{"name": "a", "kind": "tts", "topic": "a/#/b"}],  # not a filter
        [{"name": "a", "kind": "tts", "timezone": "Mars/Base"}],
        [{"name": "a", "kind": "tts", "broker_url": "http://x"}],
        [{"name": "a", "kind": "native"}, {"name": "b", "kind": "native"}],
        [{"name": "a", "kind": "native", "topic": "x/#"}],  # native topics follow topic_prefix
    ],
)
def test_bad_source_entries_are_refused(entries: list[dict[str, Any]]) -> None:
    with pytest.raises(SettingsError):
        load_settings(environ={}, sources=entries)


def test_external_ids_are_imported_exported_and_unique_per_gateway(postgres_factory: Any) -> None:
    url = postgres_factory.create("sources")
    with connect(url) as conn:
        apply_registry(conn, parse_registry(REGISTRY))
        assert "external_id" in export_registry(conn).splitlines()[0].split(",")
        assert ",0101010101010101," in export_registry(conn)
        # any case finds it; another gateway's device with the same id is another device
        assert find_by_external_id(conn, "0101010101010101".upper()) == [("WM-1", "cs-east")]
        assert find_by_external_id(conn, "kitchen smoke", "cs-east") == []
        assert load_external(conn) == {
            ("cs-east", "0101010101010101"): "WM-1",
            ("z2m-home", "kitchen smoke"): "SMK-1",
        }
    with pytest.raises(ImportRejected, match="already names a device of gateway 'cs-east'"):
        parse_registry(REGISTRY + "WM-3,cs-east,R-3,water_meter,0101010101010101\n")
    with pytest.raises(ImportRejected, match="external_id: 'bad\\+id' is not an id at a source"):
        parse_registry(REGISTRY + "WM-3,cs-east,R-3,water_meter,bad+id\n")


def _source_message(external_id: str, gateway: str, **fields: Any) -> ReceivedMessage:
    decoded = DecodedMessage("reading", gateway, external_id, external=True, **fields)
    return ReceivedMessage(f"t/{external_id}", b"raw", decoded, "src")


def test_planner_finds_source_devices_by_external_id(postgres_factory: Any) -> None:
    url = postgres_factory.create("sources")
    with connect(url) as conn:
        apply_registry(conn, parse_registry(REGISTRY))
        devices, gateways = load_registry(conn)
        external = load_external(conn)
    reading = WaterReading(NOW, 1234.0)
    messages = [
        _source_message("0101010101010101", "cs-east", readings=(reading,)),
        _source_message("0101010101010101".upper(), "cs-east", readings=(reading,)),  # case
        _source_message("0202020202020202", "cs-east", readings=(reading,)),  # unknown
        _source_message("0101010101010101", "z2m-home", readings=(reading,)),  # other gateway
        ReceivedMessage("t/x", b"\x00junk", PayloadError(reasons.MALFORMED_JSON, "junk"), "src"),
    ]
    plan = plan_batch(
        messages, devices, gateways, topic_prefix="lovekey", now=NOW, keep_bytes=64, external=external
    )
    assert [row[2] for row in plan.water] == [devices["WM-1"].key] * 2
    assert [(row[3], origin) for row, origin in zip(plan.rejected, plan.rejected_origin, strict=True)] == [
        ("unknown_device", ("src", "0202020202020202")),
        ("unknown_device", ("src", "0101010101010101")),
        ("malformed_json", ("src", None)),
    ]
    with connect(url, autocommit=True) as conn:
        prepare(conn)
        write_plan(conn, plan, devices_seen=[], gateways_seen=[], away_s=60)
        rows = conn.execute(
            "SELECT source, external_id, device_id, reason, payload FROM rejected_input ORDER BY id"
        ).fetchall()
    assert rows == [
        ("src", "0202020202020202", None, "unknown_device", b"raw"),
        ("src", "0101010101010101", None, "unknown_device", b"raw"),
        ("src", None, None, "malformed_json", b"\x00junk"),
    ]


def _snapshot(ts: datetime, smoke: bool, gas: bool = False) -> ReceivedMessage:
    levels = (
        EventMessage(ts, EventType.SMOKE, smoke),
        EventMessage(ts, EventType.GAS, gas),  # a smoke detector's inactive gas says nothing
        EventMessage(ts, EventType.TAMPER, False),
    )
    return ReceivedMessage(
        "z/kitchen smoke",
        b"{}",
        DecodedMessage("reading", "z2m-home", "kitchen smoke", external=True, levels=levels),
        "z2m",
    )


def test_levels_are_stored_as_events_only_where_they_change(postgres_factory: Any) -> None:
    url = postgres_factory.create("sources")
    with connect(url) as conn:
        apply_registry(conn, parse_registry(REGISTRY))

    def write(*messages: ReceivedMessage) -> int:
        with connect(url) as conn:
            devices, gateways = load_registry(conn)
            external = load_external(conn)
        plan = plan_batch(
            list(messages),
            devices,
            gateways,
            topic_prefix="lovekey",
            now=NOW,
            keep_bytes=64,
            external=external,
        )
        with connect(url, autocommit=True) as conn:
            prepare(conn)
            return write_plan(conn, plan, devices_seen=[], gateways_seen=[], away_s=60).events

    t = [NOW - timedelta(minutes=10 - i) for i in range(10)]
    assert write(_snapshot(t[0], False)) == 0  # quiet from the start: nothing to store
    assert write(_snapshot(t[1], True), _snapshot(t[2], True)) == 1  # raised once
    assert write(_snapshot(t[3], True)) == 0  # the same snapshot again
    assert write(_snapshot(t[1], True)) == 0  # a redelivery
    assert write(_snapshot(t[4], False), _snapshot(t[5], True), _snapshot(t[6], True)) == 2
    with connect(url) as conn:
        events = conn.execute("SELECT ts, type, active FROM device_event ORDER BY ts").fetchall()
    assert events == [(t[1], "smoke", True), (t[4], "smoke", False), (t[5], "smoke", True)]
    # an active gas level from a smoke detector is a misregistered device: rejected whole
    bad = _snapshot(t[7], True, gas=True)
    with connect(url) as conn:
        devices, gateways = load_registry(conn)
        external = load_external(conn)
    plan = plan_batch(
        [bad], devices, gateways, topic_prefix="lovekey", now=NOW, keep_bytes=64, external=external
    )
    assert [row[3] for row in plan.rejected] == ["wrong_kind"]
    assert not plan.levels


def test_a_caller_can_store_adapted_messages_at_once(postgres_factory: Any, make_settings: Any) -> None:
    """The HTTP receiver's path: decode, store, and only then answer."""
    from lovekey.ingest.inbox import Inbox
    from lovekey.ingest.metrics import IngestMetrics
    from lovekey.ingest.pipeline import BatchPipeline, Database

    url = postgres_factory.create("sources")
    with connect(url) as conn:
        apply_registry(conn, parse_registry(REGISTRY))
    settings = make_settings(database_url=url)
    pipeline = BatchPipeline(
        settings, Inbox(max_messages=10, max_bytes=1 << 20), IngestMetrics(pending=lambda: 0)
    )
    recent = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    message = _source_message("0101010101010101", "cs-east", readings=(WaterReading(recent, 1234.0),))
    with Database(url) as database:
        first = pipeline.store(database, [message])
        again = pipeline.store(database, [message])  # the platform's retry
    assert (first.water, again.water, again.duplicates) == (1, 0, 1)


def test_level_memory_skips_only_what_cannot_be_a_change() -> None:
    from lovekey.ingest.level_memory import LevelMemory

    memory = LevelMemory()
    t = [NOW + timedelta(minutes=i) for i in range(5)]
    first = [(t[1], 7, "smoke", True, None)]
    assert memory.changes(first) == first  # nothing known: the database judges
    memory.committed(first)
    same_later = (t[2], 7, "smoke", True, None)
    other_later = (t[3], 7, "smoke", False, None)
    same_earlier = (t[0], 7, "smoke", True, None)  # a late one: the database judges
    other_type = (t[2], 7, "tamper", True, None)
    assert memory.changes([same_later, other_later, same_earlier, other_type]) == [
        other_later,
        same_earlier,
        other_type,
    ]
    memory.committed([other_later, same_earlier])
    assert memory.changes([(t[4], 7, "smoke", True, None)]) == [(t[4], 7, "smoke", True, None)]
    assert len(memory) == 1
