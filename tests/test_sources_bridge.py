"""`lovekey bridge` against the real Mosquitto: a source on "its own" broker (here the same
Mosquitto under another topic) reaches the ingester through the bridge and is stored."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lovekey.bench.support.publisher import Publisher, running_ingester, wait_for
from lovekey.config import Settings
from lovekey.ingest.bridge import run_bridges
from lovekey.storage import connect
from tests.fix_sources import Z2M_ONLINE_LEGACY, Z2M_SMOKE_ALARM, Z2M_SMOKE_QUIET, dumps
from tests.test_sources_mqtt import register


@pytest.fixture
def db(postgres_factory: Any) -> str:
    return postgres_factory.create("bridge")


def bridging(settings: Settings, url: str) -> Iterator[None]:
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(run_bridges(settings, url, stop))
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, name="test-bridge")
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        loop.close()
    assert not thread.is_alive()
    if failures:
        raise failures[0]


def test_a_zigbee2mqtt_on_its_own_broker_is_stored_through_the_bridge(
    db: str, make_settings: Callable[..., Settings], mqtt_url: str, topic_prefix: str
) -> None:
    register(db, "z2m", [("SM-Z-1", "smoke", "kitchen smoke")])
    remote = f"{topic_prefix}/remote/zigbee2mqtt"
    settings = make_settings(
        database_url=db,
        mqtt_url=mqtt_url,
        mqtt={"topic_prefix": topic_prefix, "client_id": "lkt-" + topic_prefix.rsplit("/", 1)[-1]},
        ingest={"batch_ms": 50, "registry_miss_retry_s": 0},
        sources=[{"name": "z2m", "kind": "zigbee2mqtt", "topic": f"{remote}/#", "broker_url": mqtt_url}],
    )
    with (
        running_ingester(settings) as ingester,
        Publisher(mqtt_url) as source,
        contextlib_bridging(settings, mqtt_url),
    ):
        # the bridge's subscription at the source is in place once a message goes through
        def through() -> bool:
            source.publish(f"{remote}/bridge/state", Z2M_ONLINE_LEGACY)
            return ingester.metrics.acked >= 1

        wait_for(through, timeout_s=20, interval_s=0.5)
        for body in (Z2M_SMOKE_QUIET, Z2M_SMOKE_ALARM, Z2M_SMOKE_ALARM):
            source.publish(f"{remote}/kitchen smoke", dumps(body))
        wait_for(lambda: _events(db) == [("smoke", True)], timeout_s=20)
    with connect(db) as conn:
        assert conn.execute("SELECT online FROM gateway WHERE id = 'z2m'").fetchone() == (True,)
        topics = conn.execute("SELECT DISTINCT topic FROM rejected_input").fetchall()
    assert topics == []


def contextlib_bridging(settings: Settings, url: str) -> Any:
    from contextlib import contextmanager

    return contextmanager(bridging)(settings, url)


def _events(db: str) -> list[tuple[str, bool]]:
    with connect(db) as conn:
        return [(t, a) for t, a in conn.execute("SELECT type, active FROM device_event ORDER BY ts")]


def test_the_things_stack_over_mqtt_3_1_1_at_qos_0_is_stored_through_the_bridge(
    postgres_factory: Any, make_settings: Callable[..., Settings], mqtt_url: str, topic_prefix: str
) -> None:
    """The Things Stack's MQTT server speaks 3.1.1 and serves QoS 0 only: the bridge's other path."""
    from tests.fix_sources import CHIRPSTACK_OPTIONS, TTS_TOPIC, TTS_UP

    # the documented uplink is from 2020: keep it inside retention, in a few partitions
    db = postgres_factory.create("bridge", retention_days=4500, partition_days=366)
    register(db, "ttn", [("WM-TTS-1", "water_meter", "0004A30B001C0530")])
    remote = f"{topic_prefix}/remote"
    settings = make_settings(
        database_url=db,
        mqtt_url=mqtt_url,
        mqtt={"topic_prefix": topic_prefix, "client_id": "lkt-" + topic_prefix.rsplit("/", 1)[-1]},
        ingest={"batch_ms": 50, "registry_miss_retry_s": 0},
        storage={"retention_days": 4500, "partition_days": 366},
        sources=[
            {
                "name": "ttn",
                "kind": "tts",
                "topic": f"{remote}/v3/+/devices/+/up",
                "broker_url": mqtt_url + "?protocol=3.1.1",
                "qos": 0,
                "options": CHIRPSTACK_OPTIONS,
            }
        ],
    )
    with (
        running_ingester(settings) as ingester,
        Publisher(mqtt_url, qos=0) as source,
        contextlib_bridging(settings, mqtt_url),
    ):

        def stored() -> bool:
            source.publish(f"{remote}/{TTS_TOPIC}", dumps(TTS_UP))  # QoS 0: send until one arrives
            return ingester.metrics.stored["water_reading"] >= 1

        wait_for(stored, timeout_s=20, interval_s=0.5)
    with connect(db) as conn:
        rows = conn.execute("SELECT count(*) FROM water_reading").fetchone()
        rejected = conn.execute("SELECT count(*) FROM rejected_input").fetchone()
    assert rows == (1,)  # however many copies got through, one reading
    assert rejected == (0,)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_lovekey_bridge_stops_cleanly(signum: int, mqtt_url: str, topic_prefix: str, tmp_path: Any) -> None:
    """Like every long-running command (tests/test_stops.py): exit 0 within 5 s, no traceback."""
    sources = [{"name": "z2m", "kind": "zigbee2mqtt", "topic": f"{topic_prefix}/z/#", "broker_url": mqtt_url}]
    env = {
        **os.environ,
        "LOVEKEY_MQTT_URL": mqtt_url,
        "LOVEKEY_MQTT__TOPIC_PREFIX": topic_prefix,
        "LOVEKEY_MQTT__CLIENT_ID": "lkt-" + topic_prefix.rsplit("/", 1)[-1],
        "LOVEKEY_SOURCES": json.dumps(sources),
        "LOVEKEY_DATA_DIR": str(tmp_path),
    }
    with subprocess.Popen(
        [sys.executable, "-m", "lovekey", "bridge"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "bridge z2m:" in line:
                break
        else:
            pytest.fail("the bridge never said it was up:\n" + "".join(lines))
        started = time.monotonic()
        proc.send_signal(signum)
        rest, _ = proc.communicate(timeout=10)
        elapsed = time.monotonic() - started
    assert proc.returncode == 0, "".join(lines) + rest
    assert elapsed < 5.0
    assert "Traceback" not in rest


def test_lovekey_run_hosts_the_bridge_for_a_source_with_a_broker_of_its_own(
    db: str, make_settings: Callable[..., Settings], mqtt_url: str, topic_prefix: str
) -> None:
    """`lovekey run` (here its pipeline with ingest and bridge) needs no separate `lovekey
    bridge`: a message on the source's own broker is stored."""
    from lovekey.run import run_pipeline

    register(db, "z2m", [("SM-Z-2", "smoke", "hall smoke")])
    remote = f"{topic_prefix}/remote/zigbee2mqtt"
    settings = make_settings(
        database_url=db,
        mqtt_url=mqtt_url,
        mqtt={"topic_prefix": topic_prefix, "client_id": "lkt-" + topic_prefix.rsplit("/", 1)[-1]},
        ingest={"batch_ms": 50, "registry_miss_retry_s": 0},
        sources=[{"name": "z2m", "kind": "zigbee2mqtt", "topic": f"{remote}/#", "broker_url": mqtt_url}],
    )
    stop = threading.Event()
    failures: list[BaseException] = []

    def pipeline() -> None:
        try:
            asyncio.run(run_pipeline(settings, db, mqtt_url, stop=stop, parts=("ingest", "bridge")))
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=pipeline, name="test-run-bridge")
    thread.start()
    try:
        with Publisher(mqtt_url) as source:

            def stored() -> bool:  # the bridge subscribes at the source some time after start
                source.publish(f"{remote}/hall smoke", dumps(Z2M_SMOKE_ALARM))
                return _events(db) != []

            wait_for(stored, timeout_s=30, interval_s=0.5)
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()
    assert not failures, failures
    assert _events(db) == [("smoke", True)]  # however many copies got through, one event
