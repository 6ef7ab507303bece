"""China Telecom CTWing (AEP) subscription pushes: one JSON message per POST.

CTWing posts each subscribed message to the configured URL and counts any answer but 200
as a failure: it retries up to three times, then drops the message, and a receiver that
fails more than 10 % of pushes within 10 s is not pushed to for a minute
(https://www.ctwing.cn/dyts/103, summarised in http://geekdaxue.co/read/softdev@iot/iq3b9f).
So a push that is understood but names no known device is still answered 200 (it is kept
in rejected_input), and only an unreadable push is answered 4xx.

The pushes carry no signature; the receiver's per-source token in the URL is what keeps
strangers out (see docs/sources/ctwing.md).

Message types read here:
- `dataReport`: `IMEI`, `deviceId`, `timestamp` (epoch ms, the platform's receive time),
  `payload` - the decoded service data (`{"serviceId": ..., "serviceData": {...}}` for
  LwM2M products with a profile, or the fields themselves) or, for pass-through products,
  `{"APPdata": base64}` bytes for a payload decoder.
- `deviceOnlineOfflineReport`: `eventType` 1 online, 0 offline; names only `deviceId`.
Every other type (`commandResponse`, `eventReport`, lifecycle notices) is acknowledged
and counted, not stored.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.platforms import Push, Report
from lovekey.ingest.platforms._common import epoch_ms, external_id, load_object, text


def read_push(body: bytes, context: DecodeContext) -> Push:
    message = load_object(body)
    kind = text(message, "messageType")
    if kind == "dataReport":
        return Push(reports=(_data_report(message, context),))
    if kind == "deviceOnlineOfflineReport":
        return Push(reports=(_online_offline(message, context),))
    return Push(ignored=1, notes=(f"messageType {kind[:40]!r} holds no reading",))


def _ids(message: dict[str, Any]) -> tuple[str, ...]:
    # the IMEI is what an installer writes down; the platform's deviceId is the fallback
    # (online/offline notices name only it, and TCP products leave IMEI empty)
    ids = tuple(i for i in (external_id(message.get("IMEI")), external_id(message.get("deviceId"))) if i)
    if not ids:
        raise PayloadError(reasons.MISSING_FIELD, "IMEI or deviceId")
    return ids


def _data_report(message: dict[str, Any], context: DecodeContext) -> Report:
    ids = _ids(message)
    ts = epoch_ms(message.get("timestamp"), "timestamp", context)
    payload = message.get("payload")
    if payload is None:
        raise PayloadError(reasons.MISSING_FIELD, "payload")
    if not isinstance(payload, dict):
        raise PayloadError(reasons.BAD_VALUE, "payload must be a JSON object")
    if "APPdata" in payload:
        encoded = payload["APPdata"]
        if type(encoded) is not str or not encoded:
            raise PayloadError(reasons.BAD_VALUE, "APPdata must be a non-empty base64 string")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PayloadError(reasons.BAD_VALUE, f"APPdata is not base64: {exc}") from exc
        return Report(ids, ts, raw=raw, model=_product(message))
    service_data = payload.get("serviceData")
    if service_data is not None:
        if not isinstance(service_data, dict):
            raise PayloadError(reasons.BAD_VALUE, "serviceData must be a JSON object")
        return Report(ids, ts, values=service_data, model=_product(message))
    return Report(ids, ts, values=payload, model=_product(message))


def _product(message: dict[str, Any]) -> str | None:
    product = message.get("productId")
    return str(product) if isinstance(product, str | int) and product != "" else None


def _online_offline(message: dict[str, Any], context: DecodeContext) -> Report:
    ids = _ids(message)
    ts = epoch_ms(message.get("timestamp"), "timestamp", context)
    event_type = message.get("eventType")
    if event_type is None:
        raise PayloadError(reasons.MISSING_FIELD, "eventType")
    if type(event_type) is not int or event_type not in (0, 1):
        raise PayloadError(
            reasons.BAD_STATUS, f"eventType must be 1 (online) or 0 (offline), got {event_type!r:.20}"
        )
    return Report(ids, ts, online=event_type == 1)
