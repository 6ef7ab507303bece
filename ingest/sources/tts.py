"""The Things Stack v3: uplink messages of its MQTT server (or the same JSON by webhook).

The Things Stack publishes `v3/{application_id}@{tenant_id}/devices/{device_id}/up` (MQTT
3.1.1, QoS 0 only: docs/sources/tts.md says what that can lose) with the JSON of its data
formats page (https://github.com/TheThingsIndustries/lorawan-stack-docs,
doc/content/the-things-stack/concepts/data-formats/_index.md): `end_device_ids{device_id,
dev_eui}`, `received_at`, and `uplink_message{f_cnt, frm_payload, decoded_payload,
received_at, version_ids{model_id}}`. Empty fields are left out (an `f_cnt` of 0 is absent).

The device is its DevEUI (option `device_key = "device_id"`: its TTS device id); the reading's
time is `uplink_message.received_at` (when the Network Server received the uplink), else
the message's `received_at`. Simulated uplinks (`"simulated": true`, sent from the console)
are refused unless `options.allow_simulated` is true.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from lovekey.config import SourceSettings
from lovekey.errors import PayloadError, SettingsError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.codecs._fields import load_object
from lovekey.ingest.decoded import DecodedMessage
from lovekey.ingest.sources import register
from lovekey.ingest.sources._fields import external_id, rfc3339, within
from lovekey.ingest.sources._lorawan import LoRaWanAdapter, frame_counter


@register
class TheThingsStack(LoRaWanAdapter):
    kind = "tts"
    default_topic = "v3/+/devices/+/up"

    def __init__(self, source: SourceSettings, *, zone: ZoneInfo) -> None:
        super().__init__(source, zone=zone)
        self.device_key = str(source.options.get("device_key", "dev_eui"))
        if self.device_key not in ("dev_eui", "device_id"):
            raise SettingsError(f"source {source.name}: device_key is dev_eui or device_id")
        self.allow_simulated = bool(source.options.get("allow_simulated", False))

    def decode(self, topic: str, payload: bytes, context: DecodeContext) -> DecodedMessage:
        levels_ = topic.split("/")
        # v3/{app}@{tenant}/devices/{device_id}/up (read from the end: a bridge or a test may prefix it)
        if len(levels_) < 5 or levels_[-5] != "v3" or levels_[-3] != "devices":
            raise PayloadError(reasons.BAD_TOPIC, "expected v3/{application}@{tenant}/devices/{device}/up")
        if levels_[-1] != "up":
            raise PayloadError(
                reasons.BAD_TOPIC, f"a {levels_[-1][:20]!r} message carries no reading (subscribe to .../up)"
            )
        body = load_object(payload)
        ids = body.get("end_device_ids")
        if not isinstance(ids, dict):
            raise PayloadError(reasons.MISSING_FIELD, "end_device_ids")
        device_id = external_id(ids.get("device_id"), "end_device_ids.device_id")
        if device_id != levels_[-2]:
            raise PayloadError(
                reasons.DEVICE_MISMATCH, f"device_id {device_id} != topic {levels_[-2][:36]!r}"
            )
        key = external_id(ids.get(self.device_key), f"end_device_ids.{self.device_key}")
        if body.get("simulated") is True and not self.allow_simulated:
            raise PayloadError(
                reasons.BAD_VALUE, "a simulated uplink (sent from the console), not the device's"
            )
        uplink = body.get("uplink_message")
        if not isinstance(uplink, dict):
            raise PayloadError(reasons.MISSING_FIELD, "uplink_message")
        when = uplink.get("received_at", body.get("received_at"))
        if when is None:
            raise PayloadError(reasons.MISSING_FIELD, "uplink_message.received_at")
        ts = within(rfc3339(when, None, "received_at"), context, "received_at")
        seq = frame_counter(uplink.get("f_cnt", 0), "f_cnt")
        version = uplink.get("version_ids")
        return self.uplink(
            key,
            version.get("model_id") if isinstance(version, dict) else None,
            raw=(uplink.get("frm_payload"), "frm_payload"),
            decoded=(uplink.get("decoded_payload"), "decoded_payload (the payload formatter's output)"),
            ts=ts,
            seq=seq,
            context=context,
        )
