"""The simulator: realistic households, meters and incidents with ground truth, over MQTT.

    scenario = Scenario.load(None)                  # or a TOML file laid over the defaults
    world = World.build(scenario, residents=200, seed=1, start=start, days=7)
    world.registry_rows()  world.truth()  world.water_usage(a, b, bucket_s=900)
    world.water_readings(a, b)  world.messages(a, b)

`lovekey simulate` publishes `world.messages()` to the broker (simulator.publish).
"""

from simulator.incidents import Incident
from simulator.scenario import INCIDENT_KINDS, REPORTING_MODES, Scenario
from simulator.traffic import Message
from simulator.world import MessageBatch, WaterReadings, World

__all__ = [
    "INCIDENT_KINDS",
    "REPORTING_MODES",
    "Incident",
    "Message",
    "MessageBatch",
    "Scenario",
    "WaterReadings",
    "World",
]
