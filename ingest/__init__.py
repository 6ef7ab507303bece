"""MQTT ingest: readings, events and gateway status into PostgreSQL, each stored once.

`decode_message` is the pure codec entry (the simulator validates its messages with it).
"""

from ingest.codecs import decode_message
from ingest.messages import (
    EVENT_TYPES,
    DecodedMessage,
    DeviceEvent,
    Reading,
    SensorReading,
    WaterReading,
)
from ingest.reasons import REASONS

__all__ = [
    "EVENT_TYPES",
    "REASONS",
    "DecodedMessage",
    "DeviceEvent",
    "Reading",
    "SensorReading",
    "WaterReading",
    "decode_message",
]
