"""Bad input at the MQTT ingester that test_ingest_codecs.py and test_ingest_pipeline.py do
not send (docs/bad-input.md, "MQTT ingest"): deeply nested JSON, NUL characters, byte order
marks and other encodings, trailing garbage, numbers past 64 bits, a leap second, and ids in
other scripts. Each is first decoded alone, then sent through the real Mosquitto to the real
ingester and PostgreSQL, where it must end in `rejected_input` with its reason while the good
readings around it keep flowing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from lovekey.bench.support.publisher import Publisher, running_ingester, wait_for
from lovekey.bench.support.seeding import register_devices
from lovekey.config import Settings
from lovekey.errors import PayloadError
from lovekey.ingest import REASONS, decode_message
from lovekey.storage import connect

NOW = datetime.now(UTC).replace(microsecond=0)
TS = (NOW - timedelta(minutes=5)).isoformat()
DEPTH = 3000  # orjson stops at 1024 levels: past it, and far past Python's recursion limit


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def j(body: Any) -> bytes:
    return orjson.dumps(body)


# (label, topic under the prefix, payload, reason): whole messages the ingester must refuse
CASES: list[tuple[str, str, bytes, str]] = [
    ("deeply nested arrays as the reading", "GW-1/WM-1/reading", nested_arrays(DEPTH), "malformed_json"),
    ("deeply nested objects as the reading", "GW-1/WM-1/reading", nested_objects(DEPTH), "malformed_json"),
    (
        "deeply nested rows inside a batch",
        "GW-1/WM-1/reading",
        b'{"readings": [' + nested_arrays(DEPTH) + b"]}",
        "malformed_json",
    ),
    (
        "deeply nested event",
        "GW-1/SOS-1/event",
        b'{"ts": "' + TS.encode() + b'", "type": ' + nested_arrays(DEPTH) + b', "active": true}',
        "malformed_json",
    ),
    ("deeply nested status", "GW-1/status", b'{"status": ' + nested_arrays(DEPTH) + b"}", "malformed_json"),
    (
        "UTF-8 byte order mark",
        "GW-1/WM-1/reading",
        b"\xef\xbb\xbf" + j({"ts": TS, "total_l": 1}),
        "malformed_json",
    ),
    ("UTF-16 text", "GW-1/WM-1/reading", '{"ts": 1, "total_l": 1}'.encode("utf-16"), "malformed_json"),
    (
        "garbage after the JSON",
        "GW-1/WM-1/reading",
        j({"ts": TS, "total_l": 1}) + b"\x00tail",
        "malformed_json",
    ),
    (
        "NUL character as the timestamp",
        "GW-1/WM-1/reading",
        j({"ts": "\u0000", "total_l": 1}),
        "bad_timestamp",
    ),
    (
        "NUL character in the payload's device_id",
        "GW-1/WM-1/reading",
        j({"ts": TS, "total_l": 1, "device_id": "WM-1\u0000"}),
        "device_mismatch",
    ),
    (
        "NUL character in the event type",
        "GW-1/SOS-1/event",
        j({"ts": TS, "type": "sos\u0000", "active": True}),
        "unknown_event",
    ),
    (
        "seq past 64 bits",
        "GW-1/WM-1/reading",
        j({"ts": TS, "total_l": 1})[:-1] + b', "seq": 18446744073709551616}',
        "bad_value",
    ),
    ("total past the meter's register", "GW-1/WM-1/reading", j({"ts": TS, "total_l": 1e300}), "bad_value"),
    (
        "event value past any sensor's range",
        "GW-1/SOS-1/event",
        j({"ts": TS, "type": "sos", "active": True, "value": 1e300}),
        "bad_value",
    ),
    ("a leap second", "GW-1/WM-1/reading", j({"ts": "2024-06-30T23:59:60Z", "total_l": 1}), "bad_timestamp"),
    ("negative epoch seconds", "GW-1/WM-1/reading", j({"ts": -1, "total_l": 1}), "too_old"),
    ("a gateway id in another script", "网关-1/WM-1/reading", j({"ts": TS, "total_l": 1}), "wrong_gateway"),
]


@pytest.mark.parametrize(("label", "topic", "payload", "reason"), CASES, ids=[c[0] for c in CASES])
def test_each_kind_of_bad_payload_is_refused_by_the_codec_or_the_registry(
    label: str, topic: str, payload: bytes, reason: str
) -> None:
    assert reason in REASONS
    if reason == "wrong_gateway":  # decodes; only the registry (below) can refuse it
        assert decode_message("lk", f"lk/{topic}", payload, now=NOW, max_age_s=86400).readings
        return
    with pytest.raises(PayloadError) as caught:
        decode_message("lk", f"lk/{topic}", payload, now=NOW, max_age_s=86400)
    assert caught.value.reason == reason, label
    assert "\x00" not in str(caught.value)  # a NUL would not fit the detail column


def test_each_is_kept_with_its_reason_and_good_readings_keep_flowing(
    postgres_factory: Any,
    make_settings: Callable[..., Settings],
    mqtt_url: str,
    topic_prefix: str,
) -> None:
    db = postgres_factory.create("badinput_ingest")
    with connect(db) as conn:
        register_devices(
            conn, [("WM-1", "GW-1", "water_meter", "R-1"), ("SOS-1", "GW-1", "sos_button", "R-1")]
        )
    settings = make_settings(
        database_url=db,
        mqtt_url=mqtt_url,
        mqtt={
            "topic_prefix": topic_prefix,
            "client_id": "lkt-" + topic_prefix.rsplit("/", 1)[-1],
            "session_expiry_s": 120,
        },
        ingest={"batch_ms": 50, "registry_miss_retry_s": 0, "summary_interval_s": 3600},
    )
    good = f"{topic_prefix}/GW-1/WM-1/reading"
    with Publisher(mqtt_url) as publisher, running_ingester(settings) as ingester:
        for n, (_, topic, payload, _) in enumerate(CASES):
            publisher.publish(f"{topic_prefix}/{topic}", payload)
            # one good reading after each bad one, a litre apart: none may be lost
            body = {"ts": (NOW - timedelta(minutes=60 - n)).isoformat(), "total_l": 100.0 + n}
            publisher.publish(good, j(body))
        wait_for(lambda: ingester.metrics.acked >= 2 * len(CASES), timeout_s=60)
    with connect(db) as conn:
        rejected = conn.execute("SELECT topic, reason, detail FROM rejected_input").fetchall()
        stored = conn.execute("SELECT total_l FROM water_reading_wide ORDER BY ts").fetchall()
    assert Counter((topic, reason) for topic, reason, _ in rejected) == Counter(
        (f"{topic_prefix}/{topic}", reason) for _, topic, _, reason in CASES
    )
    assert all("\x00" not in (detail or "") for _, _, detail in rejected)
    assert [t for (t,) in stored] == [100.0 + n for n in range(len(CASES))]
