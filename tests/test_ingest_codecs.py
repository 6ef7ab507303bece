"""The pure codecs: topics, readings, batches, events, status and every rejection reason."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from lovekey.errors import PayloadError
from lovekey.ingest import REASONS, SensorReading, WaterReading, decode_message
from lovekey.ingest.decoded import EventMessage

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PREFIX = "lovekey"
READING = "lovekey/GW-01/WM-0001/reading"
EVENT = "lovekey/GW-01/SOS-0001/event"
STATUS = "lovekey/GW-01/status"


def decode(topic: str, payload: bytes | dict | str, **kwargs):
    if isinstance(payload, dict):
        payload = orjson.dumps(payload)
    elif isinstance(payload, str):
        payload = payload.encode()
    kwargs.setdefault("max_age_s", 400 * 86400)
    return decode_message(PREFIX, topic, payload, now=NOW, **kwargs)


def test_single_water_reading_with_rfc3339_and_offset():
    message = decode(
        READING,
        {
            "ts": "2024-06-01T19:45:00+08:00",
            "total_l": 1234.5,
            "flow_lpm": 0.0,
            "battery_v": 3.6,
            "seq": 17,
            "device_id": "WM-0001",
            "extra": "ignored",
        },
    )
    assert message.kind == "reading"
    assert (message.gateway_id, message.device_id) == ("GW-01", "WM-0001")
    assert message.readings == (
        WaterReading(
            ts=datetime(2024, 6, 1, 11, 45, tzinfo=UTC),
            total_l=1234.5,
            flow_lpm=0.0,
            battery_v=3.6,
            seq=17,
        ),
    )
    assert message.row_errors == ()
    assert not message.batch


def test_epoch_seconds_and_total_m3_are_converted():
    epoch = NOW.timestamp() - 60.5
    (reading,) = decode(READING, {"ts": epoch, "total_m3": 1.25}).readings
    assert reading.ts == NOW - timedelta(seconds=60.5)
    assert reading.total_l == pytest.approx(1250.0)


def test_batch_keeps_good_rows_and_reports_bad_rows_by_index():
    rows = [
        {"ts": "2024-06-01T10:00:00Z", "total_l": 10},
        {"ts": "2024-06-01T10:15:00Z", "total_l": -1},
        {"ts": "2024-06-01T10:30:00Z", "total_l": 12},
        "not an object",
        {"ts": "2099-01-01T00:00:00Z", "total_l": 13},
        {"ts": "2024-06-01T10:45:00Z", "total_l": 13, "device_id": "WM-9999"},
    ]
    message = decode(READING, {"readings": rows})
    assert message.batch
    assert [r.total_l for r in message.readings] == [10.0, 12.0]
    assert [(i, e.reason) for i, e in message.row_errors] == [
        (1, "bad_value"),
        (3, "malformed_json"),
        (4, "future_timestamp"),
        (5, "device_mismatch"),
    ]


def test_sensor_reading_and_battery_heartbeat():
    (gas,) = decode(READING, {"ts": 1717200000, "gas_lel_pct": 12.5, "battery_v": 3.0}).readings
    assert gas == SensorReading(ts=datetime.fromtimestamp(1717200000, UTC), gas_lel_pct=12.5, battery_v=3.0)
    (beat,) = decode(READING, {"ts": 1717200000, "battery_v": 2.9}).readings
    assert isinstance(beat, SensorReading)
    assert beat.battery_v == 2.9
    assert beat.smoke is None


def test_event():
    message = decode(EVENT, {"ts": "2024-06-01T11:59:00Z", "type": "sos", "active": True})
    assert message.kind == "event"
    assert message.device_id == "SOS-0001"
    assert message.events == (
        EventMessage(ts=datetime(2024, 6, 1, 11, 59, tzinfo=UTC), type="sos", active=True),
    )
    (gas,) = decode(EVENT, {"ts": 1717200000, "type": "gas", "active": False, "value": 3}).events
    assert gas.value == 3.0
    assert gas.active is False


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ("online", "online"),
        ("offline", "offline"),
        (" OFFLINE\n", "offline"),
        ('{"status": "online"}', "online"),
        ('{"status": "Offline", "ts": 1}', "offline"),
        ('"online"', "online"),
    ],
)
def test_gateway_status(payload, status):
    message = decode(STATUS, payload)
    assert (message.kind, message.gateway_id, message.device_id, message.status) == (
        "status",
        "GW-01",
        None,
        status,
    )


def test_future_tolerance_and_max_age_are_parameters():
    soon = (NOW + timedelta(seconds=500)).isoformat()
    assert decode(READING, {"ts": soon, "total_l": 1}).readings
    with pytest.raises(PayloadError) as info:
        decode(READING, {"ts": soon, "total_l": 1}, future_tolerance_s=60)
    assert info.value.reason == "future_timestamp"
    old = (NOW - timedelta(days=30)).isoformat()
    assert decode(READING, {"ts": old, "total_l": 1}, max_age_s=None).readings
    with pytest.raises(PayloadError) as info:
        decode(READING, {"ts": old, "total_l": 1}, max_age_s=7 * 86400)
    assert info.value.reason == "too_old"


def test_timestamps_in_any_offset_compare_in_absolute_time():
    shanghai = timezone(timedelta(hours=8))
    ts = (NOW + timedelta(minutes=9)).astimezone(shanghai).isoformat()
    (reading,) = decode(READING, {"ts": ts, "total_l": 1}).readings
    assert reading.ts == NOW + timedelta(minutes=9)


TS = "2024-06-01T11:00:00Z"

# (topic, payload, expected reason): whole messages that cannot be accepted at all
BAD = [
    (READING, b"{not json", "malformed_json"),
    (READING, b"\xff\xfe\x00", "malformed_json"),
    (READING, b"", "malformed_json"),
    (READING, b"[1, 2]", "malformed_json"),
    (READING, b'"a string"', "malformed_json"),
    (READING, b'{"ts": NaN, "total_l": 1}', "malformed_json"),
    (READING, b'{"ts": 1717200000, "total_l": 1e400}', "malformed_json"),
    (READING, b"x" * 70000, "payload_too_large"),
    (READING, {"total_l": 1}, "missing_field"),
    (READING, {"ts": TS}, "missing_field"),
    (READING, {"ts": TS, "flow_lpm": 1}, "missing_field"),
    (READING, {"ts": TS, "total_l": -0.5}, "bad_value"),
    (READING, {"ts": TS, "total_l": "12"}, "bad_value"),
    (READING, {"ts": TS, "total_l": True}, "bad_value"),
    (READING, {"ts": TS, "total_l": 1, "total_m3": 0.001}, "bad_value"),
    (READING, {"ts": TS, "total_l": 1, "smoke": 0}, "bad_value"),
    (READING, {"ts": TS, "total_l": 1, "flow_lpm": -3}, "bad_value"),
    (READING, {"ts": TS, "total_l": 1, "battery_v": 1e9}, "bad_value"),
    (READING, {"ts": TS, "total_l": 1, "seq": -1}, "bad_value"),
    (READING, {"ts": TS, "total_l": 1, "seq": 1.5}, "bad_value"),
    (READING, {"ts": TS, "gas_lel_pct": 120}, "bad_value"),
    (READING, {"ts": TS, "temperature_c": -500}, "bad_value"),
    (READING, {"readings": "many"}, "bad_value"),
    (READING, {"readings": []}, "empty_batch"),
    (READING, {"ts": "yesterday", "total_l": 1}, "bad_timestamp"),
    (READING, {"ts": "2024-06-01T11:00:00", "total_l": 1}, "bad_timestamp"),
    (READING, {"ts": "2024-06-01", "total_l": 1}, "bad_timestamp"),
    (READING, {"ts": [2024], "total_l": 1}, "bad_timestamp"),
    (READING, {"ts": 1e20, "total_l": 1}, "bad_timestamp"),
    (READING, {"ts": "2024-06-01T12:10:01Z", "total_l": 1}, "future_timestamp"),
    (READING, {"ts": "2020-01-01T00:00:00Z", "total_l": 1}, "too_old"),
    (READING, {"ts": TS, "total_l": 1, "device_id": "WM-0002"}, "device_mismatch"),
    (READING, {"device_id": "WM-0002", "readings": [{"ts": TS, "total_l": 1}]}, "device_mismatch"),
    (EVENT, {"ts": TS, "type": "fire", "active": True}, "unknown_event"),
    (EVENT, {"ts": TS, "type": 3, "active": True}, "unknown_event"),
    (EVENT, {"ts": TS, "active": True}, "missing_field"),
    (EVENT, {"ts": TS, "type": "sos"}, "missing_field"),
    (EVENT, {"ts": TS, "type": "sos", "active": "yes"}, "bad_value"),
    (EVENT, {"ts": TS, "type": "gas", "active": True, "value": "high"}, "bad_value"),
    (EVENT, {"type": "sos", "active": True}, "missing_field"),
    (EVENT, b"sos!", "malformed_json"),
    (STATUS, "maybe", "bad_status"),
    (STATUS, '{"status": "sleeping"}', "bad_status"),
    (STATUS, '{"state": "online"}', "missing_field"),
    (STATUS, b"\xff", "malformed_json"),
    ("lovekey/GW-01/WM-0001/readings", {"ts": TS, "total_l": 1}, "bad_topic"),
    ("lovekey/GW-01/WM-0001", {"ts": TS, "total_l": 1}, "bad_topic"),
    ("lovekey/GW-01/WM-0001/x/reading", {"ts": TS, "total_l": 1}, "bad_topic"),
    ("lovekey//WM-0001/reading", {"ts": TS, "total_l": 1}, "bad_topic"),
    ("lovekey/GW-01//event", {"ts": TS, "type": "sos", "active": True}, "bad_topic"),
    ("other/GW-01/WM-0001/reading", {"ts": TS, "total_l": 1}, "bad_topic"),
    ("lovekey/" + "G" * 200 + "/status", "online", "bad_topic"),
    ("lovekey/status", "online", "bad_topic"),
]


@pytest.mark.parametrize(("topic", "payload", "reason"), BAD)
def test_bad_input_raises_with_its_reason(topic, payload, reason):
    with pytest.raises(PayloadError) as info:
        decode(topic, payload)
    assert info.value.reason == reason
    assert reason in REASONS


def test_prefix_with_levels_and_trailing_slash():
    message = decode_message(
        "site/a/", "site/a/GW-01/WM-1/reading", b'{"ts": 1717200000, "total_l": 5}', now=NOW
    )
    assert message.device_id == "WM-1"


def test_every_reason_is_documented():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "ingest.md").read_text()
    missing = [reason for reason in REASONS if f"`{reason}`" not in doc]
    assert missing == []


def test_random_damage_only_ever_raises_payload_error():
    rng = random.Random(3)
    seeds = [
        orjson.dumps({"ts": TS, "total_l": 12.5, "flow_lpm": 0.1, "battery_v": 3.6, "seq": 4}),
        orjson.dumps({"readings": [{"ts": TS, "total_m3": 1.5}, {"ts": 1717239600, "smoke": 2}]}),
        orjson.dumps({"ts": TS, "type": "gas", "active": True, "value": 4}),
        b'{"status": "online"}',
    ]
    topics = [READING, READING, EVENT, STATUS]
    alphabet = b'{}[]",:0123456789.eE+-tfnaluesrTZ \\\x00\xff'
    outcomes = Counter()
    for _ in range(5000):
        index = rng.randrange(len(seeds))
        data = bytearray(seeds[index])
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(data) + 1)
            action = rng.random()
            if action < 0.4 and data:
                del data[min(position, len(data) - 1)]
            elif action < 0.8:
                data.insert(position, rng.choice(alphabet))
            else:
                data[position:position] = rng.choice(seeds)
        try:
            decode(topics[index], bytes(data))
            outcomes["ok"] += 1
        except PayloadError as exc:
            outcomes[exc.reason] += 1
    assert set(outcomes) - {"ok"} <= set(REASONS)
    assert outcomes["ok"] > 0
    assert outcomes["malformed_json"] > 0
