"""The Huawei OceanConnect source: `ingest.platforms.huawei` behind the adapter interface."""

from __future__ import annotations

from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.platforms import Push, huawei
from lovekey.ingest.sources import register
from lovekey.ingest.sources._http import PlatformAdapter


@register
class HuaweiAdapter(PlatformAdapter):
    kind = "huawei"

    def read_push(self, payload: bytes, context: DecodeContext) -> Push:
        return huawei.read_push(payload, context)
