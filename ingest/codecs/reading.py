"""The JSON reading codec: one reading object, or `{"readings": [...]}` of frozen values.

A reading with `total_l` (or `total_m3`) is a water-meter reading; one with `gas_lel_pct`,
`smoke` or `temperature_c` is a sensor reading; one with only `battery_v` is a heartbeat,
stored as a sensor reading. Whether it fits the device is the writer's business.
"""

from __future__ import annotations

from typing import Any

from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext, Topic, register
from lovekey.ingest.codecs._fields import check_device_id, checked, load_object, timestamp
from lovekey.ingest.decoded import DecodedMessage, Reading, SensorReading, WaterReading

# Plausible ranges; anything outside is a broken device or a broken gateway, not water.
MAX_TOTAL_L = 1e12  # a meter register never gets near this
MAX_FLOW_LPM = 10_000.0
MAX_BATTERY_V = 100.0
MAX_SMOKE = 1e6  # device-specific scale, kept within float4
MIN_TEMPERATURE_C, MAX_TEMPERATURE_C = -100.0, 300.0
MAX_SEQ = 2**63 - 1


def decode_reading(topic: Topic, payload: bytes, context: DecodeContext) -> DecodedMessage:
    body = load_object(payload)
    check_device_id(body, topic.device_id)
    rows = body.get("readings")
    if rows is None:
        return DecodedMessage(
            "reading", topic.gateway_id, topic.device_id, readings=(_row(body, topic, context),)
        )
    if not isinstance(rows, list):
        raise PayloadError(reasons.BAD_VALUE, "readings must be a list")
    if not rows:
        raise PayloadError(reasons.EMPTY_BATCH, "readings is empty")
    readings: list[Reading] = []
    errors: list[tuple[int, PayloadError]] = []
    for index, row in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise PayloadError(reasons.MALFORMED_JSON, "a reading must be a JSON object")
            check_device_id(row, topic.device_id)
            readings.append(_row(row, topic, context))
        except PayloadError as exc:
            errors.append((index, exc))
    return DecodedMessage(
        "reading",
        topic.gateway_id,
        topic.device_id,
        readings=tuple(readings),
        row_errors=tuple(errors),
        batch=True,
    )


def _row(row: dict[str, Any], topic: Topic, context: DecodeContext) -> Reading:
    # the hot path of ingest: each field is looked up once
    ts = timestamp(row, context)
    get = row.get
    battery_v = checked(get("battery_v"), "battery_v", 0.0, MAX_BATTERY_V)
    total_l = checked(get("total_l"), "total_l", 0.0, MAX_TOTAL_L)
    total_m3 = get("total_m3")
    gas, smoke, temperature = get("gas_lel_pct"), get("smoke"), get("temperature_c")
    if total_m3 is not None:
        if total_l is not None:
            raise PayloadError(reasons.BAD_VALUE, "give total_l or total_m3, not both")
        total_l = 1000.0 * (checked(total_m3, "total_m3", 0.0, MAX_TOTAL_L / 1000) or 0.0)
    if total_l is not None:
        if gas is not None or smoke is not None or temperature is not None:
            raise PayloadError(reasons.BAD_VALUE, "a reading is either a meter's or a sensor's")
        return WaterReading(
            ts,
            total_l,
            checked(get("flow_lpm"), "flow_lpm", 0.0, MAX_FLOW_LPM),
            battery_v,
            _seq(get("seq")),
        )
    if gas is None and smoke is None and temperature is None and battery_v is None:
        raise PayloadError(reasons.MISSING_FIELD, "total_l (or total_m3), or a sensor value, or battery_v")
    return SensorReading(
        ts,
        checked(gas, "gas_lel_pct", 0.0, 100.0),
        checked(smoke, "smoke", 0.0, MAX_SMOKE),
        checked(temperature, "temperature_c", MIN_TEMPERATURE_C, MAX_TEMPERATURE_C),
        battery_v,
    )


def _seq(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise PayloadError(reasons.BAD_VALUE, f"seq must be a non-negative integer, got {value!r}")
    return value


register("reading", decode_reading)
