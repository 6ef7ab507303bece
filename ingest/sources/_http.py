"""The HTTP platform sources (CTWing, OneNET, Huawei) as source adapters.

A platform push is read whole by `ingest.platforms` (the pure readers: envelope, token or
signature, times); the adapter then turns each report into the ingester's `DecodedMessage`
the way every source adapter does (`ingest.sources._meter`): `options` say where the
decoded values keep the meter's total and battery (`total_field`, `total_unit`,
`battery_field`, `battery_unit`, `time_field`), alarm fields (`smoke`, `gas`, `tamper`,
`battery_low`) become levels, and pass-through bytes (CTWing `APPdata`) go to the decoder
`decoders` names for the product (`cjt188`). Platforms often write numbers as strings
(Huawei profiles do); the total and battery fields are read from either.

One OneNET push can carry many devices, so `messages()` gives one decoded message (or
refusal) per report; `decode()`, the adapter interface's single-message form, serves pushes
that carry exactly one.
"""

from __future__ import annotations

import hmac
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from lovekey.config import SourceSettings
from lovekey.errors import PayloadError, SettingsError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.decoded import DecodedMessage
from lovekey.ingest.platforms import Push, Report
from lovekey.ingest.sources import SourceAdapter
from lovekey.ingest.sources._meter import (
    MeterFields,
    check_decoders,
    decoder_for,
    from_frame,
    levels,
    meter_reading,
    object_time,
)


class PlatformAdapter(SourceAdapter):
    """One HTTP platform source: its token, where its values are, its platform reader."""

    # True: the platform signs nothing, so the token must come in the request URL
    url_token: ClassVar[bool] = True

    def __init__(self, source: SourceSettings, *, zone: ZoneInfo) -> None:
        super().__init__(source, zone=zone)
        if not source.token:
            raise SettingsError(f"source {source.name}: a {self.kind} source needs a token (docs/sources/)")
        self.token = source.token
        try:
            self.fields = MeterFields.from_options(dict(source.options))
            check_decoders(source.decoders)
        except SettingsError as exc:
            raise SettingsError(f"source {source.name}: {exc}") from exc
        self.decoders = dict(source.decoders)
        # the fields whose numbers may come written as strings
        self._numeric = {field for field, _ in self.fields.total}
        if self.fields.battery is not None:
            self._numeric.add(self.fields.battery[0])

    def read(self, payload: bytes, context: DecodeContext, *, token: str | None = None) -> Push:
        """The whole push; `token` is the one the request's URL carried (None: none)."""
        if self.url_token and (token is None or not hmac.compare_digest(token.encode(), self.token.encode())):
            raise PayloadError(reasons.BAD_SIGNATURE, "the URL's token is missing or wrong")
        return self.read_push(payload, context)

    def read_push(self, payload: bytes, context: DecodeContext) -> Push:
        raise NotImplementedError

    def messages(self, push: Push, context: DecodeContext) -> list[DecodedMessage | PayloadError]:
        """Each report's reading and alarm levels, or why it has none; online/offline notices
        give nothing (an NB-IoT device sleeps between reports: offline is its normal state)."""
        out: list[DecodedMessage | PayloadError] = []
        for report in push.reports:
            if report.online is not None:
                continue
            try:
                out.append(self._message(report, context))
            except PayloadError as error:
                out.append(error)
        return out

    def _message(self, report: Report, context: DecodeContext) -> DecodedMessage:
        device = report.external_ids[0]
        if report.raw is not None:
            if decoder_for(self.decoders, report.model) != "cjt188":
                raise PayloadError(
                    reasons.UNSUPPORTED_FORMAT,
                    f"{len(report.raw)} bytes of pass-through data: name their decoder in `decoders`",
                )
            reading, frame_levels = from_frame(report.raw, report.ts, self.fields)
            return DecodedMessage(
                "reading", self.gateway_id, device, readings=(reading,), levels=frame_levels, external=True
            )
        values = self._numbers(report.values or {})
        ts = object_time(values, self.fields, self.zone, context, report.ts)
        found = meter_reading(values, ts, self.fields)
        alarm_levels = levels(values, ts)
        if found is None and not alarm_levels:
            wanted = ", ".join(field for field, _ in self.fields.total)
            have = ", ".join(sorted(str(k)[:40] for k in values)[:10]) or "nothing"
            raise PayloadError(
                reasons.UNMAPPED, f"no {wanted} and no alarm field in the report (it has {have})"
            )
        readings = () if found is None else (found,)
        return DecodedMessage(
            "reading", self.gateway_id, device, readings=readings, levels=alarm_levels, external=True
        )

    def _numbers(self, values: Any) -> dict[str, Any]:
        """`values` with the total and battery fields as numbers where written as strings."""
        out = dict(values)
        for field in self._numeric:
            value = out.get(field)
            if isinstance(value, str):
                try:
                    out[field] = float(value)
                except ValueError:
                    raise PayloadError(
                        reasons.BAD_VALUE, f"{field} is not a number: {value[:40]!r}"
                    ) from None
        return out

    def decode(self, topic: str, payload: bytes, context: DecodeContext) -> DecodedMessage:
        """A push carrying one reading; `topic` is the request path (its last segment the token)."""
        token = topic.rstrip("/").rpartition("/")[2] or None
        found = self.messages(self.read(payload, context, token=token), context)
        if len(found) != 1:
            raise PayloadError(reasons.BAD_VALUE, f"the push carries {len(found)} readings, not one")
        (only,) = found
        if isinstance(only, PayloadError):
            raise only
        return only
