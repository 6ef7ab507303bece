"""The simulator: realistic households, meters and incidents with ground truth, over MQTT.

    scenario = Scenario.load(None)                  # or a TOML file laid over the defaults
    world = World.build(scenario, residents=200, seed=1, start=start, days=7)
    world.registry_rows()  world.truth()  world.water_usage(a, b, bucket_s=900)
    world.water_readings(a, b)  world.messages(a, b)

`lovekey simulate` publishes `world.messages()` to the broker (simulator.publish_world, over
the clients of simulator.publish).
The names below are imported on first use, so `lovekey --help` does not load numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lovekey.simulator.incidents import Incident
    from lovekey.simulator.scenario import INCIDENT_KINDS, REPORTING_MODES, Scenario
    from lovekey.simulator.stream import MessageBatch, SimulatedEvent, WaterReadings
    from lovekey.simulator.traffic import WireMessage
    from lovekey.simulator.world import World

_WHERE = {
    "INCIDENT_KINDS": "lovekey.simulator.scenario",
    "REPORTING_MODES": "lovekey.simulator.scenario",
    "Scenario": "lovekey.simulator.scenario",
    "Incident": "lovekey.simulator.incidents",
    "MessageBatch": "lovekey.simulator.stream",
    "SimulatedEvent": "lovekey.simulator.stream",
    "WaterReadings": "lovekey.simulator.stream",
    "WireMessage": "lovekey.simulator.traffic",
    "World": "lovekey.simulator.world",
}

__all__ = [
    "INCIDENT_KINDS",
    "REPORTING_MODES",
    "Incident",
    "MessageBatch",
    "Scenario",
    "SimulatedEvent",
    "WaterReadings",
    "WireMessage",
    "World",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'lovekey.simulator' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
