"""wmbusmeters: wM-Bus/OMS meters decoded by wmbusmeters, published by its `shell=` line.

wmbusmeters prints one JSON object per telegram (https://github.com/wmbusmeters/wmbusmeters,
README.md: `{"_":"telegram","media":"water","meter":"iperl","name":"MyTapWater",
"id":"33225544","total_m3":123.529,"timestamp":"2024-03-03T18:37:00Z"}`) and hands it to
whatever its `shell=` line runs, e.g. `mosquitto_pub -t wmbusmeters/$METER_ID -m "$METER_JSON"`
(docs/sources/wmbusmeters.md has the line to paste, with `-q 1`).

The device is the meter's `id` (8 digits of its wM-Bus address); the reading is `total_m3`
(option `total_field`/`total_unit` for drivers that name it otherwise) at `timestamp`. Only
water meters are read: `media` must name water ("water", "cold water", "warm water", ...).
A `timestamp` without a zone (older versions, or `--addconversions` set-ups printing local
time) is read in the source's time zone.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from lovekey.config import SourceSettings
from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.codecs._fields import load_object
from lovekey.ingest.decoded import DecodedMessage
from lovekey.ingest.sources import SourceAdapter, register
from lovekey.ingest.sources._fields import external_id, rfc3339, within
from lovekey.ingest.sources._meter import MeterFields, meter_reading

# wM-Bus ids are 8 digits; some drivers print them with letters (manufacturer-specific)
MAX_ID_CHARS = 16


@register
class WmbusMeters(SourceAdapter):
    kind = "wmbusmeters"
    default_topic = "wmbusmeters/#"

    def __init__(self, source: SourceSettings, *, zone: ZoneInfo) -> None:
        super().__init__(source, zone=zone)
        options = dict(source.options)
        options.setdefault("total_field", "total_m3")
        self.fields = MeterFields.from_options(options)

    def decode(self, topic: str, payload: bytes, context: DecodeContext) -> DecodedMessage:
        body = load_object(payload)
        kind = body.get("_", "telegram")
        if kind != "telegram":
            raise PayloadError(reasons.BAD_VALUE, f"a {str(kind)[:20]!r} message, not a telegram")
        meter_id = external_id(body.get("id"), "id")
        if len(meter_id) > MAX_ID_CHARS:
            raise PayloadError(reasons.BAD_VALUE, f"id {meter_id!r} is not a wM-Bus meter id")
        media = body.get("media")
        if type(media) is not str:
            raise PayloadError(reasons.MISSING_FIELD, "media")
        if "water" not in media or "waste" in media:
            raise PayloadError(reasons.WRONG_KIND, f"media {media[:30]!r} is not a water meter")
        if "timestamp" not in body:
            raise PayloadError(reasons.MISSING_FIELD, "timestamp")
        ts = within(rfc3339(body["timestamp"], self.zone, "timestamp"), context, "timestamp")
        reading = meter_reading(body, ts, self.fields)
        if reading is None:
            raise PayloadError(reasons.MISSING_FIELD, self.fields.total[0][0])
        return DecodedMessage("reading", self.gateway_id, meter_id, readings=(reading,), external=True)
