"""`lovekey simulate` end to end: registry import, the real Mosquitto, the ingester, PostgreSQL.

The registry the simulator writes is imported with `lovekey devices import`; the ingester
runs in a thread of the test; `lovekey simulate` publishes a backfilled day. What lands in
the database must be exactly what the simulator's own views say was sent.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from lovekey.bench.support.publisher import Publisher, running_ingester, wait_for
from lovekey.cli import main
from lovekey.config import Settings
from lovekey.simulator import INCIDENT_KINDS, Scenario, World
from lovekey.simulator.incidents import LOCAL
from lovekey.simulator.population import AWAY_BUTTON
from lovekey.storage import connect

pytestmark = pytest.mark.slow

RESIDENTS, SEED, DAYS = 40, 21, 1.0


def rows(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with connect(url) as conn:
        return conn.execute(statement, params or None).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def scenario_file(tmp_path: Path) -> tuple[Path, Scenario]:
    """Quiet defaults plus an absence that is still going on and a buffered gateway outage."""
    probe = World.build(
        Scenario.load(None), residents=RESIDENTS, seed=SEED, start=datetime(2024, 1, 1, tzinfo=LOCAL), days=1
    )
    away = next(r for r in range(RESIDENTS) if AWAY_BUTTON in probe.population.devices_of(r))
    text = (
        "[incidents.rate]\n"
        + "".join(f"{k} = 0.0\n" for k in INCIDENT_KINDS)
        + f"""
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
    )
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
    # `lovekey simulate` gives door reminders to half the households by default
    world = World.build(scenario, residents=RESIDENTS, seed=SEED, start=start, days=DAYS, door_share=0.5)
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
        "--residents",
        str(RESIDENTS),
        "--seed",
        str(SEED),
        "--days",
        str(DAYS),
        "--start",
        start.isoformat(),
        "--scenario",
        str(path),
        "--door-share",
        "0.5",
    ]
    registry, truth = tmp_path / "registry.csv", tmp_path / "truth.jsonl"

    assert (
        main(
            ["simulate", *common, "--no-publish", "--registry-out", str(registry), "--truth-out", str(truth)]
        )
        == 0
    )
    assert main(["devices", "import", str(registry)]) == 0
    incidents = [json.loads(line) for line in truth.read_text().splitlines()]
    assert {i["kind"] for i in incidents} == {"planned_absence", "gateway_outage", "duplicate_messages"}

    try:
        with running_ingester(settings) as ingester:
            assert main(["simulate", *common]) == 0
            wait_for(lambda: ingester.metrics.acked >= len(sent), timeout_s=60)
    finally:
        with Publisher(mqtt_url) as cleanup:  # leave no retained status on the shared broker
            for gateway in world.population.gateway_ids:
                cleanup.publish(f"{topic_prefix}/{gateway}/status", b"", retain=True)

    assert rows(db, "SELECT reason, count(*) FROM rejected_input GROUP BY 1") == []
    expected = world.water_readings()
    stored = rows(
        db,
        "SELECT d.id, extract(epoch FROM w.ts)::bigint, w.total_l FROM water_reading_wide w"
        " JOIN device d ON d.key = w.device_key",
    )
    assert len(stored) == len(expected) > RESIDENTS * 20
    assert sorted(stored) == sorted(
        zip(
            [expected.device_ids[i] for i in expected.device_index],
            expected.ts.tolist(),
            expected.total_l.tolist(),
            strict=True,
        )
    )
    events = {
        (
            m.topic.split("/")[1],
            orjson.loads(m.payload)["type"],
            int(datetime.fromisoformat(orjson.loads(m.payload)["ts"]).timestamp())
            if isinstance(orjson.loads(m.payload)["ts"], str)
            else orjson.loads(m.payload)["ts"],
        )
        for m in sent
        if m.topic.endswith("/event")
    }
    assert events
    stored_events = rows(
        db,
        "SELECT d.id, e.type, extract(epoch FROM e.ts)::bigint"
        " FROM device_event e JOIN device d ON d.key = e.device_key",
    )
    assert sorted(stored_events) == sorted(events)
    sensor_values = {
        (m.topic, m.payload) for m in sent if m.topic.endswith("/reading") and b"total_" not in m.payload
    }
    assert rows(db, "SELECT count(*) FROM sensor_reading") == [(len(sensor_values),)]

    away = next(i for i in incidents if i["kind"] == "planned_absence")
    assert rows(db, "SELECT status FROM resident WHERE id = %s", away["resident_id"]) == [("away",)]
    assert rows(db, "SELECT count(*) FROM resident WHERE status = 'away'") == [(1,)]
    outage = next(i for i in incidents if i["kind"] == "gateway_outage")
    assert rows(db, "SELECT online FROM gateway WHERE id = %s", outage["gateway_id"]) == [(True,)]
    assert rows(db, "SELECT count(*) FROM gateway WHERE online") == [(world.population.gateway_count,)]


