"""Bad input at the broker (docs/bad-input.md, "Broker identity"): what a gateway holding its
own valid password might still try, against a private Mosquitto running the files `lovekey
broker-config` writes, with the real ingester and a real database.

test_broker_identity.py covers wrong passwords, anonymous clients, another gateway's topics,
revoked gateways and oversized packets; these are the tries it does not make.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from lovekey.bench.support.publisher import running_ingester
from lovekey.bench.support.seeding import register_devices
from lovekey.cli import main
from lovekey.config import Settings
from lovekey.storage import connect

PREFIX = "lovekey"
INGEST_USER, INGEST_PASSWORD = "lovekey-ingest", "ingest-secret-for-bad-input"
INGEST_CLIENT_ID = "lk-ingest-badinput"
NOT_AUTHORIZED = 135  # MQTT 5 reason code in PUBACK / SUBACK


@dataclass
class Site:
    db: str
    broker: Any
    passwords: dict[str, str]

    def settings(self, make_settings: Callable[..., Settings]) -> Settings:
        return make_settings(
            database_url=self.db,
            mqtt_url=self.broker.url(INGEST_USER, INGEST_PASSWORD),
            mqtt={"topic_prefix": PREFIX, "client_id": INGEST_CLIENT_ID, "session_expiry_s": 600},
            ingest={"batch_ms": 50, "registry_miss_retry_s": 0, "summary_interval_s": 3600},
        )


@pytest.fixture
def site(postgres_factory: Any, private_broker: Any, tmp_path: Path, capsys: Any) -> Site:
    db = postgres_factory.create("badinput_broker")
    with connect(db) as conn:
        register_devices(
            conn,
            [("WM-A1", "GW-A", "water_meter", "R-A"), ("SOS-B1", "GW-B", "sos_button", "R-B")],
        )
    files = tmp_path / "broker-files"
    config = tmp_path / "lovekey.toml"
    config.write_text(
        f'database_url = "{db}"\n'
        f'mqtt_url = "mqtt://{INGEST_USER}:{INGEST_PASSWORD}@127.0.0.1:1"\n'
        f'[mqtt]\ntopic_prefix = "{PREFIX}"\n'
    )
    passwords = {}
    for gateway in ("GW-A", "GW-B"):
        assert main(["--config", str(config), "gateways", "credentials", "issue", gateway]) == 0
        passwords[gateway] = capsys.readouterr().out.strip().rsplit("password ", 1)[1]
    assert main(["--config", str(config), "broker-config", "--out", str(files)]) == 0
    broker = private_broker(f"listener {{port}} 127.0.0.1\ninclude_dir {files}\n")
    return Site(db, broker, passwords)


@dataclass
class Client:
    """One MQTT 5 client with a client id of the test's choosing, and what the broker said."""

    client: mqtt.Client
    connack: Any = None
    answered: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    replies: dict[int, Any] = field(default_factory=dict)
    received: list[str] = field(default_factory=list)

    def wait_reply(self, mid: int, timeout_s: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while mid not in self.replies and time.monotonic() < deadline and not self.disconnected.is_set():
            time.sleep(0.01)
        return self.replies.get(mid)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def client(
    port: int, user: str, password: str, *, client_id: str | None = None, clean_start: bool = True
) -> Client:
    paho = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"bad-{os.urandom(4).hex()}",
        protocol=mqtt.MQTTv5,
    )
    paho.username_pw_set(user, password)
    result = Client(paho)

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result.connack = reason
        result.answered.set()

    def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result.disconnected.set()
        result.answered.set()

    def on_publish(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        result.replies[mid] = reason

    def on_subscribe(c: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        result.replies[mid] = reasons[0]

    paho.on_connect = on_connect
    paho.on_disconnect = on_disconnect
    paho.on_publish = on_publish
    paho.on_subscribe = on_subscribe
    paho.on_message = lambda c, u, m: result.received.append(m.topic)
    paho.reconnect_delay_set(60, 60)  # never come back on its own within a test
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 0
    paho.connect_async("127.0.0.1", port, clean_start=clean_start, properties=properties)
    paho.loop_start()
    result.answered.wait(5)
    return result


NOW = datetime.now(UTC).replace(microsecond=0)


def reading(total_l: float, minutes_ago: int) -> bytes:
    return orjson.dumps({"ts": (NOW - timedelta(minutes=minutes_ago)).isoformat(), "total_l": total_l})


def query(url: str, statement: str) -> list[tuple[Any, ...]]:
    with connect(url) as conn:
        return conn.execute(statement).fetchall()  # type: ignore[arg-type]


def test_a_gateway_cannot_subscribe_to_what_others_publish(site: Site) -> None:
    # Mosquitto grants a wildcard subscription and checks read access on each message it
    # would deliver: whatever the pattern (the whole tree, a neighbour's events, a shared
    # subscription, the broker's own $SYS statistics), nothing may arrive
    spy = client(site.broker.port, "GW-A", site.passwords["GW-A"])
    assert spy.connack == 0
    for pattern in ("#", f"{PREFIX}/#", f"{PREFIX}/GW-B/+/event", f"$share/spy/{PREFIX}/#", "$SYS/#"):
        _, mid = spy.client.subscribe(pattern, qos=1)
        assert spy.wait_reply(mid) is not None, pattern
    neighbour = client(site.broker.port, "GW-B", site.passwords["GW-B"])
    info = neighbour.client.publish(f"{PREFIX}/GW-B/SOS-B1/event", b"{}", qos=1)
    assert neighbour.wait_reply(info.mid) == 0
    time.sleep(0.3)
    assert spy.received == []
    for c in (spy, neighbour):
        c.close()


def test_a_gateway_using_the_ingesters_client_id_loses_no_reading(
    site: Site, make_settings: Callable[..., Settings]
) -> None:
    # MQTT lets a new connection with a client id in use take that id's session over. A
    # gateway that connects as the ingester's configured client id with a clean start would
    # wipe the session in which the broker keeps readings for a stopped ingester, if that were
    # the id the ingester used: it seals it with a tag of its password (ingest/mqtt.py).
    settings = site.settings(make_settings)
    with running_ingester(settings):
        pass  # the ingester's persistent session now exists at the broker
    gateway = client(site.broker.port, "GW-A", site.passwords["GW-A"])
    for n in range(5):
        info = gateway.client.publish(f"{PREFIX}/GW-A/WM-A1/reading", reading(100.0 + n, 30 - n), qos=1)
        assert gateway.wait_reply(info.mid) == 0
    gateway.close()
    thief = client(site.broker.port, "GW-A", site.passwords["GW-A"], client_id=INGEST_CLIENT_ID)
    thief.close()
    with running_ingester(settings):
        time.sleep(1.0)
    stored = query(site.db, "SELECT total_l FROM water_reading_wide ORDER BY ts")
    assert [t for (t,) in stored] == [100.0, 101.0, 102.0, 103.0, 104.0]


def test_a_retained_forged_status_needs_the_gateways_own_password(site: Site) -> None:
    # a retained "offline" under GW-B would be replayed to every ingester that subscribes
    forger = client(site.broker.port, "GW-A", site.passwords["GW-A"])
    info = forger.client.publish(f"{PREFIX}/GW-B/status", b"offline", qos=1, retain=True)
    assert forger.wait_reply(info.mid) == NOT_AUTHORIZED
    forger.close()
    watcher = client(site.broker.port, INGEST_USER, INGEST_PASSWORD)
    _, mid = watcher.client.subscribe(f"{PREFIX}/+/status", qos=1)
    assert watcher.wait_reply(mid) == 1  # granted QoS 1
    time.sleep(0.3)
    assert watcher.received == []
    watcher.close()
