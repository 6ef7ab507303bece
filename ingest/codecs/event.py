"""The JSON event codec: `{"ts", "type", "active", "value"?}` from detectors and buttons."""

from __future__ import annotations

from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext, Topic, register
from lovekey.ingest.codecs._fields import check_device_id, flag, load_object, number, timestamp
from lovekey.ingest.decoded import DecodedMessage, EventMessage
from lovekey.vocabulary import EventType

MAX_ABS_VALUE = 1e9  # stored as float4


def decode_event(topic: Topic, payload: bytes, context: DecodeContext) -> DecodedMessage:
    body = load_object(payload)
    check_device_id(body, topic.device_id)
    kind = body.get("type")
    if kind is None:
        raise PayloadError(reasons.MISSING_FIELD, "type")
    try:
        # a str check first: EventType() of a list or dict would search every member
        event_type = EventType(kind) if isinstance(kind, str) else None
    except ValueError:
        event_type = None
    if event_type is None:
        raise PayloadError(reasons.UNKNOWN_EVENT, f"type {str(kind)[:40]!r}")
    event = EventMessage(
        ts=timestamp(body, context),
        type=event_type,
        active=flag(body, "active"),
        value=number(body, "value", -MAX_ABS_VALUE, MAX_ABS_VALUE),
    )
    return DecodedMessage("event", topic.gateway_id, topic.device_id, events=(event,))


register("event", decode_event)
