"""Where a replay's history comes from: the simulator in-process, or the database.

Both produce the same `ReplayData` plus the ground truth, so `lovekey evaluate` scores the
very detector the runner uses, on either source.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from lovekey.config import DetectSettings
from lovekey.detectors import store as db
from lovekey.detectors.engine import Registry
from lovekey.detectors.params import build_params, effective_rules
from lovekey.evaluation.replay import ReplayData, ReplayEvent
from lovekey.evaluation.scoring import Truth
from lovekey.simulator.checkin import CheckInModel, spans_from_truth
from lovekey.simulator.door import DoorModel
from lovekey.storage.history import history_bounds
from lovekey.vocabulary import LIFE_SAFETY_EVENTS, PRESENCE_EVENTS, DeviceKind

# the events the replay reads: the alarms, and the presses that say where the resident is
EVENT_TYPES = LIFE_SAFETY_EVENTS + PRESENCE_EVENTS


@dataclass(frozen=True, slots=True)
class Source:
    data: ReplayData
    truth: list[Truth]
    report_interval_s: dict[str, int]  # per water meter id
    gateway_of: dict[str, str]  # device id -> gateway id
    households: int


def _registry(
    settings: DetectSettings,
    meter_ids: Sequence[str],
    resident_of: Mapping[str, str | None],
    gateway_of: Mapping[str, str],
    interval_s: Sequence[int | None],
    rules: Sequence[Mapping[str, Any]] | None = None,
) -> Registry:
    residents = sorted({r for m in meter_ids if (r := resident_of.get(m))})
    gateways = sorted({gateway_of[m] for m in meter_ids})
    r_index = {r: i for i, r in enumerate(residents)}
    g_index = {g: i for i, g in enumerate(gateways)}
    if rules is None:
        defaults, _ = effective_rules(settings, None, None)
        rules = [defaults] * len(meter_ids)
    return Registry(
        list(meter_ids),
        residents,
        gateways,
        np.array([r_index.get(resident_of.get(m) or "", -1) for m in meter_ids], np.int64),
        np.array([g_index[gateway_of[m]] for m in meter_ids], np.int64),
        build_params(settings, rules, list(interval_s)),
    )


# -- the simulator ----------------------------------------------------------------------------


def stage_models(
    source: Source, *, seed: int, unanswered: float, door_share: float, utc_offset_s: int
) -> tuple[CheckInModel, DoorModel]:
    """How `lovekey evaluate` has residents answer check-ins (from the truth) and which
    households have a door reminder, so other studies of the same world draw the same."""
    lines = [(t.kind, t.resident_id, t.start_s, t.end_s) for t in source.truth]
    model = CheckInModel(
        seed=seed,
        extra_unanswered=unanswered,
        utc_offset_s=utc_offset_s,
        spans=spans_from_truth(lines, source.data.end_s),
    )
    return model, DoorModel(seed=seed, share=door_share)


def from_world(world: Any, settings: DetectSettings) -> Source:
    """History of a `simulator.World` (interface 5) as the platform would have received it."""
    rows = world.registry_rows()
    resident_of = {r["device_id"]: r["resident_id"] or None for r in rows}
    gateway_of = {r["device_id"]: r["gateway_id"] for r in rows}
    interval = {
        r["device_id"]: int(r["report_interval_s"])
        for r in rows
        if r["kind"] == DeviceKind.WATER_METER and r["report_interval_s"]
    }
    readings = world.water_readings()
    meter_ids = list(readings.device_ids)
    registry = _registry(settings, meter_ids, resident_of, gateway_of, [interval.get(m) for m in meter_ids])
    events = [
        ReplayEvent(arrival, ts, kind, active, resident_of.get(device), device, gateway_of[device])
        for arrival, ts, kind, active, device in _world_events(world)
        if device in gateway_of
    ]
    truth = [Truth.from_json(inc.to_json()) for inc in world.truth()]
    data = ReplayData(
        registry=registry,
        meter=readings.device_index.astype(np.int64),
        ts_s=readings.ts.astype(np.int64),
        total_l=readings.total_l.astype(np.float64),
        arrival_s=np.ceil(readings.publish_ts).astype(np.int64),
        events=events,
        start_s=int(world.start.timestamp()),
        end_s=int(world.end.timestamp()),
    )
    households = len({r["household_id"] for r in rows if r.get("household_id")})
    return Source(data, truth, interval, gateway_of, households or len(registry.resident_ids))


def _world_events(world: Any) -> list[tuple[int, int, str, bool, str]]:
    """(arrival, ts, type, active, device id) of the world's device events, as received."""
    return [
        (math.ceil(e.arrival_s), int(e.ts_s), e.type, bool(e.active), e.device_id) for e in world.events()
    ]


# -- the database -----------------------------------------------------------------------------


def from_database(
    conn: psycopg.Connection[Any],
    settings: DetectSettings,
    truth_file: Path,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Source:
    """What the database holds (readings with their received_at), scored against a truth file."""
    truth = [
        Truth.from_json(json.loads(line)) for line in truth_file.read_text().splitlines() if line.strip()
    ]
    meters = db.water_meters(conn)
    meter_ids = [m.device_id for m in meters]
    key_to_meter = {m.key: i for i, m in enumerate(meters)}
    rules = []
    for m in meters:
        values, _ = effective_rules(settings, m.community_rules, m.resident_rules)
        rules.append(values)
    registry = _registry(
        settings,
        meter_ids,
        {m.device_id: m.resident_id for m in meters},
        {m.device_id: m.gateway_id for m in meters},
        [m.report_interval_s for m in meters],
        rules,
    )
    bounds = history_bounds(conn)  # hot and packed readings alike
    if bounds[0] is None:
        raise ValueError("the database holds no water readings to replay")
    start = start or bounds[0]
    end = end or bounds[1]
    assert start is not None
    assert end is not None
    rows = db.readings_since_ts(conn, [m.key for m in meters], start - timedelta(days=1), end)
    meter = np.array([key_to_meter[k] for k in rows.key.tolist()], np.int64)
    devices = {d.key: d for d in db.event_devices(conn)}
    events = []
    for row in db.events_received_after(conn, start - timedelta(days=1), EVENT_TYPES):
        device = devices.get(row.key)
        if device is not None:
            events.append(
                ReplayEvent(
                    db.epoch(row.received_at),
                    db.epoch(row.ts),
                    row.type,
                    row.active,
                    device.resident_id,
                    device.device_id,
                    device.gateway_id,
                )
            )
    data = ReplayData(
        registry, meter, rows.ts_s, rows.total_l, rows.received_s, events, db.epoch(start), db.epoch(end)
    )
    interval = {m.device_id: m.report_interval_s or settings.default_report_interval_s for m in meters}
    gateway_of = {d.device_id: d.gateway_id for d in devices.values()}
    return Source(data, truth, interval, gateway_of, len(registry.resident_ids))
