"""Payload codecs: a registry of one codec per topic kind, and the pure `decode_message`.

Each codec module registers itself with one `register()` call; `decode_message` parses the
topic, enforces the size limit and hands the payload to the codec for that kind. Nothing
here touches the database, the registry or the clock: `now` is an argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.decoded import DecodedMessage, MessageKind

# Ids in topics are the ids people type into the registry; longer ones are not ids.
MAX_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class Topic:
    kind: MessageKind
    gateway_id: str
    device_id: str | None  # None for gateway status


@dataclass(frozen=True, slots=True)
class DecodeContext:
    """The limits one decode is held to, computed once per call from `now`."""

    now: datetime
    latest: datetime  # timestamps after this are future_timestamp
    earliest: datetime | None  # timestamps before this are too_old (None: no limit)


Codec = Callable[[Topic, bytes, DecodeContext], DecodedMessage]

_CODECS: dict[str, Codec] = {}


def register(kind: MessageKind, codec: Codec) -> None:
    """Make `codec` the decoder for messages on `.../{kind}` topics."""
    if kind in _CODECS:
        raise ValueError(f"a codec for {kind!r} is already registered")
    _CODECS[kind] = codec


def parse_topic(topic_prefix: str, topic: str) -> Topic:
    """`{prefix}/{gw}/{dev}/reading|event` or `{prefix}/{gw}/status`, else `bad_topic`."""
    prefix = topic_prefix.rstrip("/") + "/"
    if not topic.startswith(prefix):
        raise PayloadError(reasons.BAD_TOPIC, f"topic is not under {topic_prefix!r}")
    levels = topic[len(prefix) :].split("/")
    if len(levels) == 3 and levels[2] in ("reading", "event"):
        kind: MessageKind = "reading" if levels[2] == "reading" else "event"
        gateway_id, device_id = levels[0], levels[1]
        _check_id(gateway_id, "gateway")
        _check_id(device_id, "device")
        return Topic(kind, gateway_id, device_id)
    if len(levels) == 2 and levels[1] == "status":
        _check_id(levels[0], "gateway")
        return Topic("status", levels[0], None)
    raise PayloadError(
        reasons.BAD_TOPIC, "expected {gateway}/{device}/reading, .../event or {gateway}/status"
    )


def _check_id(value: str, what: str) -> None:
    if not value or len(value) > MAX_ID_CHARS or value != value.strip():
        raise PayloadError(reasons.BAD_TOPIC, f"bad {what} id {value[:MAX_ID_CHARS]!r}")


def decode_message(
    topic_prefix: str,
    topic: str,
    payload: bytes,
    *,
    now: datetime,
    max_payload_bytes: int = 65536,
    future_tolerance_s: int = 600,
    max_age_s: float | None = None,
) -> DecodedMessage:
    """Decode one MQTT message against the contract in DESIGN.md.

    Raises `PayloadError` when nothing in the message can be accepted. For a batch, good
    rows come back in `.readings` and bad ones in `.row_errors`. `now` must be aware;
    `max_age_s` (the retention window) rejects older timestamps as `too_old`.
    """
    parsed = parse_topic(topic_prefix, topic)
    if len(payload) > max_payload_bytes:
        raise PayloadError(reasons.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes > {max_payload_bytes}")
    context = DecodeContext(
        now=now,
        latest=now + timedelta(seconds=future_tolerance_s),
        earliest=None if max_age_s is None else now - timedelta(seconds=max_age_s),
    )
    return _CODECS[parsed.kind](parsed, payload, context)


# The codec modules register themselves on import; importing them here fills the registry.
from lovekey.ingest.codecs import event, reading, status  # noqa: E402

__all__ = [
    "Codec",
    "DecodeContext",
    "Topic",
    "decode_message",
    "event",
    "parse_topic",
    "reading",
    "register",
    "status",
]
