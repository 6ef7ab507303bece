"""The platform readers alone (no server, no database): documented pushes in, reports out,
and each kind of bad push refused with its reason."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from lovekey.config import load_settings
from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.decoded import DecodedMessage, WaterReading
from lovekey.ingest.platforms import Push, Report, ctwing, huawei, onenet
from lovekey.ingest.sources import adapter_for
from lovekey.ingest.sources._http import PlatformAdapter
from tests import fix_platforms as fx
from tests.fix_sources import CJT188_2018_BODY, cjt188_frame

NOW = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


def context(now: datetime = NOW) -> DecodeContext:
    return DecodeContext(now, now + timedelta(minutes=10), now - timedelta(days=4000))


# -- CTWing ---------------------------------------------------------------------------------


def test_ctwing_decoded_payload_is_the_fields() -> None:
    push = ctwing.read_push(orjson.dumps(fx.CTWING_DATA_REPORT_FIELDS), context())
    (report,) = push.reports
    assert report.external_ids == ("864016059485616", "87f4b2814f434992a94a4871b32c6b75")
    assert report.ts == datetime(2021, 5, 28, 7, 14, 4, 981000, tzinfo=UTC)
    assert report.values is not None
    assert report.values["battery_voltage"] == pytest.approx(3.656)


def test_ctwing_service_data_and_appdata_and_online() -> None:
    (report,) = ctwing.read_push(fx.CTWING_DATA_REPORT_SERVICE_DATA, context()).reports
    assert report.values is not None
    assert report.values["Battery_Level"] == 100
    assert report.external_ids[0] == "860374051096202"
    (raw,) = ctwing.read_push(fx.CTWING_DATA_REPORT_APPDATA, context()).reports
    assert raw.raw is not None
    assert raw.raw[:2] == b"PU"
    assert raw.values is None
    (online,) = ctwing.read_push(fx.CTWING_ONLINE, context()).reports
    assert online.online is True
    assert online.external_ids == ("44d0b9e48d404094bbbcf889e4e64ece",)
    ignored = ctwing.read_push(fx.CTWING_COMMAND_RESPONSE, context())
    assert (ignored.reports, ignored.ignored) == ((), 1)


def _ctwing(**change: Any) -> bytes:
    body = dict(fx.CTWING_DATA_REPORT_FIELDS)
    for key, value in change.items():
        if value is ...:
            body.pop(key)
        else:
            body[key] = value
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", reasons.MALFORMED_JSON),
        (b"[1,2]", reasons.MALFORMED_JSON),
        (b'{"timestamp": 1}', reasons.MISSING_FIELD),  # no messageType
        (_ctwing(IMEI="", deviceId=""), reasons.MISSING_FIELD),
        (_ctwing(timestamp=...), reasons.BAD_TIMESTAMP),
        (_ctwing(timestamp="yesterday"), reasons.BAD_TIMESTAMP),
        (_ctwing(timestamp=int((NOW + timedelta(days=2)).timestamp() * 1000)), reasons.FUTURE_TIMESTAMP),
        (_ctwing(timestamp=1000), reasons.TOO_OLD),
        (_ctwing(payload=...), reasons.MISSING_FIELD),
        (_ctwing(payload="abc"), reasons.BAD_VALUE),
        (_ctwing(payload={"APPdata": "not*base64"}), reasons.BAD_VALUE),
        (_ctwing(payload={"serviceData": [1]}), reasons.BAD_VALUE),
        (_ctwing(IMEI="9" * 65), reasons.BAD_VALUE),
        (fx.CTWING_ONLINE.replace(b'"eventType":1', b'"eventType":5'), reasons.BAD_STATUS),
    ],
)
def test_ctwing_bad_pushes(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as caught:
        ctwing.read_push(body, context())
    assert caught.value.reason == reason


# -- OneNET ---------------------------------------------------------------------------------

TOKEN = "lovekey-onenet-token"


def test_onenet_handshake_answers_msg_only_with_the_right_signature() -> None:
    query = {
        "msg": "Wk1XcGVF",
        "nonce": "ZQZnKwbh",
        "signature": fx.onenet_signature(TOKEN, "ZQZnKwbh", "Wk1XcGVF"),
    }
    assert onenet.handshake(query, TOKEN) == b"Wk1XcGVF"
    # a '+' in an unescaped query string arrives as a space: still accepted
    spaced = {**query, "signature": query["signature"].replace("+", " ")}
    assert onenet.handshake(spaced, TOKEN) == b"Wk1XcGVF"
    with pytest.raises(PayloadError) as caught:
        onenet.handshake(query, "another-token")
    assert caught.value.reason == reasons.BAD_SIGNATURE
    with pytest.raises(PayloadError):
        onenet.handshake({"msg": "x"}, TOKEN)


def test_onenet_points_of_one_time_are_one_reading() -> None:
    at = int(NOW.timestamp() * 1000) - 60_000
    msg = [
        fx.onenet_point(524871, "total_m3", at, 12.345),
        fx.onenet_point(524871, "battery_v", at, 3.61),
        fx.onenet_status(524871, at, online=True),
        {"type": 7, "dev_id": 524871, "cmd_id": "c1", "cmd_type": 1, "at": at},
    ]
    push = onenet.read_push(fx.onenet_push(msg, TOKEN), context(), token=TOKEN)
    assert push.ignored == 1
    online, data = push.reports
    assert online.online is True
    assert online.external_ids == ("524871",)
    (message,) = _adapter("onenet", options={"battery_field": "battery_v"}).messages(
        Push(reports=(data,)), context()
    )
    assert isinstance(message, DecodedMessage)
    (reading,) = message.readings
    assert isinstance(reading, WaterReading)
    assert (reading.total_l, reading.battery_v) == (pytest.approx(12345.0), 3.61)


def test_onenet_single_message_and_unicode_are_signed_as_sent() -> None:
    at = int(NOW.timestamp() * 1000)
    msg = fx.onenet_point(7, "水表读数", at, 1.5)
    (report,) = onenet.read_push(fx.onenet_push(msg, TOKEN), context(), token=TOKEN).reports
    assert report.values == {"水表读数": 1.5}


def test_onenet_encrypted_push_is_decrypted() -> None:
    key = fx.new_aes_key()
    at = int(NOW.timestamp() * 1000)
    body = fx.onenet_push([fx.onenet_point(9, "total_l", at, 800)], TOKEN, aes_key=key)
    (report,) = onenet.read_push(body, context(), token=TOKEN, aes_key=key).reports
    assert report.values == {"total_l": 800}
    with pytest.raises(PayloadError) as no_key:
        onenet.read_push(body, context(), token=TOKEN)
    assert no_key.value.reason == reasons.CANNOT_DECRYPT
    with pytest.raises(PayloadError) as wrong_key:
        onenet.read_push(body, context(), token=TOKEN, aes_key=fx.new_aes_key())
    assert wrong_key.value.reason == reasons.CANNOT_DECRYPT


def _signed(msg: Any) -> bytes:
    return fx.onenet_push(msg, TOKEN)


AT = int(NOW.timestamp() * 1000)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", reasons.MALFORMED_JSON),
        (b'{"nonce": "abcdefgh"}', reasons.MISSING_FIELD),
        (fx.onenet_push(fx.onenet_point(1, "total_l", AT, 1), "wrong-token"), reasons.BAD_SIGNATURE),
        (
            _signed(fx.onenet_point(1, "total_l", AT, 1)).replace(b'"value":1', b'"value":9'),
            reasons.BAD_SIGNATURE,
        ),  # tampered after signing
        (orjson.dumps({"msg": {"type": 1}, "nonce": "abcdefgh"}), reasons.BAD_SIGNATURE),
        (
            orjson.dumps({"msg": "{}", "signature": "x", "nonce": "n", "time": 1, "id": "i"}),
            reasons.UNSUPPORTED_FORMAT,
        ),
        (_signed([]), reasons.EMPTY_BATCH),
        (_signed("text"), reasons.BAD_VALUE),
        (_signed([1]), reasons.MALFORMED_JSON),
        (_signed({"dev_id": 1}), reasons.MISSING_FIELD),
        (_signed({"type": 1, "ds_id": "total_l", "at": AT, "value": 1}), reasons.MISSING_FIELD),
        (_signed({"type": 1, "dev_id": 1, "at": AT, "value": 1}), reasons.MISSING_FIELD),
        (_signed({"type": 1, "dev_id": 1, "ds_id": "total_l", "at": AT}), reasons.MISSING_FIELD),
        (_signed(fx.onenet_point(1, "total_l", AT + 86_400_000, 1)), reasons.FUTURE_TIMESTAMP),
        (_signed(fx.onenet_point(1, "total_l", "soon", 1)), reasons.BAD_TIMESTAMP),
        (_signed({"type": 2, "dev_id": 1, "at": AT, "status": 3}), reasons.BAD_STATUS),
        (_signed({"type": "1", "dev_id": 1}), reasons.BAD_VALUE),
        (
            orjson.dumps(
                {"enc_msg": "AAAA", "msg_signature": fx.onenet_signature(TOKEN, "n", "AAAA"), "nonce": "n"}
            ),
            reasons.CANNOT_DECRYPT,
        ),
    ],
)
def test_onenet_bad_pushes(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as caught:
        onenet.read_push(
            body, context(), token=TOKEN, aes_key=fx.new_aes_key() if b"enc_msg" in body else None
        )
    assert caught.value.reason == reason


# -- Huawei ---------------------------------------------------------------------------------


def test_huawei_documented_examples() -> None:
    (report,) = huawei.read_push(orjson.dumps(fx.HUAWEI_DATA_CHANGED), context()).reports
    assert report.external_ids == ("a2664352-9505-45a5-9913-ae01a2660566",)
    assert report.ts == datetime(2017, 3, 11, 16, 36, 57, tzinfo=UTC)
    assert report.values == {"brightness": 80}
    reports = huawei.read_push(orjson.dumps(fx.HUAWEI_DATAS_CHANGED), context()).reports
    assert [r.values for r in reports] == [{"brightness": 80}, {"value": "red"}]
    other = huawei.read_push(b'{"notifyType": "deviceInfoChanged", "deviceId": "x"}', context())
    assert (other.reports, other.ignored) == ((), 1)


def _huawei(**change: Any) -> bytes:
    body: dict[str, Any] = {**fx.HUAWEI_DATA_CHANGED, "service": dict(fx.HUAWEI_DATA_CHANGED["service"])}
    for key, value in change.items():
        target = body["service"] if key in ("data", "eventTime") else body
        if value is ...:
            target.pop(key)
        else:
            target[key] = value
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"null", reasons.MALFORMED_JSON),
        (b'{"deviceId": "x"}', reasons.MISSING_FIELD),
        (_huawei(deviceId=...), reasons.MISSING_FIELD),
        (_huawei(service=...), reasons.MISSING_FIELD),
        (_huawei(service=[1]), reasons.BAD_VALUE),
        (_huawei(data=...), reasons.MISSING_FIELD),
        (_huawei(data="80"), reasons.BAD_VALUE),
        (_huawei(eventTime=...), reasons.MISSING_FIELD),
        (_huawei(eventTime="2017-03-11T16:36:57Z"), reasons.BAD_TIMESTAMP),
        (_huawei(eventTime="20171311T163657Z"), reasons.BAD_TIMESTAMP),
        (_huawei(eventTime="20991231T000000Z"), reasons.FUTURE_TIMESTAMP),
        (orjson.dumps({**fx.HUAWEI_DATAS_CHANGED, "service": []}), reasons.EMPTY_BATCH),
    ],
)
def test_huawei_bad_pushes(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as caught:
        huawei.read_push(body, context())
    assert caught.value.reason == reason


# -- the adapters: values to readings, as every source adapter does -------------------------


def _adapter(kind: str = "huawei", **entry: Any) -> PlatformAdapter:
    settings = load_settings(environ={}, sources=[{"name": "p", "kind": kind, "token": "t0k3n", **entry}])
    adapter = adapter_for(settings.sources[0], settings)
    assert isinstance(adapter, PlatformAdapter)
    return adapter


def test_options_say_where_the_total_and_battery_are() -> None:
    adapter = _adapter(
        options={"total_field": "cumulativeFlow", "total_unit": "m3", "battery_field": "batteryVoltage"}
    )
    report = Report(("1",), NOW, values={"cumulativeFlow": "123.456", "batteryVoltage": 3.5, "rssi": -90})
    (message,) = adapter.messages(Push(reports=(report,)), context())
    assert isinstance(message, DecodedMessage)
    (reading,) = message.readings
    assert isinstance(reading, WaterReading)
    assert (reading.total_l, reading.battery_v) == (pytest.approx(123456.0), 3.5)
    assert (message.gateway_id, message.device_id, message.external) == ("p", "1", True)


def test_alarm_fields_become_levels_and_notices_nothing() -> None:
    adapter = _adapter()
    alarm = Report(("S1",), NOW, values={"smoke": True, "battery_low": False})
    online = Report(("S1",), NOW, online=True)
    (message,) = adapter.messages(Push(reports=(alarm, online)), context())
    assert isinstance(message, DecodedMessage)
    assert message.readings == ()
    assert [(level.type, level.active) for level in message.levels] == [
        ("smoke", True),
        ("battery_low", False),
    ]


def test_appdata_goes_to_the_named_decoder() -> None:
    frame = cjt188_frame(CJT188_2018_BODY)
    raw = Report(("860803030676429",), NOW, raw=frame, model="10053421")
    (refused,) = _adapter("ctwing").messages(Push(reports=(raw,)), context())
    assert isinstance(refused, PayloadError)
    assert refused.reason == reasons.UNSUPPORTED_FORMAT
    (message,) = _adapter("ctwing", decoders={"10053421": "cjt188"}).messages(Push(reports=(raw,)), context())
    assert isinstance(message, DecodedMessage)
    assert message.readings[0].total_l == pytest.approx(556677000.0)  # 556,677.00 m3


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"rssi": -90}, reasons.UNMAPPED),
        ({"cumulativeFlow": "lots"}, reasons.BAD_VALUE),
        ({"cumulativeFlow": "nan"}, reasons.BAD_VALUE),
        ({"cumulativeFlow": -1}, reasons.BAD_VALUE),
        ({"cumulativeFlow": True}, reasons.BAD_VALUE),
        ({"cumulativeFlow": 1e30}, reasons.BAD_VALUE),
        ({"cumulativeFlow": 1, "smoke": "yes"}, reasons.BAD_VALUE),
    ],
)
def test_bad_values(values: dict[str, Any], reason: str) -> None:
    adapter = _adapter(options={"total_field": "cumulativeFlow"})
    (refused,) = adapter.messages(Push(reports=(Report(("1",), NOW, values=values),)), context())
    assert isinstance(refused, PayloadError)
    assert refused.reason == reason


def test_single_reading_push_through_the_adapter_interface() -> None:
    adapter = _adapter("huawei", options={"total_field": "brightness", "total_unit": "l"})
    decoded = adapter.decode("/receive/p/t0k3n", orjson.dumps(fx.HUAWEI_DATA_CHANGED), context())
    assert decoded.readings[0].total_l == 80.0
    with pytest.raises(PayloadError) as caught:
        adapter.decode("/receive/p/wrong", orjson.dumps(fx.HUAWEI_DATA_CHANGED), context())
    assert caught.value.reason == reasons.BAD_SIGNATURE


def test_appdata_round_trip_is_bytes() -> None:
    raw = base64.b64decode(orjson.loads(fx.CTWING_DATA_REPORT_APPDATA)["payload"]["APPdata"])
    (report,) = ctwing.read_push(fx.CTWING_DATA_REPORT_APPDATA, context()).reports
    assert report.raw == raw


def test_refused_pushes_kept_per_minute_are_bounded() -> None:
    from lovekey.ingest.http_receiver import RefusalBudget

    budget = RefusalBudget("ctwing", per_minute=2)
    assert [budget.take(t) for t in (0.0, 1.0, 2.0, 59.0)] == [True, True, False, False]
    assert budget.dropped == 2
    assert budget.take(61.0)  # a new minute
    assert budget.dropped == 0
