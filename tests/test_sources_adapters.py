"""The source adapters as pure functions: documented payloads in, LoveKey's decoded form out;
each kind of bad input refused with its reason. (End to end: tests/test_sources_mqtt.py.)"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from lovekey.config import load_settings
from lovekey.errors import PayloadError, SettingsError
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.decoded import DecodedMessage, SensorReading, WaterReading
from lovekey.ingest.sources import SourceAdapter, adapter_for, mqtt_sources
from lovekey.ingest.sources.cjt188 import StatusBits, decode_frame
from lovekey.vocabulary import EventType
from tests.fix_sources import (
    CHIRPSTACK_APP,
    CHIRPSTACK_OPTIONS,
    CHIRPSTACK_UP,
    CJT188_2004_BODY,
    CJT188_2018_BODY,
    CJT188_ADDRESS,
    CJT188_PUBLISHED,
    TTS_TOPIC,
    TTS_UP,
    TTS_UP_DOCUMENTED,
    WMBUS_IPERL,
    WMBUS_MULTICAL21,
    Z2M_GAS_ALARM,
    Z2M_OFFLINE_JSON,
    Z2M_ONLINE_LEGACY,
    Z2M_SMOKE_ALARM,
    as_hex_text,
    chirpstack_two_gateways,
    cjt188_frame,
    dumps,
)

NOW = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)
# the documented examples are years old: a context without a retention limit
CONTEXT = DecodeContext(now=NOW, latest=NOW + timedelta(minutes=10), earliest=None)
SHANGHAI = ZoneInfo("Asia/Shanghai")


def adapter(kind: str, **entry: Any) -> SourceAdapter:
    settings = load_settings(environ={}, sources=[{"name": f"src-{kind}", "kind": kind, **entry}])
    return adapter_for(settings.sources[0], settings)


def refused(source: SourceAdapter, topic: str, payload: bytes) -> str:
    with pytest.raises(PayloadError) as caught:
        source.decode(topic, payload, CONTEXT)
    return caught.value.reason


# -- ChirpStack -------------------------------------------------------------------------------

CS_TOPIC = f"application/{CHIRPSTACK_APP}/device/0101010101010101/event/up"


def test_chirpstack_documented_uplink() -> None:
    source = adapter("chirpstack", options=CHIRPSTACK_OPTIONS)
    decoded = source.decode(CS_TOPIC, dumps(CHIRPSTACK_UP), CONTEXT)
    assert (decoded.gateway_id, decoded.device_id, decoded.external) == (
        "src-chirpstack",
        "0101010101010101",
        True,
    )
    (reading,) = decoded.readings
    assert isinstance(reading, WaterReading)
    assert reading.total_l == pytest.approx(123456.0)
    # ChirpStack's nanoseconds cut to microseconds; fCnt 0 is left out of the JSON
    assert reading.ts == datetime(2022, 7, 18, 9, 34, 15, 775023, tzinfo=UTC)
    assert reading.seq == 0


def test_chirpstack_meter_clock_and_two_gateways() -> None:
    source = adapter("chirpstack", options={**CHIRPSTACK_OPTIONS, "time_field": "CurrentTimestamp"})
    decoded = source.decode(CS_TOPIC, dumps(chirpstack_two_gateways()), CONTEXT)
    (reading,) = decoded.readings  # one event, one reading, however many gateways heard it
    assert reading.ts == datetime.fromtimestamp(1658140200, UTC)
    assert reading.seq == 2


def _cs(**changes: Any) -> bytes:
    event = copy.deepcopy(CHIRPSTACK_UP)
    for key, value in changes.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return dumps(event)


CHIRPSTACK_BAD = [
    (CS_TOPIC, b"{not json", "malformed_json"),
    (CS_TOPIC, b"[1, 2]", "malformed_json"),
    (CS_TOPIC, _cs(deviceInfo=None), "missing_field"),
    (CS_TOPIC.replace("0101010101010101", "0202020202020202"), _cs(), "device_mismatch"),
    (CS_TOPIC, _cs(time=None), "missing_field"),
    (CS_TOPIC, _cs(time="2022-07-18T09:34:15"), "bad_timestamp"),
    (CS_TOPIC, _cs(time="2099-01-01T00:00:00Z"), "future_timestamp"),
    (CS_TOPIC, _cs(object=None), "missing_field"),
    (CS_TOPIC, _cs(object={"CurrentVolume": "123.456"}), "bad_value"),
    (CS_TOPIC, _cs(object={"CurrentVolume": -1.0}), "bad_value"),
    (CS_TOPIC, _cs(object={"StatusCode": 0}), "missing_field"),
    (CS_TOPIC, _cs(fCnt=-1), "bad_value"),
    (CS_TOPIC.replace("/up", "/join"), _cs(), "bad_topic"),
    ("application/x/event/up", _cs(), "bad_topic"),
]


@pytest.mark.parametrize(("topic", "payload", "reason"), CHIRPSTACK_BAD)
def test_chirpstack_bad_input(topic: str, payload: bytes, reason: str) -> None:
    assert refused(adapter("chirpstack", options=CHIRPSTACK_OPTIONS), topic, payload) == reason


def test_chirpstack_cjt188_payload_by_model() -> None:
    import base64

    frame = cjt188_frame(CJT188_2018_BODY, wake=0)
    event = copy.deepcopy(CHIRPSTACK_UP)
    event["data"] = base64.b64encode(frame).decode()
    source = adapter("chirpstack", decoders={"Test device-profile": "cjt188"})
    decoded = source.decode(CS_TOPIC, dumps(event), CONTEXT)
    assert decoded.readings[0].total_l == pytest.approx(556_677_000.0)  # type: ignore[union-attr]
    event["data"] = "not base64!"
    assert refused(source, CS_TOPIC, dumps(event)) == "bad_value"
    with pytest.raises(SettingsError):
        adapter("chirpstack", decoders={"default": "magic"})


# -- The Things Stack -------------------------------------------------------------------------


def test_tts_documented_uplink() -> None:
    source = adapter("tts", options=CHIRPSTACK_OPTIONS)
    decoded = source.decode(TTS_TOPIC, dumps(TTS_UP), CONTEXT)
    assert (decoded.device_id, decoded.external) == ("0004A30B001C0530", True)
    (reading,) = decoded.readings
    assert reading.total_l == pytest.approx(87032.0)  # type: ignore[union-attr]
    assert reading.ts == datetime(2020, 2, 12, 15, 15, 45, 789585, tzinfo=UTC)
    by_id = adapter("tts", options={**CHIRPSTACK_OPTIONS, "device_key": "device_id"})
    assert by_id.decode("lk/x/" + TTS_TOPIC, dumps(TTS_UP), CONTEXT).device_id == "dev1"


def _tts(path: tuple[str, ...], value: Any) -> bytes:
    message = copy.deepcopy(TTS_UP)
    node = message
    for key in path[:-1]:
        node = node[key]
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return dumps(message)


TTS_BAD = [
    (TTS_TOPIC, b"\xff\xfe", "malformed_json"),
    (TTS_TOPIC, dumps(TTS_UP_DOCUMENTED), "missing_field"),  # a temperature sensor's formatter
    (TTS_TOPIC, _tts(("end_device_ids",), None), "missing_field"),
    (TTS_TOPIC.replace("dev1", "dev2"), dumps(TTS_UP), "device_mismatch"),
    (TTS_TOPIC, _tts(("end_device_ids", "dev_eui"), None), "missing_field"),
    (TTS_TOPIC, _tts(("simulated",), True), "bad_value"),
    (TTS_TOPIC, _tts(("uplink_message",), None), "missing_field"),
    (TTS_TOPIC, _tts(("uplink_message", "received_at"), "yesterday"), "bad_timestamp"),
    (TTS_TOPIC, _tts(("uplink_message", "received_at"), "2099-02-12T15:15:45Z"), "future_timestamp"),
    (TTS_TOPIC, _tts(("uplink_message", "decoded_payload"), None), "missing_field"),
    (TTS_TOPIC, _tts(("uplink_message", "f_cnt"), "1"), "bad_value"),
    (TTS_TOPIC, _tts(("uplink_message", "decoded_payload", "CurrentVolume"), True), "bad_value"),
    (TTS_TOPIC.replace("/up", "/join"), dumps(TTS_UP), "bad_topic"),
]


@pytest.mark.parametrize(("topic", "payload", "reason"), TTS_BAD)
def test_tts_bad_input(topic: str, payload: bytes, reason: str) -> None:
    assert refused(adapter("tts", options=CHIRPSTACK_OPTIONS), topic, payload) == reason


# -- wmbusmeters ------------------------------------------------------------------------------


def test_wmbusmeters_documented_telegrams() -> None:
    source = adapter("wmbusmeters")
    iperl = source.decode("wmbusmeters/33225544", WMBUS_IPERL, CONTEXT)
    assert iperl.device_id == "33225544"
    assert iperl.readings[0].total_l == pytest.approx(123529.0)  # type: ignore[union-attr]
    assert iperl.readings[0].ts == datetime(2024, 3, 3, 18, 37, tzinfo=UTC)
    multical = source.decode("wmbusmeters/12345678", WMBUS_MULTICAL21, CONTEXT)
    assert multical.readings[0].total_l == pytest.approx(6388.0)  # type: ignore[union-attr]
    # a clock printed without a zone is read in the source's zone
    local = WMBUS_IPERL.replace(b"2024-03-03T18:37:00Z", b"2024-03-04 02:37:00")
    shanghai = adapter("wmbusmeters", timezone="Asia/Shanghai").decode("w", local, CONTEXT)
    assert shanghai.readings[0].ts == datetime(2024, 3, 3, 18, 37, tzinfo=UTC)


WMBUS_BAD = [
    (b"MyTapWater;33225544;123.529", "malformed_json"),
    (WMBUS_IPERL.replace(b'"id":"33225544",', b""), "missing_field"),
    (WMBUS_IPERL.replace(b'"33225544"', b"33225544"), "bad_value"),
    (WMBUS_IPERL.replace(b'"water"', b'"heat"'), "wrong_kind"),
    (WMBUS_IPERL.replace(b'"media":"water",', b""), "missing_field"),
    (WMBUS_IPERL.replace(b'"_":"telegram"', b'"_":"alarm"'), "bad_value"),
    (WMBUS_IPERL.replace(b',\n    "timestamp":"2024-03-03T18:37:00Z"', b""), "missing_field"),
    (WMBUS_IPERL.replace(b"2024-03-03T18:37:00Z", b"03/03/2024 18:37"), "bad_timestamp"),
    (WMBUS_IPERL.replace(b"2024-03-03T18:37:00Z", b"2097-03-03T18:37:00Z"), "future_timestamp"),
    (WMBUS_IPERL.replace(b'"total_m3":123.529', b'"total_kwh":123.529'), "missing_field"),
    (WMBUS_IPERL.replace(b"123.529", b'"123.529"'), "bad_value"),
    (WMBUS_IPERL.replace(b"123.529", b"-5"), "bad_value"),
]


@pytest.mark.parametrize(("payload", "reason"), WMBUS_BAD)
def test_wmbusmeters_bad_input(payload: bytes, reason: str) -> None:
    assert refused(adapter("wmbusmeters"), "wmbusmeters/33225544", payload) == reason


# -- Zigbee2MQTT ------------------------------------------------------------------------------


def test_zigbee2mqtt_snapshots_become_levels_and_the_bridge_a_gateway() -> None:
    source = adapter("zigbee2mqtt")
    smoke = source.decode("zigbee2mqtt/kitchen smoke", dumps(Z2M_SMOKE_ALARM), CONTEXT)
    assert smoke.device_id == "kitchen smoke"
    assert [(level.type, level.active, level.ts) for level in smoke.levels] == [
        (EventType.SMOKE, True, NOW),  # no last_seen: the receipt time
        (EventType.BATTERY_LOW, False, NOW),
    ]
    gas = source.decode(
        "zigbee2mqtt/0x00158d0001a2b3c4",
        dumps({**Z2M_GAS_ALARM, "last_seen": "2026-12-06T11:55:00+08:00", "voltage": 2900}),
        CONTEXT,
    )
    assert gas.levels[0].type == EventType.GAS
    assert gas.levels[0].ts == datetime(2026, 12, 6, 3, 55, tzinfo=UTC)
    assert gas.readings == (SensorReading(gas.levels[0].ts, battery_v=2.9),)
    assert source.decode("zigbee2mqtt/bridge/state", Z2M_ONLINE_LEGACY, CONTEXT).status == "online"
    assert source.decode("zigbee2mqtt/bridge/state", Z2M_OFFLINE_JSON, CONTEXT).status == "offline"
    for bookkeeping in ("zigbee2mqtt/bridge/info", "zigbee2mqtt/kitchen smoke/availability"):
        heard = source.decode(bookkeeping, b'{"state":"online"}', CONTEXT)
        assert (heard.kind, heard.status) == ("status", None)


Z2M_BAD = [
    ("zigbee2mqtt/smoke", b"{smoke: true}", "malformed_json"),
    ("zigbee2mqtt/smoke", b"[true]", "malformed_json"),
    ("zigbee2mqtt/smoke", dumps({"smoke": "yes"}), "bad_value"),
    ("zigbee2mqtt/smoke", dumps({"smoke": False, "battery_low": 1}), "bad_value"),
    ("zigbee2mqtt/smoke", dumps({"smoke": True, "last_seen": "just now"}), "bad_timestamp"),
    ("zigbee2mqtt/smoke", dumps({"smoke": True, "last_seen": 4102444800000}), "future_timestamp"),
    (
        "zigbee2mqtt/smoke",
        dumps({"smoke": True, "last_seen": 1764990000000, "voltage": "3V"}),
        "bad_value",
    ),
    ("zigbee2mqtt/bridge/state", b"maybe", "bad_status"),
    ("zigbee2mqtt/smoke/availability", b'{"state":"up"}', "bad_status"),
    ("zigbee2mqtt/" + "x" * 65, dumps(Z2M_SMOKE_ALARM), "bad_value"),
    ("elsewhere/smoke", dumps(Z2M_SMOKE_ALARM), "bad_topic"),
]


@pytest.mark.parametrize(("topic", "payload", "reason"), Z2M_BAD)
def test_zigbee2mqtt_bad_input(topic: str, payload: bytes, reason: str) -> None:
    assert refused(adapter("zigbee2mqtt"), topic, payload) == reason


# -- CJ/T 188 ---------------------------------------------------------------------------------


def test_cjt188_both_layouts_hex_and_binary_with_and_without_preamble() -> None:
    new = decode_frame(as_hex_text(cjt188_frame(CJT188_2018_BODY)))
    old = decode_frame(cjt188_frame(CJT188_2004_BODY, wake=0))
    assert (new.layout, old.layout) == ("2018", "2004")
    assert new.address == old.address == CJT188_ADDRESS
    assert new.total_l == pytest.approx(556_677_000.0)
    assert old.total_l == pytest.approx(556_677_010.0)
    assert new.meter_time == datetime(2015, 5, 11, 22, 1, 31)
    assert (new.valve, new.battery_low) == ("closed", False)  # status 21: D0 set, D2 clear
    assert (old.valve, old.battery_low) == ("closed", True)  # status 25: D2 set
    msb = decode_frame(cjt188_frame(CJT188_2018_BODY), status_bits=StatusBits.MSB_FIRST)
    assert (msb.valve, msb.battery_low) == ("open", True)  # 0x21 read from the top bit
    litres = decode_frame(cjt188_frame(CJT188_2018_BODY.replace("55 2C 00", "55 29 00", 1)))
    assert litres.total_l == pytest.approx(556677.0)


def test_cjt188_source_reads_the_meter_clock_in_its_zone() -> None:
    source = adapter("cjt188", timezone="Asia/Shanghai")
    decoded = source.decode("cjt188/c1", cjt188_frame(CJT188_2004_BODY), CONTEXT)
    assert decoded.device_id == CJT188_ADDRESS
    assert decoded.readings[0].ts == datetime(2015, 5, 11, 23, 1, 31, tzinfo=SHANGHAI)
    assert [(level.type, level.active) for level in decoded.levels] == [(EventType.BATTERY_LOW, True)]


def _body(old: str, new: str) -> bytes:
    return cjt188_frame(CJT188_2018_BODY.replace(old, new, 1))


CJT188_BAD = [
    (CJT188_PUBLISHED, "bad_checksum"),  # as published: its checksum is wrong
    (cjt188_frame(CJT188_2018_BODY, checksum=0x08), "bad_checksum"),
    (_body("00 77 66 55 2C 00", "00 7A 66 55 2C 00"), "bad_value"),  # impossible BCD digit
    (_body("44 33 22", "4F 33 22"), "bad_value"),  # impossible BCD digit in the address
    (cjt188_frame(CJT188_2018_BODY)[:-6], "bad_frame"),  # cut short
    (cjt188_frame(CJT188_2018_BODY)[:-1] + b"\x17", "bad_frame"),  # no end byte
    (b"\xfe\xfe" + cjt188_frame(CJT188_2018_BODY, wake=0)[1:], "bad_frame"),  # no start byte
    (_body("81 16", "81 15"), "bad_frame"),  # length byte disagrees
    (_body("10 44", "20 44"), "bad_value"),  # a heat meter
    (_body("81 16", "C1 16"), "bad_frame"),  # the meter's error answer
    (_body("1F 90", "2F 90"), "bad_frame"),  # not 901F
    (_body("55 2C 00", "55 2A 00"), "bad_value"),  # unknown unit code
    (_body("22 11 05", "22 11 13"), "bad_timestamp"),  # month 13
    (b"FE FE 68 1", "bad_frame"),  # odd hex digits
    (b"\xfe" * 20 + cjt188_frame(CJT188_2018_BODY, wake=0), "bad_frame"),  # endless preamble
    (b"", "bad_frame"),
]


@pytest.mark.parametrize(("payload", "reason"), CJT188_BAD)
def test_cjt188_bad_frames(payload: bytes, reason: str) -> None:
    assert refused(adapter("cjt188"), "cjt188/c1", payload) == reason


# -- configuration ----------------------------------------------------------------------------


def test_mqtt_sources_put_native_first_and_bridge_under_their_prefix() -> None:
    settings = load_settings(
        environ={},
        mqtt={"topic_prefix": "lk"},
        sources=[
            {"name": "cs", "kind": "chirpstack"},
            {"name": "z", "kind": "zigbee2mqtt", "broker_url": "mqtt://h:1883"},
            {"name": "nb", "kind": "ctwing", "path": "/r/ctwing"},
        ],
    )
    native, cs, z = mqtt_sources(settings)
    assert (native.name, native.adapter) == ("native", None)
    assert cs.filters == ("application/+/device/+/event/up",)
    assert z.filters == ("lk-bridge/z/zigbee2mqtt/#",)
    assert z.strip == "lk-bridge/z/"
    assert isinstance(z.adapter, SourceAdapter)
    decoded = z.adapter.decode("zigbee2mqtt/bridge/state", b"online", CONTEXT)
    assert isinstance(decoded, DecodedMessage)


@pytest.mark.parametrize("kind", ["chirpstack", "wmbusmeters", "cjt188"])
def test_the_benchmark_load_is_what_the_adapters_read(kind: str) -> None:
    """`lovekey bench ingest --source KIND` measures messages the adapter stores, at the
    (device, time) its prober looks for."""
    from lovekey.bench.support.source_load import SourceLoad, external_id, source_entry

    settings = load_settings(environ={}, sources=[source_entry(kind, "lk")])
    source = mqtt_sources(settings)[1]
    assert source.adapter is not None
    load = SourceLoad(kind, {"WM-000007": 7, "WM-000008": 8}, prefix="lk", probe_every=1)
    for _ in range(4):
        topic, payload, count, (key, ts) = load.message()
        decoded = source.adapter.decode(topic, payload, CONTEXT)
        assert count == 1
        assert decoded.device_id.lower() == external_id(kind, key).lower()  # type: ignore[union-attr]
        assert decoded.readings[0].ts == ts


def test_zigbee2mqtt_alarms_kept_apart_under_one_level() -> None:
    """docs/sources/zigbee2mqtt.md: alarms under zigbee2mqtt/alarms/, the bridge's state in a
    second entry of the same gateway."""
    alarms = adapter("zigbee2mqtt", topic="zigbee2mqtt/alarms/#", options={"base_topic": "zigbee2mqtt"})
    state = adapter("zigbee2mqtt", topic="zigbee2mqtt/bridge/state", options={"base_topic": "zigbee2mqtt"})
    smoke = alarms.decode("zigbee2mqtt/alarms/kitchen smoke", dumps(Z2M_SMOKE_ALARM), CONTEXT)
    assert smoke.device_id == "alarms/kitchen smoke"
    assert state.decode("zigbee2mqtt/bridge/state", Z2M_ONLINE_LEGACY, CONTEXT).status == "online"


def test_times_and_units_as_the_sources_write_them() -> None:
    from lovekey.ingest.sources._fields import any_time, epoch, rfc3339

    instant = datetime(2026, 12, 6, 3, 55, tzinfo=UTC)
    assert epoch(1796529300) == epoch(1796529300000) == epoch(1796529300.0) == instant  # s and ms
    assert rfc3339("2026-12-06T03:55:00Z", None) == instant
    assert rfc3339("2026-12-06T11:55:00+08:00", None) == instant
    assert rfc3339("2026-12-06 11:55:00", SHANGHAI) == instant  # no zone: the source's
    assert any_time("2026-12-06T03:55:00.000000001Z", None) == instant  # Go's nanoseconds
    for bad in ("2026-12-06 11:55:00", "tomorrow", 17.5j, None, True):
        with pytest.raises(PayloadError):
            any_time(bad, None)
