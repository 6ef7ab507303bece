"""A private Mosquitto started on a free port with a config of the test's own, and MQTT clients
that report what the broker answered (CONNACK and PUBACK reason codes, disconnects).

Loaded as a pytest plugin from conftest.py. The shared broker on 1883 stays anonymous and
untouched; these brokers live and die with one test.
"""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lovekey.ingest.broker import _wait_for_port, find_mosquitto, free_port


@dataclass
class PrivateBroker:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    def url(self, user: str | None = None, password: str | None = None, *, scheme: str = "mqtt") -> str:
        login = f"{user}:{password}@" if user else ""
        return f"{scheme}://{login}127.0.0.1:{self.port}"

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password file and ACL."""
        self.process.send_signal(signal.SIGHUP)

    def peak_rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")

    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_broker(directory: Path, body: str, *, port: int | None = None) -> PrivateBroker:
    """Start mosquitto with `listener {port}` plus `body` as its config."""
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = directory / "mosquitto.conf"
    config.write_text(
        f"user {getpass.getuser()}\npersistence false\n"
        f"log_dest file {directory}/mosquitto.log\nlog_type all\n" + body.format(port=port)
    )
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    broker = PrivateBroker(process, port, directory)
    _wait_for_port(port, lambda: process.poll() is None)
    if process.poll() is not None:
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        raise AssertionError(f"mosquitto exited with {process.returncode}: {stderr}\n{broker.log()}")
    return broker


def stop_broker(broker: PrivateBroker) -> None:
    if broker.process.poll() is None:
        broker.process.terminate()
        try:
            broker.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            broker.process.kill()
            broker.process.wait()
    if broker.process.stderr:
        broker.process.stderr.close()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Any]:
    """`private_broker(body)` starts a broker; every one started is stopped after the test."""
    started: list[PrivateBroker] = []

    def start(body: str, *, name: str = "broker") -> PrivateBroker:
        broker = start_broker(tmp_path / name, body)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        stop_broker(broker)


@dataclass
class Probe:
    """One MQTT client and everything the broker told it."""

    client: mqtt.Client
    connack: Any = None
    disconnected: threading.Event = field(default_factory=threading.Event)
    answered: threading.Event = field(default_factory=threading.Event)
    pubacks: dict[int, Any] = field(default_factory=dict)
    acked: threading.Condition = field(default_factory=threading.Condition)
    received: list[tuple[str, bytes]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, timeout_s: float = 5.0) -> Any:
        """Publish at QoS 1; the PUBACK reason code (MQTT 5), or None if none came."""
        info = self.client.publish(topic, payload, qos=1)
        with self.acked:
            self.acked.wait_for(
                lambda: info.mid in self.pubacks or self.disconnected.is_set(), timeout=timeout_s
            )
            return self.pubacks.get(info.mid)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def probe(
    port: int,
    user: str | None,
    password: str | None,
    *,
    mqtt5: bool = True,
    subscribe: str | None = None,
    tls: dict[str, Any] | None = None,
) -> Probe:
    """Connect (and wait for the CONNACK or the refusal) as `user`."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"probe-{os.urandom(4).hex()}",
        protocol=mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311,
    )
    if user is not None:
        client.username_pw_set(user, password)
    if tls is not None:
        client.tls_set(**tls)
    result = Probe(client)

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result.connack = reason
        if not reason.is_failure:
            if subscribe:
                c.subscribe(subscribe, qos=1)
        else:
            result.disconnected.set()
        result.answered.set()

    def on_publish(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with result.acked:
            result.pubacks[mid] = reason
            result.acked.notify_all()

    def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result.disconnected.set()
        result.answered.set()
        with result.acked:
            result.acked.notify_all()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    client.on_message = lambda c, u, m: result.received.append((m.topic, m.payload))
    client.reconnect_delay_set(60, 60)  # a refused probe stays refused within the test
    client.connect_async("127.0.0.1", port)
    client.loop_start()
    result.answered.wait(5)
    return result
