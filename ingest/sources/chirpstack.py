"""ChirpStack v4: uplink events of its MQTT integration.

ChirpStack publishes each uplink once, after deduplicating the copies its radio gateways
heard (`rxInfo` lists them), on `application/{application_id}/device/{dev_eui}/event/up`
(https://github.com/chirpstack/chirpstack-docs, src/chirpstack/integrations/mqtt.md), as the
protobuf JSON mapping of `UplinkEvent` (src/chirpstack/integrations/events.md): `time`,
`deviceInfo{devEui, deviceProfileName, ...}`, `fCnt` (left out when 0), base64 `data` and,
when the device profile has a codec, the decoded `object`. The integration publishes at
QoS 0 unless its `qos` setting says otherwise (docs/sources/chirpstack.md).

The device is its DevEUI; the reading's time is the event's `time` (when ChirpStack received
the uplink), so the same event delivered twice is stored once.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from lovekey.config import SourceSettings
from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.codecs._fields import load_object
from lovekey.ingest.decoded import DecodedMessage, EventMessage, WaterReading
from lovekey.ingest.sources import SourceAdapter, register
from lovekey.ingest.sources._fields import external_id, rfc3339, within
from lovekey.ingest.sources._meter import (
    MeterFields,
    base64_bytes,
    check_decoders,
    decoder_for,
    from_frame,
    levels,
    meter_reading,
    object_time,
)

MAX_F_CNT = 2**32 - 1


@register
class ChirpStack(SourceAdapter):
    kind = "chirpstack"
    default_topic = "application/+/device/+/event/up"

    def __init__(self, source: SourceSettings, *, zone: ZoneInfo) -> None:
        super().__init__(source, zone=zone)
        self.fields = MeterFields.from_options(source.options)
        check_decoders(source.decoders)
        self.decoders = dict(source.decoders)

    def decode(self, topic: str, payload: bytes, context: DecodeContext) -> DecodedMessage:
        levels_ = topic.split("/")
        # application/{app}/device/{dev_eui}/event/{type}
        if len(levels_) < 6 or levels_[-2] != "event" or levels_[-4] != "device":
            raise PayloadError(reasons.BAD_TOPIC, "expected application/{app}/device/{dev_eui}/event/up")
        if levels_[-1] != "up":
            raise PayloadError(
                reasons.BAD_TOPIC, f"a {levels_[-1][:20]!r} event carries no reading (subscribe to event/up)"
            )
        body = load_object(payload)
        info = body.get("deviceInfo")
        if not isinstance(info, dict):
            raise PayloadError(reasons.MISSING_FIELD, "deviceInfo")
        dev_eui = external_id(info.get("devEui"), "deviceInfo.devEui")
        if dev_eui.lower() != levels_[-3].lower():
            raise PayloadError(reasons.DEVICE_MISMATCH, f"devEui {dev_eui} != topic {levels_[-3][:32]!r}")
        if "time" not in body:
            raise PayloadError(reasons.MISSING_FIELD, "time")
        ts = within(rfc3339(body["time"], None, "time"), context, "time")
        seq = _f_cnt(body.get("fCnt", 0))
        model = info.get("deviceProfileName")
        reading: WaterReading | None
        found: tuple[EventMessage, ...]
        if decoder_for(self.decoders, model if isinstance(model, str) else None) == "cjt188":
            reading, found = from_frame(base64_bytes(body.get("data"), "data"), ts, self.fields, seq)
        else:
            decoded = body.get("object")
            if not isinstance(decoded, dict):
                raise PayloadError(reasons.MISSING_FIELD, "object (the device profile's codec output)")
            ts = object_time(decoded, self.fields, self.zone, context, ts)
            reading = meter_reading(decoded, ts, self.fields, seq)
            found = levels(decoded, ts)
            if reading is None and not found:
                raise PayloadError(
                    reasons.MISSING_FIELD, f"object has no {self.fields.total[0][0]} nor alarm state"
                )
        return DecodedMessage(
            "reading",
            self.gateway_id,
            dev_eui,
            readings=(reading,) if reading is not None else (),
            levels=found,
            external=True,
        )


def _f_cnt(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_F_CNT:
        raise PayloadError(reasons.BAD_VALUE, f"fCnt must be a 32-bit counter, got {value!r:.40}")
    return value
