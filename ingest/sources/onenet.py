"""The OneNET (China Mobile) source: `ingest.platforms.onenet` behind the adapter interface.

OneNET signs every push with the token (and may encrypt it with `aes_key`), so the URL
carries no token; the handshake GET is answered by `handshake`.
"""

from __future__ import annotations

from collections.abc import Mapping

from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.platforms import Push, onenet
from lovekey.ingest.sources import register
from lovekey.ingest.sources._http import PlatformAdapter


@register
class OnenetAdapter(PlatformAdapter):
    kind = "onenet"
    url_token = False

    def read_push(self, payload: bytes, context: DecodeContext) -> Push:
        return onenet.read_push(payload, context, token=self.token, aes_key=self.source.aes_key)

    def handshake(self, query: Mapping[str, str]) -> bytes:
        return onenet.handshake(query, self.token)
