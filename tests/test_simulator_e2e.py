"""`lovekey simulate` end to end: registry import, the real Mosquitto, the ingester, PostgreSQL.

The registry the simulator writes is imported with `lovekey devices import`; the ingester
runs in a thread of the test; `lovekey simulate` publishes a backfilled day. What lands in
the database must be exactly what the simulator's own views say was sent.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from config import Settings
from ingest.ingester import Ingester
from ingest.testing import Publisher, wait_for
from lovekey.cli import main
from simulator import INCIDENT_KINDS, Scenario, World
from simulator.incidents import LOCAL
from simulator.population import AWAY_BUTTON
from storage import connect

pytestmark = pytest.mark.slow

RESIDENTS, SEED, DAYS = 40, 21, 1.0


@contextmanager
def ingesting(settings: Settings) -> Iterator[Ingester]:
    stop = threading.Event()
    failures: list[BaseException] = []
    assert settings.database_url is not None
    assert settings.mqtt_url is not None
    with Ingester(settings, settings.database_url, settings.mqtt_url) as ingester:

        def writer() -> None:
            try:
                ingester.run(stop)
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=writer, name="test-sim-ingest")
        thread.start()
        try:
            assert ingester.subscribed.wait(10), "the ingester never subscribed"
            yield ingester
        finally:
            stop.set()
            thread.join(30)
    if failures:
        raise failures[0]


def rows(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with connect(url) as conn:
        return conn.execute(statement, params or None).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def scenario_file(tmp_path: Path) -> tuple[Path, Scenario]:
    """Quiet defaults plus an absence that is still going on and a buffered gateway outage."""
    probe = World.build(Scenario.load(None), residents=RESIDENTS, seed=SEED,
                        start=datetime(2024, 1, 1, tzinfo=LOCAL), days=1)
    away = next(r for r in range(RESIDENTS) if AWAY_BUTTON in probe.population.devices_of(r))
    text = "[incidents.rate]\n" + "".join(f"{k} = 0.0\n" for k in INCIDENT_KINDS) + f"""
[[incidents.fixed]]
kind = "planned_absence"
resident = {away}
start_h = 3
open = true

[[incidents.fixed]]
kind = "gateway_outage"
gateway = 0
start_h = 5
duration_h = 2
buffered = true

[[incidents.fixed]]
kind = "duplicate_messages"
resident = 1
start_h = 1
duration_h = 4
"""
    path = tmp_path / "e2e.toml"
    path.write_text(text)
    return path, Scenario.load(path)


def test_a_simulated_day_lands_in_the_database_exactly_as_sent(
    postgres_factory: Any,
    mqtt_url: str,
    topic_prefix: str,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    scenario_file: tuple[Path, Scenario],
):
    path, scenario = scenario_file
    db = postgres_factory.create("sim")
    start = (datetime.now(LOCAL) - timedelta(days=DAYS)).replace(second=0, microsecond=0)
    world = World.build(scenario, residents=RESIDENTS, seed=SEED, start=start, days=DAYS)
    sent = list(world.messages())
    settings = make_settings(
        database_url=db, mqtt_url=mqtt_url,
        mqtt={"topic_prefix": topic_prefix, "client_id": "lkt-" + topic_prefix[-12:],
              "session_expiry_s": 120},
        ingest={"batch_ms": 50, "registry_miss_retry_s": 0, "summary_interval_s": 3600},
    )
    for name in list(os.environ):
        if name.startswith("LOVEKEY_") and not name.startswith("LOVEKEY_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LOVEKEY_DATABASE_URL", db)
    monkeypatch.setenv("LOVEKEY_MQTT_URL", mqtt_url)
    monkeypatch.setenv("LOVEKEY_MQTT__TOPIC_PREFIX", topic_prefix)
    monkeypatch.setenv("LOVEKEY_DATA_DIR", str(tmp_path / "data"))
    common = ["--residents", str(RESIDENTS), "--seed", str(SEED), "--days", str(DAYS),
              "--start", start.isoformat(), "--scenario", str(path)]
    registry, truth = tmp_path / "registry.csv", tmp_path / "truth.jsonl"

    assert main(["simulate", *common, "--no-publish", "--registry-out", str(registry),
                 "--truth-out", str(truth)]) == 0
    assert main(["devices", "import", str(registry)]) == 0
    incidents = [json.loads(line) for line in truth.read_text().splitlines()]
    assert {i["kind"] for i in incidents} == {"planned_absence", "gateway_outage",
                                              "duplicate_messages"}

    try:
        with ingesting(settings) as ingester:
            assert main(["simulate", *common]) == 0
            wait_for(lambda: ingester.metrics.acked >= len(sent), timeout_s=60)
    finally:
        with Publisher(mqtt_url) as cleanup:  # leave no retained status on the shared broker
            for gateway in world.population.gateway_ids:
                cleanup.publish(f"{topic_prefix}/{gateway}/status", b"", retain=True)

    assert rows(db, "SELECT reason, count(*) FROM rejected_input GROUP BY 1") == []
    expected = world.water_readings()
    stored = rows(db, "SELECT d.id, extract(epoch FROM w.ts)::bigint, w.total_l FROM water_reading w"
                      " JOIN device d ON d.key = w.device_key")
    assert len(stored) == len(expected) > RESIDENTS * 20
    assert sorted(stored) == sorted(zip([expected.device_ids[i] for i in expected.device_index],
                                        expected.ts.tolist(), expected.total_l.tolist(),
                                        strict=True))
    events = {(m.topic.split("/")[1], orjson.loads(m.payload)["type"],
               int(datetime.fromisoformat(orjson.loads(m.payload)["ts"]).timestamp())
               if isinstance(orjson.loads(m.payload)["ts"], str) else orjson.loads(m.payload)["ts"])
              for m in sent if m.topic.endswith("/event")}
    assert events
    stored_events = rows(db, "SELECT d.id, e.type, extract(epoch FROM e.ts)::bigint"
                             " FROM device_event e JOIN device d ON d.key = e.device_key")
    assert sorted(stored_events) == sorted(events)
    sensor_values = {(m.topic, m.payload) for m in sent
                     if m.topic.endswith("/reading") and b"total_" not in m.payload}
    assert rows(db, "SELECT count(*) FROM sensor_reading") == [(len(sensor_values),)]

    away = next(i for i in incidents if i["kind"] == "planned_absence")
    assert rows(db, "SELECT status FROM resident WHERE id = %s", away["resident_id"]) == [("away",)]
    assert rows(db, "SELECT count(*) FROM resident WHERE status = 'away'") == [(1,)]
    outage = next(i for i in incidents if i["kind"] == "gateway_outage")
    assert rows(db, "SELECT online FROM gateway WHERE id = %s", outage["gateway_id"]) == [(True,)]
    assert rows(db, "SELECT count(*) FROM gateway WHERE online") == [(world.population.gateway_count,)]
