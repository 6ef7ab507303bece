"""Huawei OceanConnect (IoT platform, the "北向" API still behind many NB-IoT meters).

An application subscribes a callback URL to notification types; the platform POSTs a JSON
notification and expects 200 ("应用收到推送消息，请务必返回响应码"). Read here, from the
northbound API reference (https://support.huaweicloud.com/en-us/api-iothub/iot_06_0035.html
and iot_06_0036.html):

- `deviceDataChanged`: `deviceId`, `gatewayId`, `requestId`, `service` {`serviceId`,
  `serviceType`, `data` (the service's decoded fields), `eventTime` `yyyyMMdd'T'HHmmss'Z'`
  in UTC}.
- `deviceDatasChanged`: the same with a list of services (`services`; the reference's own
  example spells it `service`, so both are read).
Other notification types (device added, info changed, command results) are acknowledged
and counted, not stored. The notifications carry no signature: the per-source token in
the URL is the check (docs/sources/huawei.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.platforms import Push, Report
from lovekey.ingest.platforms._common import external_id, load_object, text, within

MAX_SERVICES = 1000


def read_push(body: bytes, context: DecodeContext) -> Push:
    message = load_object(body)
    kind = text(message, "notifyType")
    if kind == "deviceDataChanged":
        device = _device(message)
        return Push(reports=(_service(device, message.get("service"), "service", context),))
    if kind == "deviceDatasChanged":
        device = _device(message)
        services = message.get("services", message.get("service"))
        if services is None:
            raise PayloadError(reasons.MISSING_FIELD, "services")
        if not isinstance(services, list):
            raise PayloadError(reasons.BAD_VALUE, "services must be a list")
        if not services:
            raise PayloadError(reasons.EMPTY_BATCH, "services is empty")
        if len(services) > MAX_SERVICES:
            raise PayloadError(reasons.BAD_VALUE, f"{len(services)} services in one notification")
        reports = tuple(
            _service(device, service, f"services[{i}]", context) for i, service in enumerate(services)
        )
        return Push(reports=reports)
    return Push(ignored=1, notes=(f"notifyType {kind[:40]!r} holds no reading",))


def _device(message: dict[str, Any]) -> str:
    device = external_id(message.get("deviceId"))
    if device is None:
        raise PayloadError(reasons.MISSING_FIELD, "deviceId")
    return device


def _service(device: str, service: Any, where: str, context: DecodeContext) -> Report:
    if service is None:
        raise PayloadError(reasons.MISSING_FIELD, where)
    if not isinstance(service, dict):
        raise PayloadError(reasons.BAD_VALUE, f"{where} must be a JSON object")
    data = service.get("data")
    if data is None:
        raise PayloadError(reasons.MISSING_FIELD, f"{where}.data")
    if not isinstance(data, dict):
        raise PayloadError(reasons.BAD_VALUE, f"{where}.data must be a JSON object")
    return Report((device,), event_time(service.get("eventTime"), f"{where}.eventTime", context), values=data)


def event_time(value: Any, name: str, context: DecodeContext) -> datetime:
    """`yyyyMMdd'T'HHmmss'Z'` (UTC), the platform's time format."""
    if value is None:
        raise PayloadError(reasons.MISSING_FIELD, name)
    if type(value) is not str or len(value) != 16 or value[8] != "T" or value[15] != "Z":
        raise PayloadError(reasons.BAD_TIMESTAMP, f"{name} {value!r:.40} is not yyyyMMddTHHmmssZ")
    try:
        ts = datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise PayloadError(reasons.BAD_TIMESTAMP, f"{name} {value!r}: {exc}") from exc
    return within(ts, context, name)
