"""The CTWing (China Telecom AEP) source: `ingest.platforms.ctwing` behind the adapter interface."""

from __future__ import annotations

from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.platforms import Push, ctwing
from lovekey.ingest.sources import register
from lovekey.ingest.sources._http import PlatformAdapter


@register
class CtwingAdapter(PlatformAdapter):
    kind = "ctwing"

    def read_push(self, payload: bytes, context: DecodeContext) -> Push:
        return ctwing.read_push(payload, context)
