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

from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.codecs._fields import load_object
from lovekey.ingest.decoded import DecodedMessage
from lovekey.ingest.sources import register
from lovekey.ingest.sources._fields import external_id, rfc3339, within
from lovekey.ingest.sources._lorawan import LoRaWanAdapter, frame_counter


@register
class ChirpStack(LoRaWanAdapter):
    kind = "chirpstack"
    default_topic = "application/+/device/+/event/up"

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
        seq = frame_counter(body.get("fCnt", 0), "fCnt")
        return self.uplink(
            dev_eui,
            info.get("deviceProfileName"),
            raw=(body.get("data"), "data"),
            decoded=(body.get("object"), "object (the device profile's codec output)"),
            ts=ts,
            seq=seq,
            context=context,
        )
