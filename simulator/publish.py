"""Publishing simulated traffic to a broker: paho-mqtt MQTT 5 clients, QoS 1.

A `BrokerPublisher` holds a few connections ("lanes"); every gateway's messages go through
one lane, so each gateway's traffic stays in order. The clients' network loops run in the
calling thread (no paho threads): `publish` writes at once, and PUBACKs are read whenever a
lane's window is full or the pacer waits. Nothing is dropped: a lane has at most
`max_inflight` unacknowledged messages and never more than the broker's Receive Maximum
(Mosquitto says 20; several lanes keep the pipe full within it, and paho's 16-bit message
ids would stall an uncapped publisher near 65,535). The broker's refusals are counted and
reported, and the run ends only when every message has its PUBACK. A broken connection is
re-established with the session kept, and paho sends what was unacknowledged again (the
ingester stores each reading once).
"""

from __future__ import annotations

import contextlib
import logging
import select
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from lovekey.errors import PublishError
from lovekey.ingest.mqtt import BrokerAddress, TlsFiles, new_client
from lovekey.redact import redact_url
from lovekey.retry import Backoff
from lovekey.simulator.stream import MessageBatch

log = logging.getLogger(__name__)

DEFAULT_MAX_INFLIGHT = 1000
DEFAULT_LANES = 8
# on a stop (Ctrl+C, SIGTERM), how long to wait for the broker to acknowledge what is in flight
STOP_FLUSH_S = 3.0
_KEEPALIVE_S = 30
_SESSION_EXPIRY_S = 600  # the broker keeps our unacknowledged messages this long
_RECONNECT_FOR_S = 60.0  # then give up
_CONNECT_TIMEOUT_S = 10.0


@dataclass
class PublishStats:
    published: int = 0
    acked: int = 0
    refused: int = 0  # PUBACK with a failure reason code
    reconnects: int = 0
    started: float = field(default_factory=time.monotonic)
    simulated_ts: float = 0.0  # publish time of the last message sent

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        return self.published / max(self.elapsed_s, 1e-9)


class _Lane:
    """One connection: its client, its window and what it has in flight."""

    def __init__(self, client: mqtt.Client, client_id: str, window: int) -> None:
        self.client = client
        self.client_id = client_id
        self.window = window  # lowered to the broker's Receive Maximum on CONNACK
        self.published = 0
        self.acked = 0
        self.connected = False
        self.connect_error: str | None = None

    @property
    def in_flight(self) -> int:
        return self.published - self.acked


