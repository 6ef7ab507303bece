"""The HTTP platform sources (CTWing, OneNET, Huawei) as source adapters.

A platform push is read whole by `ingest.platforms` (the pure readers: envelope, token or
signature, times); the adapter then turns each report into the ingester's `DecodedMessage`
through the source's field map (`ingest.platforms.fields`). One OneNET push can carry many
devices, so `messages()` gives one decoded message (or refusal) per report; `decode()`, the
adapter interface's single-message form, serves pushes that carry exactly one reading.
"""

from __future__ import annotations

import hmac
from typing import ClassVar
from zoneinfo import ZoneInfo

from lovekey.config import SourceSettings
from lovekey.errors import PayloadError, SettingsError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.decoded import DecodedMessage
from lovekey.ingest.platforms import Push, fields
from lovekey.ingest.sources import SourceAdapter


class PlatformAdapter(SourceAdapter):
    """One HTTP platform source: its token, its field map, its platform reader."""

    # True: the platform signs nothing, so the token must come in the request URL
    url_token: ClassVar[bool] = True

    def __init__(self, source: SourceSettings, *, zone: ZoneInfo) -> None:
        super().__init__(source, zone=zone)
        if not source.token:
            raise SettingsError(f"source {source.name}: a {self.kind} source needs a token (docs/sources/)")
        self.token = source.token
        try:
            self.names = fields.field_map(source.options)
        except ValueError as exc:
            raise SettingsError(f"source {source.name}: {exc}") from exc

    def read(self, payload: bytes, context: DecodeContext, *, token: str | None = None) -> Push:
        """The whole push; `token` is the one the request's URL carried (None: none)."""
        if self.url_token and (token is None or not hmac.compare_digest(token.encode(), self.token.encode())):
            raise PayloadError(reasons.BAD_SIGNATURE, "the URL's token is missing or wrong")
        return self.read_push(payload, context)

    def read_push(self, payload: bytes, context: DecodeContext) -> Push:
        raise NotImplementedError

    def messages(self, push: Push, context: DecodeContext) -> list[DecodedMessage | PayloadError]:
        """Each report's reading, or why it cannot be one; online/offline notices give none
        (an NB-IoT device sleeps between reports: being offline is its normal state)."""
        out: list[DecodedMessage | PayloadError] = []
        for report in push.reports:
            if report.online is not None:
                continue
            try:
                if report.raw is not None:
                    raise PayloadError(
                        reasons.UNSUPPORTED_FORMAT,
                        f"{len(report.raw)} bytes of pass-through data and no payload decoder for them",
                    )
                reading = fields.reading(report, self.names, context)
            except PayloadError as error:
                out.append(error)
                continue
            out.append(
                DecodedMessage(
                    "reading", self.gateway_id, report.external_ids[0], readings=(reading,), external=True
                )
            )
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
