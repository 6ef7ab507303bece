"""The simulated world: a district over a span of time, and the views the rest of LoveKey uses.

`World.build` draws the population, habits, devices and incidents (`simulator.district`);
nothing is generated until a view asks for it. Views walk the span one local day at a time
(residents in chunks), carrying each meter's register from day to day:

- `water_usage`    litres actually used per meter and bucket (after incidents): the model,
- `water_readings` the meter values the platform receives (columnar),
- `events`         the device events the platform receives,
- `messages`       the MQTT messages in the order they are sent.

The last three are the model as reported by the devices (`simulator.reporting`), delivered
by the network (`simulator.delivery`) and received (`simulator.stream`). All of them are
pure functions of (scenario, residents, seed, start, days): the same arguments give the
same bytes, and a resident's day does not depend on the chunking.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime
from functools import cached_property

import numpy as np
import numpy.typing as npt

from lovekey.simulator import stream
from lovekey.simulator.delivery import WorldShard
from lovekey.simulator.district import CHUNK_RESIDENTS, DAY_S, DistrictModel, day_of, day_start, epoch_s
from lovekey.simulator.incidents import Incident, local_datetime, to_incident
from lovekey.simulator.population import registry_rows
from lovekey.simulator.routine import MINUTES_PER_DAY
from lovekey.simulator.scenario import Scenario
from lovekey.simulator.stream import MessageBatch, SimulatedEvent, WaterReadings
from lovekey.simulator.traffic import Encoder, WireMessage

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]


class World(DistrictModel):
    """A district of `residents` over [start, start + days); see the module docstring.

    The model's own queries (`usage`, `advance`, `device_events`, ...) are inherited; the
    methods below are the views the rest of LoveKey uses.
    """

    @classmethod
    def build(
        cls,
        scenario: Scenario,
        *,
        residents: int,
        seed: int,
        start: datetime,
        days: float,
        door_share: float = 0.0,
    ) -> World:
        """Everything that is drawn once; the start is taken to the whole minute.

        `door_share`: households with a door reminder (`kind=door_sensor` in the registry
        rows; its `passage` / `left` / `returned` / `tamper` / `battery_low` events in the
        traffic), drawn by `simulator.door.DoorModel` as `lovekey evaluate` draws them. The
        default 0 keeps a world as it was before door reminders (and `lovekey evaluate`, which
        adds the passages itself, from doubling them).
        """
        if days <= 0:
            raise ValueError("days must be positive")
        start_s = epoch_s(start) // 60 * 60
        end_s = start_s + max(1, int(days * DAY_S) // 60) * 60
        return cls.draw(
            scenario, residents=residents, seed=seed, start_s=start_s, end_s=end_s, door_share=door_share
        )

    # -- the simple views -----------------------------------------------------------------

    @property
    def start(self) -> datetime:
        return local_datetime(self.start_s)

    @property
    def end(self) -> datetime:
        return local_datetime(self.end_s)

    def registry_rows(self) -> list[dict[str, str]]:
        """Full-form rows of docs/registry.md, contacts included, for `lovekey devices import`."""
        return registry_rows(self.population, self.scenario)

    def truth(self) -> list[Incident]:
        """The ground truth: every incident, sorted by start."""
        return [to_incident(plan, self.population) for plan in self.plans]

    @cached_property
    def meter_ids(self) -> list[str]:
        return stream.meter_ids(self)

    @cached_property
    def meter_report_interval_s(self) -> I32:
        return stream.meter_report_interval_s(self)

    # -- water use --------------------------------------------------------------------------

    def water_usage(self, start: datetime, end: datetime, *, bucket_s: int) -> tuple[list[str], F32]:
        """Litres used per meter and bucket over [start, end), buckets from `start`.

        `bucket_s` is a whole number of minutes; the start is taken to the minute.
        """
        if bucket_s <= 0 or bucket_s % 60:
            raise ValueError("bucket_s must be a positive whole number of minutes")
        a = epoch_s(start) // 60 * 60
        b = epoch_s(end)
        buckets = max(0, math.ceil((b - a) / bucket_s))
        n = self.population.residents
        out = np.zeros((n, buckets), dtype=np.float32)
        if buckets == 0:
            return self.meter_ids, out
        minutes_per_bucket = bucket_s // 60
        for day in range(day_of(max(a, self.start_s)), day_of(min(b, self.end_s) - 1) + 1):
            first_s = day_start(day)
            # minutes of this day that fall in [a, b)
            m0 = max(0, (a - first_s) // 60)
            m1 = min(MINUTES_PER_DAY, -(-(b - first_s) // 60))
            if m0 >= m1:
                continue
            bucket_of = ((first_s - a) // 60 + np.arange(m0, m1)) // minutes_per_bucket
            for r0 in range(0, n, CHUNK_RESIDENTS):
                r1 = min(n, r0 + CHUNK_RESIDENTS)
                usage = self.usage(day, r0, r1)[:, m0:m1]
                # sum consecutive minutes of the same bucket
                edges = np.nonzero(np.diff(bucket_of, prepend=-1))[0]
                sums = np.add.reduceat(usage, edges, axis=1, dtype=np.float64)
                out[r0:r1, bucket_of[edges]] += sums.astype(np.float32)
        return self.meter_ids, out

    # -- the traffic --------------------------------------------------------------------------

    @cached_property
    def encoder(self) -> Encoder:
        return stream.make_encoder(self)

    def water_readings(self, start: datetime | None = None, end: datetime | None = None) -> WaterReadings:
        """Meter values whose `ts` is in [start, end), as the platform receives them.

        Without `start`/`end`: every value sent during the simulation (a meter clock a few
        seconds fast or slow can stamp one just outside the span).
        """
        return stream.water_readings(self, start, end)

    def events(self, start: datetime | None = None, end: datetime | None = None) -> list[SimulatedEvent]:
        """Device events (buttons, alarms, door reminders, batteries) as the platform receives
        them, by arrival.

        A gateway outage delays its devices' events to its end (buffered) or loses them;
        `start`/`end` select by the event's own `ts`. Much cheaper than decoding `messages()`.
        """
        return stream.received_events(self, start, end)

    def messages(self, start: datetime | None = None, end: datetime | None = None) -> Iterator[WireMessage]:
        """The MQTT messages sent in [start, end) (default: the whole span), in send order."""
        for batch in self.message_batches(start, end):
            yield from map(WireMessage, batch.topics, batch.payloads, batch.publish_ts, batch.retain)

    def message_batches(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[MessageBatch]:
        """`messages()` as columns, a few thousand at a time: what a publisher wants.

        `shard=(k, n)` keeps the traffic of the k-th of n blocks of gateways only.
        """
        part = WorldShard.of(self.population, *shard)
        return stream.message_batches(self, self.encoder, start, end, part)


__all__ = ["MessageBatch", "SimulatedEvent", "WaterReadings", "World", "WorldShard"]