class BrokerPublisher:
    """`with BrokerPublisher(url) as pub: pub.publish(topic, payload)`; waits for PUBACKs on exit."""

    def __init__(
        self,
        mqtt_url: str,
        *,
        client_id: str | None = None,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        lanes: int = DEFAULT_LANES,
        tls_files: TlsFiles | None = None,
    ) -> None:
        if not 1 <= max_inflight <= 65_000:
            raise ValueError("max_inflight must be between 1 and 65,000")
        if not 1 <= lanes <= 64:
            raise ValueError("lanes must be between 1 and 64")
        self.url = mqtt_url
        self.address = BrokerAddress.parse(mqtt_url, tls_files)
        self.client_id = client_id or f"lovekey-sim-{uuid.uuid4().hex[:8]}"
        self.max_inflight = max_inflight
        self.lane_count = lanes
        self.stats = PublishStats()
        self._lanes: list[_Lane] = []
        self._lane_of: dict[str, _Lane] = {}
        self._last_misc = 0.0

    def __repr__(self) -> str:
        return f"BrokerPublisher({redact_url(self.url)!r}, client_id={self.client_id!r})"

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            for k in range(self.lane_count):
                client_id = self.client_id if self.lane_count == 1 else f"{self.client_id}-{k}"
                lane = _Lane(new_client(self.address, client_id), client_id, self.max_inflight)
                lane.client.max_inflight_messages_set(0)  # our window caps; paho's rescans per ack
                lane.client.max_queued_messages_set(0)
                lane.client.on_connect = self._on_connect
                lane.client.on_disconnect = self._on_disconnect
                lane.client.on_publish = self._on_publish
                lane.client.user_data_set(lane)
                self._lanes.append(lane)
                self._connect(lane, first=True)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and self._lanes:
                self.flush()
            elif exc_type is not None and issubclass(exc_type, KeyboardInterrupt) and self._lanes:
                # stopped: what was handed to the broker is acknowledged before we go, if the
                # broker answers soon; the stop must not wait as long as a finished run does
                with contextlib.suppress(PublishError):
                    self.flush(timeout_s=STOP_FLUSH_S)
        finally:
            self._close()

    def _close(self) -> None:
        for lane in self._lanes:
            lane.client.disconnect()
        self._lanes = []

    def _connect(self, lane: _Lane, *, first: bool) -> None:
        lane.connected = False
        lane.connect_error = None
        kwargs: dict[str, Any] = {}
        if self.address.mqtt5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = _SESSION_EXPIRY_S
            kwargs = {"clean_start": first, "properties": props}
        try:
            if first:
                lane.client.connect(self.address.host, self.address.port, _KEEPALIVE_S, **kwargs)
            else:
                lane.client.reconnect()
        except OSError as exc:
            raise PublishError(f"cannot reach the broker at {redact_url(self.url)}: {exc}") from exc
        deadline = time.monotonic() + _CONNECT_TIMEOUT_S
        while not lane.connected:
            if lane.connect_error:
                raise PublishError(f"the broker refused the connection: {lane.connect_error}")
            if time.monotonic() > deadline:
                raise PublishError(f"no CONNACK from {redact_url(self.url)} in {_CONNECT_TIMEOUT_S:g}s")
            if not self._service(0.1, [lane]):
                raise PublishError(f"the broker at {redact_url(self.url)} closed the connection")

    def _reconnect(self, lane: _Lane) -> None:
        """Back in touch with capped, jittered back-off; paho resends what was unacknowledged."""
        deadline = time.monotonic() + _RECONNECT_FOR_S
        backoff = Backoff(first_s=0.1, max_s=5.0)
        while True:
            try:
                self._connect(lane, first=False)
                self.stats.reconnects += 1
                log.warning(
                    "reconnected %s (%d unacknowledged messages resent)", lane.client_id, lane.in_flight
                )
                return
            except PublishError as exc:
                delay_s = backoff.next_delay_s()
                if time.monotonic() + delay_s > deadline:
                    raise PublishError(
                        f"lost the broker for {_RECONNECT_FOR_S:g}s with "
                        f"{self.in_flight} messages unacknowledged: {exc}"
                    ) from exc
            time.sleep(delay_s)

    # -- publishing -------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self.stats.published - self.stats.acked

    def lane_for(self, key: str) -> _Lane:
        """The lane for `key` (a gateway id), the same for the whole run."""
        lane = self._lane_of.get(key)
        if lane is None:
            lane = self._lanes[zlib.crc32(key.encode()) % len(self._lanes)]
            self._lane_of[key] = lane
        return lane

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, lane: _Lane | None = None) -> None:
        """Send one QoS 1 message through `lane` (default: the lane for the whole topic)."""
        lane = lane or self.lane_for(topic)
        while lane.in_flight >= lane.window:
            self.pump(1.0)
        info = lane.client.publish(topic, payload, qos=1, retain=retain)
        lane.published += 1
        self.stats.published += 1
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            self._reconnect(lane)  # paho kept the message and sends it on reconnecting
        elif info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise PublishError(f"publish to {topic!r} failed: {mqtt.error_string(info.rc)}")

    def pump(self, timeout_s: float) -> None:
        """Read PUBACKs (and keep the connections alive) for up to `timeout_s`."""
        if not self._service(timeout_s, self._lanes):
            for lane in self._lanes:
                if lane.client.socket() is None:
                    self._reconnect(lane)

    def wait_until(self, deadline: float) -> None:
        """Serve the connections until `time.monotonic()` reaches `deadline`."""
        while (left := deadline - time.monotonic()) > 0:
            self.pump(min(left, 1.0))

    def flush(self, timeout_s: float = 120.0) -> None:
        """Return once every message published so far is acknowledged."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight > 0:
            if time.monotonic() > deadline:
                raise PublishError(f"{self.in_flight} messages unacknowledged after {timeout_s:g}s")
            self.pump(0.5)
        if self.stats.refused:
            raise PublishError(f"the broker refused {self.stats.refused} messages (PUBACK failure)")

    def _service(self, timeout_s: float, lanes: list[_Lane]) -> bool:
        """One round of the network loops; False when a connection is gone."""
        by_socket: dict[Any, _Lane] = {}
        writing = []
        for lane in lanes:
            sock = lane.client.socket()
            if sock is None:
                return False
            by_socket[sock] = lane
            if lane.client.want_write():
                writing.append(sock)
        try:
            readable, writable, _ = select.select(list(by_socket), writing, [], max(timeout_s, 0.0))
        except (OSError, ValueError):
            return False
        ok = mqtt.MQTT_ERR_SUCCESS
        for sock in readable:
            if by_socket[sock].client.loop_read() != ok:
                return False
        for sock in writable:
            if by_socket[sock].client.loop_write() != ok:
                return False
        now = time.monotonic()
        if now - self._last_misc >= 1.0:
            self._last_misc = now
            for lane in lanes:
                if lane.client.loop_misc() != ok:
                    return False
        return all(lane.client.socket() is not None for lane in lanes)

    # -- paho callbacks (called from loop_read in this thread) -----------------------------

    def _on_connect(self, client: mqtt.Client, lane: _Lane, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            lane.connect_error = str(reason)
            return
        # MQTT 5: never more unacknowledged QoS 1 messages than the broker says it takes;
        # more is a protocol error a broker may disconnect us for.
        receive_maximum = getattr(properties, "ReceiveMaximum", None)
        lane.window = min(self.max_inflight, receive_maximum or self.max_inflight)
        lane.connected = True

    def _on_disconnect(
        self, client: mqtt.Client, lane: _Lane, flags: Any, reason: Any, properties: Any
    ) -> None:
        lane.connected = False

    def _on_publish(self, client: mqtt.Client, lane: _Lane, mid: int, reason: Any, properties: Any) -> None:
        lane.acked += 1
        self.stats.acked += 1
        if getattr(reason, "is_failure", False):
            self.stats.refused += 1


@dataclass(frozen=True)
class Pacing:
    """When to send.

    `speed`: simulated seconds per wall second (None: as fast as the broker takes it); a
    message simulated at `sim_origin + x` is due at wall-clock time `wall_origin + x / speed`.
    `max_rate`: at most this many messages per second (None: no cap).
    """

    speed: float | None = None
    max_rate: float | None = None
    sim_origin: float = 0.0
    wall_origin: float = 0.0

    def __post_init__(self) -> None:
        if self.speed is not None and self.speed <= 0:
            raise ValueError("speed must be positive")
        if self.max_rate is not None and self.max_rate <= 0:
            raise ValueError("max_rate must be positive")


def publish_batches(
    batches: Iterable[MessageBatch],
    publisher: BrokerPublisher,
    *,
    topic_prefix: str,
    pacing: Pacing = Pacing(),
    on_progress: Callable[[PublishStats], None] | None = None,
    progress_every_s: float = 0.25,
) -> PublishStats:
    """Publish every message of `batches` under `topic_prefix`, paced; returns the stats."""
    prefix = topic_prefix.rstrip("/") + "/"
    stats = publisher.stats
    stats.started = time.monotonic()
    next_report = stats.started
    lane_of: dict[str, Any] = {}  # topic -> the lane of its gateway (the topic's first level)

    def lane(topic: str) -> Any:
        found = lane_of.get(topic)
        if found is None:
            found = lane_of[topic] = publisher.lane_for(topic.split("/", 1)[0])
        return found

    for batch in batches:
        topics = [prefix + t for t in batch.topics]
        lanes = [lane(t) for t in batch.topics]
        if pacing.speed is None and pacing.max_rate is None:
            for topic, payload, retain, via in zip(topics, batch.payloads, batch.retain, lanes, strict=True):
                publisher.publish(topic, payload, retain=retain, lane=via)
        else:
            for topic, payload, at, retain, via in zip(
                topics, batch.payloads, batch.publish_ts, batch.retain, lanes, strict=True
            ):
                now = time.monotonic()
                due = now
                if pacing.speed is not None:
                    wall_due = pacing.wall_origin + (at - pacing.sim_origin) / pacing.speed
                    due += wall_due - time.time()
                if pacing.max_rate is not None:
                    due = max(due, stats.started + stats.published / pacing.max_rate)
                if due > now:
                    publisher.wait_until(due)
                publisher.publish(topic, payload, retain=retain, lane=via)
                stats.simulated_ts = at
                if on_progress is not None and now >= next_report:
                    next_report = now + progress_every_s
                    on_progress(stats)
        if batch.publish_ts:
            stats.simulated_ts = batch.publish_ts[-1]
        if on_progress is not None and time.monotonic() >= next_report:
            next_report = time.monotonic() + progress_every_s
            on_progress(stats)
    publisher.flush()
    if on_progress is not None:
        on_progress(stats)
    return stats
