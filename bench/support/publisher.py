"""MQTT and ingester helpers for benchmarks and tests.

`Publisher` is a QoS 1 publisher that caps what it has in flight (an uncapped paho publisher stalls at 65,535
outstanding message ids); `wait_for` polls a condition with a deadline; `running_ingester`
runs an ingester on a thread for the length of a `with` block.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt

from lovekey.config import Settings
from lovekey.ingest.ingester import Ingester
from lovekey.ingest.mqtt import BrokerAddress, new_client


def wait_for(condition: Callable[[], Any], *, timeout_s: float = 30.0, interval_s: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy; raise TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met in {timeout_s:g}s (last value {value!r})")
        time.sleep(interval_s)


class Publisher:
    """`with Publisher(url) as pub: pub.publish(topic, payload)`; waits for PUBACKs on exit.

    At most `max_inflight` QoS 1 messages are unacknowledged at once; `publish` blocks
    until there is room. `on_ack(mid)` is told of each acknowledgement.
    """

    def __init__(
        self,
        mqtt_url: str,
        *,
        client_id: str | None = None,
        max_inflight: int = 1000,
        qos: int = 1,
    ) -> None:
        self.address = BrokerAddress.parse(mqtt_url)
        self.client_id = client_id or f"lovekey-pub-{uuid.uuid4().hex[:8]}"
        self.max_inflight = max_inflight
        self.qos = qos
        self.published = 0
        self.acked = 0
        self._room = threading.BoundedSemaphore(max_inflight)
        self._connected = threading.Event()
        self._client: mqtt.Client | None = None

    def __enter__(self) -> Self:
        client = new_client(self.address, self.client_id)
        # 0: no limit in paho (its limit rescans every outgoing message on each PUBACK,
        # quadratic in the window); the semaphore in publish() is the cap
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = lambda c, u, f, reason, p: self._connected.set()
        client.on_publish = self._on_publish
        client.connect(self.address.host, self.address.port)
        client.loop_start()
        self._client = client
        if not self._connected.wait(10):
            self._stop()
            raise TimeoutError(f"no CONNACK from {self.address.host}:{self.address.port}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:
            self._stop()

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        assert self._client is not None, "use Publisher in a with block"
        if self.qos:
            self._room.acquire()
        info = self._client.publish(topic, payload, qos=self.qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            if self.qos:
                self._room.release()
            raise ConnectionError(f"publish failed: {mqtt.error_string(info.rc)}")
        self.published += 1

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every QoS 1 message published so far is acknowledged by the broker."""
        if self.qos:
            wait_for(lambda: self.acked >= self.published, timeout_s=timeout_s, interval_s=0.01)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, *rest: Any) -> None:
        self.acked += 1
        if self.qos:
            self._room.release()

    def _stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None


@contextmanager
def running_ingester(settings: Settings, **kwargs: Any) -> Iterator[Ingester]:
    """An entered ingester (on `settings.database_url` and `settings.mqtt_url`) whose writer
    runs on a thread; on exit it is stopped and joined, and an error it raised is re-raised."""
    if settings.database_url is None or settings.mqtt_url is None:
        raise ValueError("running_ingester needs database_url and mqtt_url in the settings")
    stop = threading.Event()
    failures: list[BaseException] = []
    with Ingester(settings, settings.database_url, settings.mqtt_url, **kwargs) as ingester:

        def writer() -> None:
            try:
                ingester.run(stop)
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=writer, name="test-ingest-writer")
        thread.start()
        try:
            if not ingester.subscribed.wait(10):
                raise TimeoutError("the ingester never subscribed")
            yield ingester
        finally:
            stop.set()
            thread.join(30)
    if thread.is_alive():
        raise RuntimeError("the ingester did not stop within 30 s")
    if failures:
        raise failures[0]
