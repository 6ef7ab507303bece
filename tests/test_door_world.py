"""Door reminders in the simulated MQTT world (issue 14): `lovekey simulate --door-share`
registers a door reminder (`kind=door_sensor`) for the households `lovekey evaluate` gives one
to, and publishes what it senses (`passage`, `left`, `returned`, `tamper`, `battery_low`)
through LoveKey's own MQTT contract. On the real Mosquitto, the real ingester and PostgreSQL,
every door event sent is stored, nothing is refused, and the detectors' runner reads the
newest passage of each resident as the resident up and about."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from lovekey.bench.support.publisher import Publisher, running_ingester, wait_for
from lovekey.cli import main
from lovekey.config import Settings
from lovekey.detectors.ring import NEVER
from lovekey.detectors.service import DetectorService
from lovekey.ingest.codecs import decode_message
from lovekey.simulator import INCIDENT_KINDS, Scenario, World
from lovekey.simulator.checkin import spans_from_truth
from lovekey.simulator.district import EV_LEFT, EVENT_TYPES
from lovekey.simulator.door import DoorModel, door_events
from lovekey.simulator.incidents import LOCAL
from lovekey.simulator.population import DOOR_SENSOR
from lovekey.storage import connect
from lovekey.vocabulary import DOOR_EVENTS, DeviceKind

pytestmark = pytest.mark.slow

RESIDENTS, SEED, DAYS, SHARE = 40, 5, 1.0, 0.5


def rows(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with connect(url) as conn:
        return conn.execute(statement, params or None).fetchall()  # type: ignore[arg-type]


def _quiet_with_a_day_out(tmp_path: Path, start: datetime) -> tuple[Path, int]:
    """Quiet rates, and a morning out for a resident whose door reminder tells the direction
    and senses leaving (found by trying the door households in order: the draw is fixed)."""
    quiet = "[incidents.rate]\n" + "".join(f"{k} = 0.0\n" for k in INCIDENT_KINDS)
    for resident in range(RESIDENTS):
        text = (
            quiet
            + f'\n[[incidents.fixed]]\nkind = "day_out"\nresident = {resident}\nstart_h = 6\nduration_h = 4\n'
        )
        path = tmp_path / "door.toml"
        path.write_text(text)
        world = World.build(
            Scenario.load(path), residents=RESIDENTS, seed=SEED, start=start, days=DAYS, door_share=SHARE
        )
        door = world.population.devices_of(resident).get(DOOR_SENSOR)
        if door is not None and any(kind == EV_LEFT for _, kind in world.door_triggers.get(door, [])):
            return path, resident
    raise AssertionError("no door household senses its resident leave")


def test_a_world_with_door_reminders_agrees_with_the_evaluation_and_the_contract() -> None:
    start = datetime(2025, 3, 1, tzinfo=LOCAL)
    world = World.build(Scenario.load(None), residents=300, seed=SEED, start=start, days=7, door_share=SHARE)
    without = World.build(Scenario.load(None), residents=300, seed=SEED, start=start, days=7)
    # the same households have a reminder, and it triggers at the same times, as in `evaluate`
    registry = world.registry_rows()
    doors = {r["resident_id"] for r in registry if r["kind"] == DeviceKind.DOOR_SENSOR}
    model = DoorModel(seed=SEED, share=SHARE)
    residents = without.population.resident_ids
    assert doors == {r for r in residents if model.has_reminder(r)}
    assert 0.4 * 300 < len(doors) < 0.6 * 300
    truth = [(t.kind, t.resident_id, int(t.start.timestamp()), t.end) for t in without.truth()]
    lines = [(k, r, a, None if b is None else int(b.timestamp())) for k, r, a, b in truth]
    expected = door_events(
        model, residents, spans_from_truth(lines, without.end_s), without.start_s, without.end_s
    )
    sent = [
        (world.population.resident_ids[int(world.population.device_resident[d])], t)
        for d, triggers in world.door_triggers.items()
        for t, kind in triggers
        if EVENT_TYPES[kind] in DOOR_EVENTS
    ]
    assert sorted(sent) == sorted(expected)
    assert len(expected) > 100
    # every door message is one LoveKey's own contract accepts for a door_sensor
    kinds = {r["device_id"]: r["kind"] for r in registry}
    seen = set()
    for message in world.messages():
        device = message.topic.split("/")[1]
        if kinds.get(device) != DeviceKind.DOOR_SENSOR:
            continue
        at = datetime.fromtimestamp(message.publish_ts + 1, UTC)
        decoded = decode_message("lovekey", "lovekey/" + message.topic, message.payload, now=at)
        assert [str(e.type) for e in decoded.events] == [orjson.loads(message.payload)["type"]]
        seen.add(orjson.loads(message.payload)["type"])
    assert {"passage", "left", "returned"} <= seen


def test_door_passages_published_by_the_simulator_are_stored_and_read_as_activity(
    postgres_factory: Any,
    mqtt_url: str,
    topic_prefix: str,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    db = postgres_factory.create("door")
    start = (datetime.now(LOCAL) - timedelta(days=DAYS)).replace(second=0, microsecond=0)
    path, outgoer = _quiet_with_a_day_out(tmp_path, start)
    world = World.build(
        Scenario.load(path), residents=RESIDENTS, seed=SEED, start=start, days=DAYS, door_share=SHARE
    )
    sent = list(world.messages())
    settings = make_settings(
        database_url=db,
        mqtt_url=mqtt_url,
        mqtt={
            "topic_prefix": topic_prefix,
            "client_id": "lkt-" + topic_prefix[-12:],
            "session_expiry_s": 120,
        },
        ingest={"batch_ms": 50, "registry_miss_retry_s": 0, "summary_interval_s": 3600},
    )
    for name in list(os.environ):
        if name.startswith("LOVEKEY_") and not name.startswith("LOVEKEY_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LOVEKEY_DATABASE_URL", db)
    monkeypatch.setenv("LOVEKEY_MQTT_URL", mqtt_url)
    monkeypatch.setenv("LOVEKEY_MQTT__TOPIC_PREFIX", topic_prefix)
    monkeypatch.setenv("LOVEKEY_DATA_DIR", str(tmp_path / "data"))
    common = [
        *("--residents", str(RESIDENTS), "--seed", str(SEED), "--days", str(DAYS)),
        *("--start", start.isoformat(), "--scenario", str(path), "--door-share", str(SHARE)),
    ]
    registry = tmp_path / "registry.csv"
    assert main(["simulate", *common, "--no-publish", "--registry-out", str(registry)]) == 0
    assert main(["devices", "import", str(registry)]) == 0
    door_ids = {d for (d,) in rows(db, "SELECT id FROM device WHERE kind = 'door_sensor'")}
    assert door_ids
    assert door_ids == {world.population.device_ids[d] for d in world.door_triggers}, (
        "the registry rows carry every door reminder"
    )
    try:
        with running_ingester(settings) as ingester:
            assert main(["simulate", *common]) == 0
            wait_for(lambda: ingester.metrics.acked >= len(sent), timeout_s=60)
    finally:
        with Publisher(mqtt_url) as cleanup:
            for gateway in world.population.gateway_ids:
                cleanup.publish(f"{topic_prefix}/{gateway}/status", b"", retain=True)

    assert rows(db, "SELECT reason, count(*) FROM rejected_input GROUP BY 1") == []
    expected = sorted((e.device_id, str(e.type), e.ts_s) for e in world.events() if e.device_id in door_ids)
    stored = rows(
        db,
        "SELECT d.id, e.type, extract(epoch FROM e.ts)::bigint FROM device_event e"
        " JOIN device d ON d.key = e.device_key WHERE d.kind = 'door_sensor' ORDER BY 1, 3, 2",
    )
    assert sorted(stored) == expected
    types = {t for _, t, _ in stored}
    assert {"passage", "left", "returned"} <= types
    outgoer_id = world.population.resident_ids[outgoer]
    assert rows(
        db,
        "SELECT e.type FROM device_event e JOIN device d ON d.key = e.device_key"
        " WHERE d.resident_id = %s AND e.type = 'left'",
        outgoer_id,
    ) == [("left",)]

    # the detectors' runner reads each resident's newest passage as the resident up and about
    now = world.end
    with connect(db) as conn:
        service = DetectorService(settings)
        service.start(conn, now)
        presence = service._presence(conn, now)
        service.sweep(conn, now)  # a sweep with the door events in: nothing fails
        conn.commit()
    assert presence.active_at_s is not None
    ids = list(service._det.registry.resident_ids)
    window_s = int((now - timedelta(hours=settings.detect.ring_hours)).timestamp())
    pop = world.population
    resident_of = {
        pop.device_ids[d]: pop.resident_ids[int(pop.device_resident[d])] for d in world.door_triggers
    }
    newest: dict[str, int] = {}
    for device, kind, ts in stored:
        if kind in {str(t) for t in DOOR_EVENTS} and ts > window_s:
            newest[resident_of[device]] = max(newest.get(resident_of[device], 0), ts)
    assert newest
    assert {r: int(presence.active_at_s[ids.index(r)]) for r in newest} == newest
    others = [i for i, r in enumerate(ids) if r not in newest]
    assert all(int(presence.active_at_s[i]) == NEVER for i in others)
    # door events never raise an alert
    assert rows(db, "SELECT count(*) FROM alert") == [(0,)]
