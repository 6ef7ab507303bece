"""The simulator's pure core: determinism, usage statistics, incidents in the traffic, codecs.

Everything here runs in memory; tests/test_simulator_e2e.py goes through the broker and the
ingester into PostgreSQL.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from lovekey.devices import parse_registry
from lovekey.errors import ScenarioError
from lovekey.ingest import decode_message
from lovekey.simulator import INCIDENT_KINDS, REPORTING_MODES, Scenario, WireMessage, World
from lovekey.simulator.cli import _MODES
from lovekey.simulator.population import AWAY_BUTTON, GAS, SMOKE, SOS_BUTTON
from lovekey.simulator.routine import FLUSH, NIGHT_FLUSH, day_events

LOCAL = timezone(timedelta(hours=8))
MONDAY = datetime(2024, 5, 6, tzinfo=LOCAL)
NO_INCIDENTS = {"incidents": {"rate": dict.fromkeys(INCIDENT_KINDS, 0.0)}}


def quiet(**meters: Any) -> Scenario:
    """The default scenario without drawn incidents (and with `meters` overrides)."""
    overrides: dict[str, Any] = {**NO_INCIDENTS}
    overrides.setdefault("meters", {}).update(meters)
    overrides["meters"]["failing_battery_share"] = meters.get("failing_battery_share", 0.0)
    return Scenario.load(None).with_overrides(overrides)


def decoded(message: WireMessage, *, now: datetime | None = None) -> Any:
    return decode_message(
        "lk", "lk/" + message.topic, message.payload, now=now or message.publish_at + timedelta(seconds=1)
    )


def body(message: WireMessage) -> Any:
    return orjson.loads(message.payload)


def ts_of(row: dict[str, Any]) -> float:
    value = row["ts"]
    return float(value) if isinstance(value, int | float) else datetime.fromisoformat(value).timestamp()


# -- determinism --------------------------------------------------------------------------


def _traffic(world: World) -> list[tuple[str, bytes, float, bool]]:
    return [(m.topic, m.payload, m.publish_ts, m.retain) for m in world.messages()]


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not():
    scenario = Scenario.load(None).with_overrides({"incidents": {"rate": {"day_out": 4.0}}})
    first = World.build(scenario, residents=60, seed=11, start=MONDAY, days=2)
    again = World.build(scenario, residents=60, seed=11, start=MONDAY, days=2)
    other = World.build(scenario, residents=60, seed=12, start=MONDAY, days=2)
    traffic = _traffic(first)
    assert len(traffic) > 5000
    assert traffic == _traffic(again)
    assert first.registry_rows() == again.registry_rows()
    assert [i.to_json() for i in first.truth()] == [i.to_json() for i in again.truth()]
    other_traffic = _traffic(other)
    assert {p for _, p, _, _ in traffic}.isdisjoint({p for _, p, _, _ in other_traffic[100:]})
    assert first.registry_rows() != other.registry_rows()


def test_windows_and_chunking_do_not_change_anything():
    world = World.build(quiet(), residents=2100, seed=5, start=MONDAY, days=2)
    small = World.build(quiet(), residents=30, seed=5, start=MONDAY, days=2)
    # resident 20 lies in the first chunk of 2,048 in both, resident 2,060 only in the big one;
    # the small world's residents must match the big world's first ones exactly
    a, b = MONDAY + timedelta(hours=7), MONDAY + timedelta(hours=31)
    ids, usage = world.water_usage(a, b, bucket_s=900)
    small_ids, small_usage = small.water_usage(a, b, bucket_s=900)
    assert ids[:30] == small_ids
    np.testing.assert_array_equal(usage[:30], small_usage)
    # a sub-window is a slice of the whole
    _, whole = small.water_usage(small.start, small.end, bucket_s=900)
    np.testing.assert_array_equal(small_usage, whole[:, 28:124])

    everything = list(small.messages())
    window = list(small.messages(a, b))
    assert window == [m for m in everything if a.timestamp() <= m.publish_ts < b.timestamp()]
    readings = small.water_readings(a, b)
    full = small.water_readings()
    inside = (full.ts >= a.timestamp()) & (full.ts < b.timestamp())
    np.testing.assert_array_equal(readings.ts, full.ts[inside])
    np.testing.assert_array_equal(readings.total_l, full.total_l[inside])


def test_messages_are_in_send_order_and_shards_split_them_by_gateway():
    world = World.build(Scenario.load(None), residents=120, seed=2, start=MONDAY, days=2)
    messages = list(world.messages())
    assert [m.publish_ts for m in messages] == sorted(m.publish_ts for m in messages)
    shards = [
        list(zip(b.topics, b.payloads, strict=True))
        for k in range(3)
        for b in world.message_batches(shard=(k, 3))
    ]
    parts = [pair for part in shards for pair in part]
    assert sorted(parts) == sorted((m.topic, m.payload) for m in messages)
    gateways_per_shard = [
        {t.split("/")[0] for b in world.message_batches(shard=(k, 3)) for t in b.topics} for k in range(3)
    ]
    assert all(g for g in gateways_per_shard)
    assert not (gateways_per_shard[0] & gateways_per_shard[1])


# -- statistics of water use ----------------------------------------------------------------


def test_daily_use_flushes_and_night_share_fall_in_the_documented_ranges():
    """docs/simulator.md, "What the defaults produce"."""
    residents, days = 300, 7
    world = World.build(quiet(), residents=residents, seed=3, start=MONDAY, days=days)
    _, hourly = world.water_usage(world.start, world.end, bucket_s=3600)
    per_day = hourly.reshape(residents, days, 24)
    daily_l = per_day.sum(axis=2).mean(axis=1)
    assert 80 <= np.median(daily_l) <= 120
    assert 0.01 <= np.mean(daily_l < 30) <= 0.12  # some frugal residents
    assert 0.04 <= np.mean(daily_l > 200) <= 0.25  # and some heavy users
    assert np.percentile(daily_l, 5) < 50 < 180 < np.percentile(daily_l, 95)
    night_share = per_day[:, :, :6].sum() / per_day.sum()
    assert 0.02 <= night_share <= 0.10
    # nobody is silent at night every night: most residents get up at night at least once
    assert np.mean(per_day[:, :, :6].sum(axis=(1, 2)) > 0) > 0.9

    flushes = np.zeros(residents)
    night = np.zeros(residents)
    index = np.arange(residents)
    for day in range(days):
        events = day_events(
            world.traits,
            index,
            (int(world.start_s) + 8 * 3600) // 86400 + day,
            seed=world.seed,
            routine=world.scenario.routine,
        )
        flushes += np.bincount(events.row[np.isin(events.kind, (FLUSH, NIGHT_FLUSH))], minlength=residents)
        night += np.bincount(events.row[events.kind == NIGHT_FLUSH], minlength=residents)
    assert 5 <= np.median(flushes / days) <= 8
    assert np.mean((flushes / days >= 3.5) & (flushes / days <= 10)) > 0.9
    assert 0.4 <= np.median(night / days) <= 1.5


# -- incidents as the traffic shows them -------------------------------------------------------


class Scene:
    """A small district with one incident of each kind at a fixed time."""

    def __init__(self) -> None:
        base = World.build(
            quiet(mode_share={"quarter_hour": 1.0}), residents=90, seed=8, start=MONDAY, days=4
        )
        pop = base.population
        self.outage_gateways = [pop.gateway_count - 1, pop.gateway_count - 2]
        ok = [r for r in range(pop.residents) if int(pop.resident_building[r]) not in self.outage_gateways]
        taken: set[int] = set()

        def pick(kind: int | None = None) -> int:
            for r in ok:
                if r not in taken and (kind is None or kind in pop.devices_of(r)):
                    taken.add(r)
                    return r
            raise AssertionError("the test district has nobody left with that device")

        self.who = {
            "smoke": pick(SMOKE),
            "gas": pick(GAS),
            "sos": pick(SOS_BUTTON),
            "planned_absence": pick(AWAY_BUTTON),
        }
        for kind in (
            "no_use",
            "running_tap",
            "slow_leak",
            "meter_silent",
            "meter_swap",
            "unannounced_absence",
            "day_out",
            "cleaning_day",
            "late_messages",
            "duplicate_messages",
        ):
            self.who[kind] = pick()
        fixed: list[dict[str, Any]] = [
            {"kind": "no_use", "start_h": 34, "duration_h": 20},
            {"kind": "running_tap", "start_h": 20, "duration_h": 3, "flow_lpm": 6.0},
            {"kind": "slow_leak", "start_h": 10, "open": True, "flow_lpm": 0.1},
            {"kind": "meter_silent", "start_h": 40, "duration_h": 10},
            {"kind": "meter_swap", "start_h": 45, "initial_l": 2.0},
            {"kind": "planned_absence", "start_h": 24, "duration_h": 30},
            {"kind": "unannounced_absence", "start_h": 26, "duration_h": 30},
            {"kind": "smoke", "start_h": 33, "duration_h": 0.2, "level": 12.0},
            {"kind": "gas", "start_h": 34, "duration_h": 0.5, "level": 25.0},
            {"kind": "sos", "start_h": 35},
            {"kind": "day_out", "start_h": 56, "duration_h": 8},
            {"kind": "cleaning_day", "start_h": 80, "duration_h": 3, "extra_l": 150.0},
            {"kind": "late_messages", "start_h": 30, "duration_h": 5, "delay_s": 1800.0},
            {"kind": "duplicate_messages", "start_h": 30, "duration_h": 5, "delay_s": 5.0},
        ]
        for spec in fixed:
            spec["resident"] = pop.resident_ids[self.who[spec["kind"]]]
        fixed += [
            {
                "kind": "gateway_outage",
                "gateway": self.outage_gateways[0],
                "start_h": 50,
                "duration_h": 2,
                "buffered": False,
            },
            {
                "kind": "gateway_outage",
                "gateway": self.outage_gateways[1],
                "start_h": 60,
                "duration_h": 3,
                "buffered": True,
            },
        ]
        scenario = base.scenario.with_overrides({"incidents": {"fixed": fixed}})
        self.world = World.build(scenario, residents=90, seed=8, start=MONDAY, days=4)
        self.messages = list(self.world.messages())
        self.by_device: dict[str, list[WireMessage]] = defaultdict(list)
        for m in self.messages:
            self.by_device[m.topic.split("/")[1]].append(m)
        self.truth = {i.kind: i for i in self.world.truth() if i.details["source"] == "scenario"}
        _, self.minutes = self.world.water_usage(self.world.start, self.world.end, bucket_s=60)
        self.readings = self.world.water_readings()

    def window(self, kind: str) -> tuple[float, float]:
        incident = self.truth[kind]
        end = incident.end.timestamp() if incident.end else self.world.end_s
        return incident.start.timestamp(), end

    def minutes_of(self, kind: str) -> np.ndarray:
        a, b = self.window(kind)
        m0 = int(a - self.world.start_s) // 60
        m1 = int(b - self.world.start_s) // 60
        return self.minutes[self.who[kind], m0:m1]

    def totals(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        r = self.readings
        mine = r.device_index == self.who[kind]
        return r.ts[mine], r.total_l[mine]

    def meter(self, kind: str) -> str:
        return self.world.meter_ids[self.who[kind]]


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene()


def test_no_use_means_zero_litres_and_a_register_that_stands_still(scene):
    assert scene.minutes_of("no_use").sum() == 0.0
    a, b = scene.window("no_use")
    ts, total = scene.totals("no_use")
    inside = total[(ts >= a + 60) & (ts <= b - 60)]
    assert len(inside) >= 70
    assert np.all(inside == inside[0])
    before = total[(ts >= a - 6 * 3600) & (ts < a - 60)]
    assert before[-1] > before[0]  # the same meter did move before the fall
    assert scene.truth["no_use"].details["expected_alert"] == "low_usage"


def test_a_running_tap_keeps_the_register_turning(scene):
    assert scene.minutes_of("running_tap").min() >= 6.0
    a, b = scene.window("running_tap")
    ts, total = scene.totals("running_tap")
    inside = total[(ts >= a + 60) & (ts <= b - 60)]
    assert len(inside) >= 10
    assert np.all(np.diff(inside) >= 6.0 * 15 - 1)


def test_a_slow_leak_never_stops_even_when_nobody_uses_water(scene):
    used = scene.minutes_of("slow_leak")
    assert used.min() >= 0.1 - 1e-6
    assert scene.truth["slow_leak"].end is None
    assert scene.truth["slow_leak"].details["flow_lpm"] == pytest.approx(0.1)


def test_a_silent_meter_sends_nothing_in_its_window_while_water_is_used(scene):
    a, b = scene.window("meter_silent")
    sent = [m.publish_ts for m in scene.by_device[scene.meter("meter_silent")]]
    assert not [t for t in sent if a <= t < b]
    assert [t for t in sent if a - 3600 <= t < a]
    assert [t for t in sent if b <= t < b + 3600]
    assert scene.minutes_of("meter_silent").sum() > 0


def test_a_gateway_outage_says_offline_then_online_and_loses_or_delivers_late(scene):
    pop = scene.world.population
    for gateway, buffered in zip(scene.outage_gateways, (False, True), strict=True):
        outage = next(
            i
            for i in scene.world.truth()
            if i.kind == "gateway_outage" and i.gateway_id == pop.gateway_ids[gateway]
        )
        a, b = outage.start.timestamp(), outage.end.timestamp()
        gateway_id = pop.gateway_ids[gateway]
        statuses = [
            (m.publish_ts, decoded(m).status, m.retain)
            for m in scene.messages
            if m.topic == f"{gateway_id}/status"
        ]
        assert (a, "offline", True) in statuses
        assert (b, "online", True) in statuses
        devices = [
            m
            for m in scene.messages
            if m.topic.startswith(gateway_id + "/") and not m.topic.endswith("status")
        ]
        assert not [m for m in devices if a <= m.publish_ts < b]
        measured_inside = [
            m for m in devices if m.topic.endswith("reading") and a + 60 <= ts_of(body(m)) < b - 60
        ]
        if buffered:
            assert len(measured_inside) > 10
            assert all(b <= m.publish_ts < b + 120 for m in measured_inside)
        else:
            assert measured_inside == []
        assert outage.details["buffered"] is buffered
        assert outage.details["expected_alert"] == "gateway_offline"


def test_a_meter_swap_restarts_the_register_near_zero(scene):
    a, _ = scene.window("meter_swap")
    ts, total = scene.totals("meter_swap")
    after = (ts >= a + 60) & (ts < a + 6 * 3600)
    assert after.sum() > 20
    start_minute = int(a - scene.world.start_s) // 60
    for t, value in zip(ts[after], total[after], strict=True):
        nominal = round(t / 900) * 900  # the clock is off by seconds, never by minutes
        used = scene.minutes[
            scene.who["meter_swap"], start_minute : int(nominal - scene.world.start_s) // 60
        ].sum()
        assert abs(value - (2.0 + used)) <= 1.05
    assert total[after][0] < 60


def test_an_announced_absence_is_an_away_press_then_a_home_press_and_no_use(scene):
    a, b = scene.window("planned_absence")
    button = scene.truth["planned_absence"].device_id
    events = [(ts_of(body(m)), body(m)["type"]) for m in scene.by_device[button]]
    assert events == [(a, "away"), (b, "home")]
    assert scene.minutes_of("planned_absence").sum() == 0.0
    assert scene.truth["planned_absence"].details["expected_alert"] is None


def test_an_unannounced_absence_is_no_use_without_any_button(scene):
    r = scene.who["unannounced_absence"]
    assert scene.minutes_of("unannounced_absence").sum() == 0.0
    mine = {d for d in scene.world.population.devices_of(r).values()}
    ids = {scene.world.population.device_ids[d] for d in mine}
    assert not [m for m in scene.messages if m.topic.split("/")[1] in ids and m.topic.endswith("event")]
    details = scene.truth["unannounced_absence"].details
    assert details["expected_alert"] == "low_usage"
    assert "away button" in details["note"]


@pytest.mark.parametrize(("kind", "field", "level"), [("smoke", "smoke", 12.0), ("gas", "gas_lel_pct", 25.0)])
def test_alarms_send_an_event_on_and_off_and_readings_at_alarm_level(scene, kind, field, level):
    a, b = scene.window(kind)
    device = scene.truth[kind].device_id
    events = [body(m) for m in scene.by_device[device] if m.topic.endswith("event")]
    assert [(ts_of(e), e["type"], e["active"]) for e in events] == [(a, kind, True), (b, kind, False)]
    assert events[0]["value"] == level
    readings = [body(m) for m in scene.by_device[device] if m.topic.endswith("reading")]
    assert {r[field] for r in readings if a <= ts_of(r) < b} == {level}
    assert max(r[field] for r in readings if not a <= ts_of(r) < b) < 1.0


def test_an_sos_press_is_one_event(scene):
    a, _ = scene.window("sos")
    device = scene.truth["sos"].device_id
    assert [(ts_of(body(m)), body(m)["type"]) for m in scene.by_device[device]] == [(a, "sos")]


def test_a_day_out_is_hours_without_use_and_a_cleaning_day_is_heavy_use(scene):
    a, b = scene.window("day_out")
    assert 6 <= (b - a) / 3600 <= 10
    assert scene.minutes_of("day_out").sum() == 0.0
    assert scene.minutes_of("cleaning_day").sum() >= 150.0
    assert scene.truth["day_out"].details["expected_alert"] is None


def test_late_messages_arrive_late_and_duplicates_twice(scene):
    a, b = scene.window("late_messages")
    lags = [
        (ts_of(body(m)), m.publish_ts - ts_of(body(m))) for m in scene.by_device[scene.meter("late_messages")]
    ]
    late = [lag for ts, lag in lags if a + 60 <= ts < b - 60]
    on_time = [lag for ts, lag in lags if not a - 60 <= ts < b + 60]
    assert len(late) >= 15
    assert min(late) >= 1800 - 30
    assert len(on_time) > 100
    assert max(on_time) < 60
    a, b = scene.window("duplicate_messages")
    copies = Counter(m.payload for m in scene.by_device[scene.meter("duplicate_messages")])
    inside = {p for p in copies if a + 60 <= ts_of(orjson.loads(p)) < b - 60}
    assert len(inside) >= 15
    assert all(copies[p] == 2 for p in inside)
    assert all(
        n == 1 for p, n in copies.items() if p not in inside and not a - 60 <= ts_of(orjson.loads(p)) < b + 60
    )
    # the readings view holds each value once
    ts, _ = scene.totals("duplicate_messages")
    assert len(ts) == len(set(ts.tolist()))


def test_the_truth_is_json_lines_with_rfc3339_times(scene):
    for incident in scene.world.truth():
        line = orjson.loads(orjson.dumps(incident.to_json()))
        assert line["kind"] in (*INCIDENT_KINDS, "battery_low")
        assert datetime.fromisoformat(line["start"]).utcoffset() == timedelta(hours=8)
        assert line["end"] is None or datetime.fromisoformat(line["end"]) >= datetime.fromisoformat(
            line["start"]
        )
        assert "expected_alert" in line["details"]


# -- the contract -------------------------------------------------------------------------------


def test_every_message_of_every_mode_and_incident_kind_decodes_with_the_ingest_codecs():
    boosted = {kind: 30.0 for kind in INCIDENT_KINDS}
    boosted["meter_swap"] = 3.0  # a swapped meter gets a new battery: keep some old ones
    scenario = Scenario.load(None).with_overrides(
        {
            "incidents": {"rate": boosted},
            "meters": {"failing_battery_share": 0.3, "mode_share": dict.fromkeys(REPORTING_MODES, 1.0)},
        }
    )
    world = World.build(scenario, residents=100, seed=4, start=MONDAY, days=3)
    assert {i.kind for i in world.truth()} >= set(INCIDENT_KINDS) | {"battery_low"}
    kinds: Counter[str] = Counter()
    for message in world.messages():
        result = decoded(message, now=message.publish_at)  # exactly when it is sent
        assert not result.row_errors, (message, result.row_errors)
        kinds[result.kind + ("/batch" if result.batch else "")] += 1
        if result.kind == "event":
            kinds["event/" + result.events[0].type] += 1
        elif result.kind == "reading" and hasattr(result.readings[0], "total_l"):
            kinds["water"] += 1
    assert kinds["status"]
    assert kinds["reading/batch"]
    assert kinds["water"]
    for event in ("smoke", "gas", "sos", "away", "home", "battery_low"):
        assert kinds["event/" + event], event


def test_the_events_view_is_what_the_event_messages_say():
    boosted = {
        kind: 30.0
        for kind in (
            "smoke",
            "gas",
            "sos",
            "planned_absence",
            "gateway_outage",
            "late_messages",
            "duplicate_messages",
        )
    }
    scenario = Scenario.load(None).with_overrides({"incidents": {"rate": boosted}})
    world = World.build(scenario, residents=80, seed=14, start=MONDAY, days=2)
    sent = []
    for m in world.messages():
        if m.topic.endswith("/event"):
            event = body(m)
            sent.append(
                (
                    m.publish_ts,
                    m.topic.split("/")[1],
                    event["type"],
                    event["active"],
                    int(ts_of(event)),
                    event.get("value"),
                )
            )
    seen = [(e.arrival_s, e.device_id, e.type, e.active, e.ts_s, e.value) for e in world.events()]
    assert len(sent) > 30
    assert sorted(seen) == sorted(sent)


@pytest.mark.parametrize(
    ("mode", "per_day", "rows", "every_s"),
    [
        ("minute", 1440, 1, 60),
        ("quarter_hour", 96, 1, 900),
        ("hourly_batch", 24, 4, 3600),
        ("four_daily", 4, 6, 21600),
        ("daily", 1, 24, 86400),
    ],
)
def test_reporting_modes(mode, per_day, rows, every_s):
    world = World.build(quiet(mode_share={mode: 1.0}), residents=12, seed=6, start=MONDAY, days=3)
    meter = world.meter_ids[0]
    sent = [m for m in world.messages() if m.topic.split("/")[1] == meter]
    day2 = [m for m in sent if MONDAY + timedelta(days=1) <= m.publish_at < MONDAY + timedelta(days=2)]
    assert len(day2) == per_day
    values = [decoded(m).readings for m in day2]
    assert {len(v) for v in values} == {rows}
    stamps = [r.ts.timestamp() for v in values for r in v]
    gaps = np.diff(stamps)
    assert np.all(np.abs(gaps - every_s / rows) <= 2 * 22)  # clock offset and jitter
    assert all(
        m.publish_ts >= max(r.ts.timestamp() for r in v) - 22 for m, v in zip(day2, values, strict=True)
    )
    assert ("flow_lpm" in body(day2[0])) == (mode == "minute")
    registry = {row["device_id"]: row for row in world.registry_rows()}
    assert registry[meter]["report_interval_s"] == str(every_s)
    assert _MODES == REPORTING_MODES


def test_batteries_drain_and_a_failing_one_raises_battery_low():
    world = World.build(quiet(failing_battery_share=1.0), residents=10, seed=9, start=MONDAY, days=30)
    readings = world.water_readings()
    for meter in range(10):
        volts = readings.battery_v[(readings.device_index == meter) & ~np.isnan(readings.battery_v)]
        assert np.all(np.diff(volts) <= 0)
    lows = [i for i in world.truth() if i.kind == "battery_low" and i.device_id.startswith("WM")]
    assert len(lows) == 10
    first = lows[0]
    events = [
        m
        for m in world.messages(first.start, first.start + timedelta(minutes=5))
        if m.topic.endswith(f"{first.device_id}/event")
    ]
    assert [body(m)["type"] for m in events] == ["battery_low"]


def test_the_registry_imports_as_a_full_form_file():
    world = World.build(Scenario.load(None), residents=300, seed=10, start=MONDAY, days=1)
    rows = world.registry_rows()
    header = list(rows[0])
    text = ",".join(header) + "\n" + "\n".join(",".join(row[c] for c in header) for row in rows) + "\n"
    registry = parse_registry(text, name="sim.csv", default_country_code="86")
    assert len(registry.devices) == len(world.population.device_ids)
    assert len(registry.residents) == 300
    kinds = Counter(row["kind"] for row in rows)
    assert kinds["water_meter"] == 300
    assert 0.75 < kinds["smoke"] / 300 < 0.95
    assert 0.35 < kinds["gas"] / 300 < 0.65
    roles = Counter(row[f"contact{n}_role"] for row in rows for n in range(1, 7))
    assert roles["grid_worker"] == 300
    assert 300 <= roles["community_staff"] <= 600
    assert 300 <= roles["love_key_holder"] <= 600
    assert 0 < roles["family"] < 300
    phones = [row[f"contact{n}_phone"] for row in rows for n in range(1, 7) if row[f"contact{n}_phone"]]
    assert all(p.startswith("+861") and len(p) == 14 and p[1:].isdigit() for p in phones)
    communities = {row["community_id"] for row in rows}
    grids = {row["grid_id"] for row in rows}
    assert 1 <= len(communities) < len(grids) < len({row["building_id"] for row in rows})
    assert len({row["address"] for row in rows if row["kind"] == "water_meter"}) == 300


# -- scenarios -----------------------------------------------------------------------------------


def test_a_scenario_file_overrides_the_defaults_and_a_bad_one_names_itself(tmp_path: Path):
    good = tmp_path / "good.toml"
    good.write_text("[meters]\nmode_share = { daily = 1.0 }\n[incidents.rate]\nsos = 2.0\n")
    scenario = Scenario.load(good)
    assert scenario.meters.mode_share == {"daily": 1.0}
    assert scenario.incidents.rate["sos"] == 2.0
    assert scenario.incidents.rate["no_use"] == Scenario.load(None).incidents.rate["no_use"]

    bad = tmp_path / "bad.toml"
    bad.write_text("[routine]\nshower_lpm = -3\n")
    with pytest.raises(ScenarioError, match=r"bad\.toml"):
        Scenario.load(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("[meters]\nmode_shares = { daily = 1.0 }\n")
    with pytest.raises(ScenarioError, match="mode_shares"):
        Scenario.load(typo)
    with pytest.raises(ScenarioError, match="not found"):
        Scenario.load(tmp_path / "missing.toml")


def test_a_fixed_incident_for_someone_who_is_not_there_is_an_error(tmp_path: Path):
    path = tmp_path / "fixed.toml"
    path.write_text('[[incidents.fixed]]\nkind = "sos"\nresident = "R-999999"\nstart_h = 1\n')
    with pytest.raises(ScenarioError, match="R-999999"):
        World.build(Scenario.load(path), residents=10, seed=1, start=MONDAY, days=1)
