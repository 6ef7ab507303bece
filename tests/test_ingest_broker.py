"""The broker of the embedded default: mosquitto started for us, or amqtt in-process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from lovekey.bench.support.publisher import Publisher, wait_for
from lovekey.bench.support.seeding import register_devices
from lovekey.config import Settings
from lovekey.ingest.broker import broker_url, find_mosquitto, free_port, start_amqtt
from lovekey.ingest.inbox import Inbox
from lovekey.ingest.ingester import Ingester
from lovekey.ingest.metrics import IngestMetrics
from lovekey.ingest.mqtt import BrokerAddress
from lovekey.ingest.session import PAHO_LOGGER, MqttSession
from lovekey.storage import connect

NOW = datetime.now(UTC).replace(microsecond=0)


@contextmanager
def running(settings: Settings, db: str, url: str) -> Iterator[Ingester]:
    stop = threading.Event()
    with Ingester(settings, db, url) as ingester:
        thread = threading.Thread(target=ingester.run, args=(stop,), name="test-ingest-writer")
        thread.start()
        try:
            assert ingester.subscribed.wait(10)
            yield ingester
        finally:
            stop.set()
            thread.join(30)


def readings(db: str) -> int:
    with connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM water_reading").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def db(postgres_factory) -> str:
    url = postgres_factory.create("broker")
    with connect(url) as conn:
        register_devices(conn, [("WM-1", "GW-1", "water_meter", "R-1")])
    return url


def test_a_configured_broker_is_used_as_it_is(make_settings, mqtt_url):
    with broker_url(make_settings(mqtt_url=mqtt_url)) as url:
        assert url == mqtt_url


@pytest.mark.skipif(find_mosquitto() is None, reason="no mosquitto binary on this machine")
def test_embedded_mosquitto_keeps_a_long_backlog_for_a_stopped_ingester(db, make_settings):
    settings = make_settings(database_url=db, ingest={"batch_ms": 50})
    assert settings.mqtt_url is None
    with broker_url(settings) as url:
        assert url.startswith("mqtt://127.0.0.1:")
        with running(settings, db, url) as ingester:
            pass  # the session and its subscriptions now exist
        assert ingester.metrics.received == 0
        # mosquitto's default queue for an absent client is 1,000 messages; ours keeps all
        with Publisher(url, max_inflight=500) as publisher:
            for n in range(1500):
                body = {"ts": (NOW - timedelta(minutes=n)).isoformat(), "total_l": float(n)}
                publisher.publish(f"{settings.mqtt.topic_prefix}/GW-1/WM-1/reading", orjson.dumps(body))
        with running(settings, db, url) as ingester:
            wait_for(lambda: ingester.metrics.acked >= 1500, timeout_s=60)
    assert readings(db) == 1500
    assert (settings.data_dir / "mosquitto" / "mosquitto.conf").exists()


def test_amqtt_in_process_speaks_mqtt_311_to_the_ingester(db, make_settings, topic_prefix):
    settings = make_settings(database_url=db, mqtt={"topic_prefix": topic_prefix}, ingest={"batch_ms": 50})
    with start_amqtt() as url:
        assert url.endswith("?protocol=3.1.1")
        with running(settings, db, url) as ingester, Publisher(url) as publisher:
            for n in range(20):
                body = {"ts": (NOW - timedelta(minutes=n)).isoformat(), "total_l": float(n)}
                publisher.publish(f"{topic_prefix}/GW-1/WM-1/reading", orjson.dumps(body))
            wait_for(lambda: ingester.metrics.acked >= 20, timeout_s=30)
    assert readings(db) == 20


def _session(settings: Settings, port: int, client_id: str) -> MqttSession:
    """A session for a broker at 127.0.0.1:`port` (MQTT 3.1.1), not yet entered."""
    return MqttSession(
        settings.mqtt,
        BrokerAddress.parse(f"mqtt://127.0.0.1:{port}?protocol=3.1.1"),
        client_id,
        inbox=Inbox(max_messages=10, max_bytes=1 << 20),
        metrics=IngestMetrics(),
    )


def test_the_session_backs_off_until_the_broker_is_up_then_subscribes(make_settings, topic_prefix):
    settings = make_settings(mqtt={"topic_prefix": topic_prefix})
    port = free_port()  # nothing listens here yet
    session = _session(settings, port, f"lkt-backoff-{port}")
    with session:
        # each refused connect takes the next, longer wait from the shared Backoff
        wait_for(lambda: session.reconnect_backoff.failures >= 3, timeout_s=10)
        assert not session.subscribed.is_set()
        with start_amqtt(port=port):
            assert session.subscribed.wait(15)
            # connected: the back-off started over (one wait held ready for the next drop)
            assert session.reconnect_backoff.failures == 1


def test_paho_finding_the_socket_closed_while_the_session_closes_is_not_logged_as_an_error(
    make_settings, topic_prefix, caplog
):
    """paho's network thread may go round once more between the session's disconnect() and
    loop_stop() and log "Client is not connected" at ERROR (it showed in the README demo's
    last lines). Expected while closing, so dropped then; logged at any other time, and
    paho's other messages always are."""
    settings = make_settings(mqtt={"topic_prefix": topic_prefix})
    port = free_port()
    session = _session(settings, port, f"lkt-closing-{port}")
    not_connected = (
        "Client is not connected. Socket: None). Last known Connection State: MQTT_CS_DISCONNECTED"
    )
    with session, caplog.at_level(logging.DEBUG, logger=PAHO_LOGGER):
        paho_log = session._client.logger  # what paho's network thread logs through
        paho_log.error(not_connected)
        session._closing = True
        paho_log.error(not_connected)
        paho_log.error("Caught exception in on_message: boom")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.name == PAHO_LOGGER] == [
        (PAHO_LOGGER, "ERROR", not_connected),
        (PAHO_LOGGER, "ERROR", "Caught exception in on_message: boom"),
    ]
