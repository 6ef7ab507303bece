"""Concentrators forwarding CJ/T 188 frames over MQTT: one meter's answer per message.

A concentrator polls its wired meters over M-Bus or RS-485 and publishes each answer as it
came, as binary or as hex text, with or without the FE wake-up bytes (the frame itself:
`ingest.sources.cjt188`). The device is the meter's 14-digit address as printed on it; the
reading's time is the meter's own clock, read in the source's time zone (it says none), so a
repeated frame is stored once. A meter whose clock is unset (all zeros) is read at receipt,
and option `clock = "received"` does that for every meter (for fleets whose clocks drift).
The status byte's battery bit becomes a `battery_low` level: stored as an event when it changes.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from lovekey.config import SourceSettings
from lovekey.errors import SettingsError
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.decoded import DecodedMessage, EventMessage, WaterReading
from lovekey.ingest.sources import SourceAdapter, register
from lovekey.ingest.sources._fields import within
from lovekey.ingest.sources.cjt188 import StatusBits, decode_frame
from lovekey.vocabulary import EventType


@register
class Cjt188Concentrator(SourceAdapter):
    kind = "cjt188"
    default_topic = "cjt188/#"

    def __init__(self, source: SourceSettings, *, zone: ZoneInfo) -> None:
        super().__init__(source, zone=zone)
        self.meter_clock = str(source.options.get("clock", "meter")) == "meter"
        try:
            self.status_bits = StatusBits(source.options.get("cjt188_status_bits", "standard"))
        except ValueError as exc:
            raise SettingsError(f"source {source.name}: cjt188_status_bits is standard or msb") from exc

    def decode(self, topic: str, payload: bytes, context: DecodeContext) -> DecodedMessage:
        frame = decode_frame(payload, status_bits=self.status_bits)
        if self.meter_clock and frame.meter_time is not None:
            ts = within(frame.meter_time.replace(tzinfo=self.zone), context, "meter time")
        else:
            ts = context.now
        return DecodedMessage(
            "reading",
            self.gateway_id,
            frame.address,
            readings=(WaterReading(ts, frame.total_l),),
            levels=(EventMessage(ts, EventType.BATTERY_LOW, frame.battery_low),),
            external=True,
        )