class Subscriber:
    """Everything published under a prefix, in arrival order (QoS 1).

    It announces a Receive Maximum of 65,535: without one, Mosquitto keeps 20 messages in
    flight and 1,000 queued for a subscriber and drops the rest when it falls behind.
    """

    def __init__(self, mqtt_url: str, prefix: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from lovekey.ingest.mqtt import BrokerAddress, connect_properties

        address = BrokerAddress.parse(mqtt_url)
        self.received: list[tuple[str, bytes]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(prefix + "/#", qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, m.payload))
        self.client.connect(
            address.host,
            address.port,
            properties=connect_properties(session_expiry_s=0, receive_maximum=65_535),
        )
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("processes", [1, 2])
def test_every_message_arrives_once_and_each_gateway_in_order(
    mqtt_url: str, topic_prefix: str, processes: int
):
    from lovekey.simulator.publish import Pacing
    from lovekey.simulator.publish_world import Job, publish_world

    start = (datetime.now(LOCAL) - timedelta(hours=6)).replace(second=0, microsecond=0)
    job = Job(
        scenario=Scenario.load(None),
        residents=60,
        seed=3,
        start=start,
        days=0.25,
        mqtt_url=mqtt_url,
        topic_prefix=topic_prefix,
        max_inflight=50,
        lanes=3,
        pacing=Pacing(),
    )
    world = job.world()
    sent = [(f"{topic_prefix}/{m.topic}", m.payload) for m in world.messages()]
    subscriber = Subscriber(mqtt_url, topic_prefix)
    try:
        result = publish_world(job, processes=processes)
        wait_for(lambda: len(subscriber.received) >= len(sent), timeout_s=30)
    finally:
        subscriber.close()
        with Publisher(mqtt_url) as cleanup:
            for gateway in world.population.gateway_ids:
                cleanup.publish(f"{topic_prefix}/{gateway}/status", b"", retain=True)
    assert result.published == result.acked == len(sent)
    assert sorted(subscriber.received) == sorted(sent)

    def by_gateway(messages: list[tuple[str, bytes]]) -> dict[str, list[tuple[str, bytes]]]:
        out: dict[str, list[tuple[str, bytes]]] = {}
        for topic, payload in messages:
            out.setdefault(topic.split("/")[-3 if topic.endswith(("reading", "event")) else -2], []).append(
                (topic, payload)
            )
        return out

    assert by_gateway(subscriber.received) == by_gateway(sent)


def test_pacing_holds_the_rate_and_the_speed(mqtt_url: str, topic_prefix: str):
    import time

    from lovekey.simulator.publish import Pacing
    from lovekey.simulator.publish_world import Job, publish_world

    start = (datetime.now(LOCAL) - timedelta(hours=3)).replace(second=0, microsecond=0)
    base = Job(
        scenario=Scenario.load(None),
        residents=40,
        seed=4,
        start=start,
        days=0.05,
        mqtt_url=mqtt_url,
        topic_prefix=topic_prefix,
        max_inflight=100,
        pacing=Pacing(),
    )
    world = base.world()
    count = sum(1 for _ in world.messages())
    assert count > 200
    try:
        began = time.monotonic()
        capped = publish_world(replace(base, pacing=Pacing(max_rate=count / 1.0)))
        assert time.monotonic() - began >= 0.9  # cannot be faster than the cap allows
        span_s = world.end_s - world.start_s
        began = time.monotonic()
        paced = publish_world(
            replace(
                base, pacing=Pacing(speed=span_s / 1.0, sim_origin=world.start_s, wall_origin=time.time())
            )
        )
        assert time.monotonic() - began >= 0.8  # the last messages are due about 1 s in
    finally:
        with Publisher(mqtt_url) as cleanup:
            for gateway in world.population.gateway_ids:
                cleanup.publish(f"{topic_prefix}/{gateway}/status", b"", retain=True)
    assert capped.published == paced.published == count


def test_without_a_broker_the_command_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    for name in list(os.environ):
        if name.startswith("LOVEKEY_") and not name.startswith("LOVEKEY_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LOVEKEY_DATA_DIR", str(tmp_path))
    assert main(["simulate", "--residents", "5", "--days", "0.1"]) == 1
    assert "LOVEKEY_MQTT_URL" in capsys.readouterr().err
