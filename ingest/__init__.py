"""MQTT ingest: readings, events and gateway status into PostgreSQL, each stored once.

`decode_message` is the pure codec entry (the simulator validates its messages with it);
`Ingester` is the service (`with Ingester(settings, db_url, mqtt_url) as i: i.run(stop)`),
and `broker_url` gives the broker of the embedded default. The last two are imported on
first use, so decoding does not pull in paho-mqtt and psycopg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lovekey.ingest.codecs import decode_message
from lovekey.ingest.decoded import (
    DecodedMessage,
    EventMessage,
    Reading,
    SensorReading,
    WaterReading,
)
from lovekey.ingest.reasons import REASONS

if TYPE_CHECKING:
    from lovekey.ingest.broker import broker_url
    from lovekey.ingest.ingester import Ingester

__all__ = [
    "REASONS",
    "DecodedMessage",
    "EventMessage",
    "Ingester",
    "Reading",
    "SensorReading",
    "WaterReading",
    "broker_url",
    "decode_message",
]


def __getattr__(name: str) -> Any:
    if name == "Ingester":
        from lovekey.ingest.ingester import Ingester

        return Ingester
    if name == "broker_url":
        from lovekey.ingest.broker import broker_url

        return broker_url
    raise AttributeError(f"module 'lovekey.ingest' has no attribute {name!r}")
