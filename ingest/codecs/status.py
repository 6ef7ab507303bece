"""The gateway status codec: `online` / `offline` as plain text or `{"status": ...}`.

Gateways publish it retained and set `offline` as their MQTT will, so the broker tells us
when a gateway drops off without saying goodbye.
"""

from __future__ import annotations

from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext, Topic, register
from lovekey.ingest.codecs._fields import load_json
from lovekey.ingest.decoded import DecodedMessage, GatewayStatus

_WORDS: dict[str, GatewayStatus] = {"online": "online", "offline": "offline"}


def decode_status(topic: Topic, payload: bytes, context: DecodeContext) -> DecodedMessage:
    status = _status(payload)
    return DecodedMessage("status", topic.gateway_id, None, status=status)


def _status(payload: bytes) -> GatewayStatus:
    try:
        word = payload.decode("utf-8").strip().lower()
    except UnicodeDecodeError as exc:
        raise PayloadError(reasons.MALFORMED_JSON, "status is not UTF-8") from exc
    if word in _WORDS:
        return _WORDS[word]
    if not word.startswith(("{", '"')):
        raise PayloadError(reasons.BAD_STATUS, f"status {word[:40]!r}")
    body = load_json(payload)
    if isinstance(body, dict):
        if "status" not in body:
            raise PayloadError(reasons.MISSING_FIELD, "status")
        body = body["status"]
    if isinstance(body, str) and body.strip().lower() in _WORDS:
        return _WORDS[body.strip().lower()]
    raise PayloadError(reasons.BAD_STATUS, f"status {str(body)[:40]!r}")


register("status", decode_status)
