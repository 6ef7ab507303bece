"""What the two LoRaWAN network servers' uplinks have in common (ChirpStack v4, The Things
Stack v3): a frame counter, and a meter reading either from the server's decoded object or
from the raw frame read as CJ/T 188, chosen per meter model."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from lovekey.config import SourceSettings
from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.decoded import DecodedMessage, EventMessage, WaterReading
from lovekey.ingest.sources import SourceAdapter
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


def frame_counter(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_F_CNT:
        raise PayloadError(reasons.BAD_VALUE, f"{what} must be a 32-bit counter, got {value!r:.40}")
    return value


class LoRaWanAdapter(SourceAdapter):
    """A network server's uplinks; subclasses read their own envelope and call `uplink`."""

    def __init__(self, source: SourceSettings, *, zone: ZoneInfo) -> None:
        super().__init__(source, zone=zone)
        self.fields = MeterFields.from_options(source.options)
        check_decoders(source.decoders)
        self.decoders = dict(source.decoders)

    def uplink(
        self,
        key: str,
        model: Any,
        *,
        raw: tuple[Any, str],
        decoded: tuple[Any, str],
        ts: datetime,
        seq: int,
        context: DecodeContext,
    ) -> DecodedMessage:
        """The reading and alarm states of one uplink from device `key`. `raw` and `decoded`
        are the frame (base64) and the server's decoded object, each with its field name."""
        reading: WaterReading | None
        found: tuple[EventMessage, ...]
        if decoder_for(self.decoders, model if isinstance(model, str) else None) == "cjt188":
            reading, found = from_frame(base64_bytes(*raw), ts, self.fields, seq)
        else:
            body, what = decoded
            if not isinstance(body, dict):
                raise PayloadError(reasons.MISSING_FIELD, what)
            name = what.split(" ", 1)[0]
            ts = object_time(body, self.fields, self.zone, context, ts)
            reading = meter_reading(body, ts, self.fields, seq)
            found = levels(body, ts)
            if reading is None and not found:
                raise PayloadError(
                    reasons.MISSING_FIELD, f"{name} has no {self.fields.total[0][0]} nor alarm state"
                )
        return DecodedMessage(
            "reading",
            self.gateway_id,
            key,
            readings=(reading,) if reading is not None else (),
            levels=found,
            external=True,
        )
