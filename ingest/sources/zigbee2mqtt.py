"""Zigbee2MQTT: smoke and gas alarms as state snapshots, the bridge's availability as gateway status.

Zigbee2MQTT publishes a device's whole state on `{base_topic}/{friendly_name}` after every
change and report, e.g. `{"smoke": true, "battery_low": false, "battery": 100,
"linkquality": 120}` (property names from its device pages, e.g.
https://github.com/Koenkk/zigbee2mqtt.io docs/devices/HS1SA.md for HEIMAN's smoke detector,
docs/devices/HS1CG-M.md for its gas sensor); `last_seen` (ISO 8601 or epoch ms) only when
`advanced.last_seen` is set. Availability is `{base_topic}/bridge/state` and
`{base_topic}/{name}/availability`: `online`/`offline`, or `{"state":"online"}` when
`advanced.legacy_availability_payload` is false (docs/guide/configuration/device-availability.md).

State is not an event: `smoke`, `gas`, `tamper` and `battery_low` become levels, stored as
events only where they change (a repeated snapshot raises nothing). The bridge's state is the
gateway's online/offline; a device's own availability, and the bridge's bookkeeping topics
(`bridge/info`, `bridge/devices`, ...) and commands (`/set`, `/get`), say only that the
gateway was heard from. The device is its friendly name (by default Zigbee2MQTT's friendly
name is the IEEE address, e.g. `0x00158d0001a2b3c4`). Without `last_seen` a snapshot's time
is its receipt, so a redelivered snapshot gets a new time: harmless for levels (nothing
changed), and the only readings taken from a snapshot (`voltage`) are kept only when it
carries `last_seen`.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from lovekey.config import SourceSettings
from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.codecs._fields import load_json
from lovekey.ingest.decoded import DecodedMessage, GatewayStatus, SensorReading
from lovekey.ingest.sources import SourceAdapter, register
from lovekey.ingest.sources._fields import any_time, external_id, within
from lovekey.ingest.sources._meter import levels

# topics under the base that are Zigbee2MQTT's own, not a device's state
_COMMANDS = ("set", "get")
MAX_VOLTAGE_MV = 100_000


@register
class Zigbee2Mqtt(SourceAdapter):
    kind = "zigbee2mqtt"
    default_topic = "zigbee2mqtt/#"

    def __init__(self, source: SourceSettings, *, zone: ZoneInfo) -> None:
        super().__init__(source, zone=zone)
        # the base topic is the subscription's filter without its wildcard
        self.base = str(source.options.get("base_topic", self.topic.removesuffix("/#")))
        self.prefix = self.base + "/"

    def decode(self, topic: str, payload: bytes, context: DecodeContext) -> DecodedMessage:
        if not topic.startswith(self.prefix):
            raise PayloadError(reasons.BAD_TOPIC, f"not under the base topic {self.base!r}")
        rest = topic[len(self.prefix) :]
        if rest == "bridge/state":
            return self._status(_availability(payload))
        if rest.startswith("bridge/") or rest.rsplit("/", 1)[-1] in _COMMANDS:
            return self._status(None)
        if rest.endswith("/availability"):
            _availability(payload)  # checked, though only the bridge's moves the gateway
            return self._status(None)
        name = external_id(rest, "friendly name")
        body = load_json(payload)
        if not isinstance(body, dict):
            raise PayloadError(reasons.MALFORMED_JSON, "a device's state is a JSON object")
        seen = body.get("last_seen")
        ts = (
            context.now
            if seen is None
            else within(any_time(seen, self.zone, "last_seen"), context, "last_seen")
        )
        found = levels(body, ts)
        readings: tuple[SensorReading, ...] = ()
        voltage = body.get("voltage")
        if seen is not None and voltage is not None:
            readings = (SensorReading(ts, battery_v=_volts(voltage)),)
        return DecodedMessage(
            "reading", self.gateway_id, name, readings=readings, levels=found, external=True
        )

    def _status(self, status: GatewayStatus | None) -> DecodedMessage:
        return DecodedMessage("status", self.gateway_id, None, status=status)


def _availability(payload: bytes) -> GatewayStatus:
    text = payload.strip()
    if text in (b"online", b"offline"):
        return "online" if text == b"online" else "offline"
    try:
        body: Any = load_json(payload)
    except PayloadError:
        body = None  # neither the legacy words nor JSON
    state = body.get("state") if isinstance(body, dict) else None
    if state not in ("online", "offline"):
        raise PayloadError(reasons.BAD_STATUS, f"availability {payload[:40]!r}: online or offline")
    return "online" if state == "online" else "offline"


def _volts(value: Any) -> float:
    if (type(value) is not int and type(value) is not float) or not 0 <= value <= MAX_VOLTAGE_MV:
        raise PayloadError(reasons.BAD_VALUE, f"voltage must be millivolts, got {value!r:.40}")
    return value / 1000.0
