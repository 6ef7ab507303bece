"""The ingester: paho-mqtt receives, batches are decoded, committed, then acknowledged.

Threads and what they own:

- paho's network thread (`loop_start`) reads the socket and puts each message in the
  `Inbox`, which is bounded by count and bytes. The broker never sends more than the
  Receive Maximum unacknowledged QoS 1 messages, and nothing is acknowledged before its
  commit, so while the database is down the broker holds the stream, not our memory.
- the thread that calls `Ingester.run()` collects a batch (up to `batch_rows` rows or
  `batch_ms` old) and decodes it, then hands it over (one batch at most waits).
- the `ingest-writer` thread validates it against the in-memory registry, writes it in one
  transaction and then acknowledges every message of it. Decoding the next batch overlaps
  the database's work on this one. A crash at any instant loses nothing: what was not
  acknowledged comes back.

Acknowledgements carry the connection generation they belong to: after a reconnect the
broker resends what was unacknowledged, and a packet id from the old connection must not
acknowledge a different message on the new one.
"""

from __future__ import annotations

import logging
import queue
import random
import socket
import sys
import threading
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import numpy as np
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from lovekey.config import Settings
from lovekey.errors import PayloadError, SettingsError, StorageError
from lovekey.ingest import reasons
from lovekey.ingest.batch import BatchPlan, ReceivedMessage, plan_batch
from lovekey.ingest.codecs import decode_message
from lovekey.ingest.messages import DecodedMessage
from lovekey.ingest.metrics import IngestMetrics, SummaryLog
from lovekey.ingest.mqtt import BrokerAddress, connect_properties, new_client
from lovekey.ingest.registry_cache import RegistryCache, load_registry, look_up
from lovekey.ingest.writer import WriteResult, prepare, write_plan
from lovekey.storage import connect

log = logging.getLogger(__name__)

APPLICATION_NAME = "lovekey-ingest"
# Messages taken from the inbox at once while filling a batch.
_TAKE_MAX = 2048
# How long the writer waits for a first message before doing its periodic chores.
_IDLE_WAIT_S = 0.25
# Retiring a session: it is drained once nothing has arrived for this long.
_RETIRE_QUIET_S = 3.0


@dataclass(slots=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int  # connection it arrived on; acks go only to that connection
    received_mono: float


class Inbox:
    """Received, not yet written: bounded by count and bytes; `put` waits when full.

    A full inbox stops paho's network thread, and TCP pushes back on the broker. With the
    default limits (Receive Maximum below `max_messages`) it does not come to that for
    QoS 1; it bounds memory against QoS 0 floods and very large payloads.

    The taker says how many items it waits for, and `put` wakes it only when they are
    there: one wake-up per batch rather than a thread hand-off per message.
    """

    _NOBODY = sys.maxsize

    def __init__(self, *, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: deque[Inbound] = deque()
        self._bytes = 0
        self._closed = False
        self._wanted = self._NOBODY  # items the waiting taker needs before it wakes
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Inbound) -> bool:
        """Queue `item`; False when the inbox is closed (the message is not acknowledged)."""
        size = len(item.payload)
        with self._not_full:
            while (
                self._items
                and not self._closed
                and (len(self._items) >= self.max_messages or self._bytes + size > self.max_bytes)
            ):
                self._not_full.wait()
            if self._closed:
                return False
            self._items.append(item)
            self._bytes += size
            if len(self._items) >= self._wanted:
                self._not_empty.notify()
        return True

    def take(self, max_items: int, timeout_s: float, *, at_least: int = 1) -> list[Inbound]:
        """Up to `max_items`, waiting at most `timeout_s` until `at_least` are there."""
        with self._not_empty:
            wanted = max(1, min(at_least, self.max_messages))
            if len(self._items) < wanted and timeout_s > 0 and not self._closed:
                self._wanted = wanted
                self._not_empty.wait(timeout_s)
                self._wanted = self._NOBODY
            count = min(max_items, len(self._items))
            taken = [self._items.popleft() for _ in range(count)]
            self._bytes -= sum(len(item.payload) for item in taken)
            if taken:
                self._not_full.notify_all()
        return taken

    def close(self) -> None:
        with self._not_full:
            self._closed = True
            self._not_full.notify_all()
            self._not_empty.notify_all()


class _SeenMemory:
    """What `last_seen`/battery we last wrote per device key, to skip redundant updates.

    Device keys are dense identity numbers, so two arrays indexed by key hold it in 12
    bytes a device.
    """

    _MAX_KEY = 50_000_000

    def __init__(self, resolution_s: float) -> None:
        self.resolution_s = resolution_s
        self.written_at = np.full(1024, -np.inf)
        self.battery = np.full(1024, np.nan, dtype=np.float32)

    def due(self, seen: dict[int, float | None], now_mono: float) -> list[tuple[int, float | None]]:
        if not seen:
            return []
        keys = np.fromiter(seen.keys(), dtype=np.int64, count=len(seen))
        battery = np.array([np.nan if v is None else v for v in seen.values()], dtype=np.float32)
        inside = keys < self._MAX_KEY
        if int(keys.max()) >= self.written_at.size:
            self._grow(int(keys[inside].max(initial=0)) + 1)
        safe = np.where(inside, keys, 0)
        stale = now_mono - self.written_at[safe] >= self.resolution_s
        changed = ~np.isnan(battery) & (battery != self.battery[safe])
        due = ~inside | stale | changed
        order = np.argsort(keys[due], kind="stable")
        keys_due, battery_due = keys[due][order], battery[due][order]
        return [
            (int(k), None if np.isnan(b) else float(b)) for k, b in zip(keys_due, battery_due, strict=True)
        ]

    def written(self, rows: list[tuple[int, float | None]], now_mono: float) -> None:
        for key, battery in rows:
            if key < self._MAX_KEY:
                self.written_at[key] = now_mono
                if battery is not None:
                    self.battery[key] = battery

    def _grow(self, size: int) -> None:
        size = max(size, 2 * self.written_at.size)
        self.written_at = np.concatenate([self.written_at, np.full(size - self.written_at.size, -np.inf)])
        self.battery = np.concatenate(
            [self.battery, np.full(size - self.battery.size, np.nan, dtype=np.float32)]
        )


class _Database:
    """The writer's one connection: opened on demand, prepared, dropped on failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = connect(self.url, autocommit=True, application=APPLICATION_NAME)
            try:
                prepare(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# Failures that say "the database is not there (or not itself) right now": wait and retry.
_RETRY = (psycopg.OperationalError, psycopg.InterfaceError, StorageError)
# Failures that say "this row is unacceptable": find the message and reject it.
_REFUSED = (psycopg.DataError, psycopg.IntegrityError)


class Ingester:
    """`with Ingester(settings, db_url, mqtt_url) as ingester: ingester.run(stop_event)`.

    Entering connects to the broker (in paho's thread, retrying until it answers) and
    starts the metrics endpoint when `ingest.metrics_port` is set; `run` writes until
    `stop_event` is set. `lovekey run` hosts it next to the detectors the same way.
    """

    def __init__(
        self,
        settings: Settings,
        database_url: str,
        mqtt_url: str,
        *,
        shared_group: str | None = None,
        client_id: str | None = None,
        retire: bool = False,
    ) -> None:
        if shared_group is not None and (not shared_group or any(c in shared_group for c in "/+#")):
            raise SettingsError(f"shared group {shared_group!r} must be a single topic level")
        self.settings = settings
        self.database_url = database_url
        self.broker = BrokerAddress.parse(mqtt_url)
        if retire and not self.broker.mqtt5:
            raise SettingsError("retiring a session needs MQTT 5")
        self.shared_group = shared_group
        self.retire = retire
        base = settings.mqtt.client_id
        self.client_id = client_id or (
            f"{base}-{shared_group}-{socket.gethostname()}" if shared_group else base
        )
        mqtt_settings, ingest = settings.mqtt, settings.ingest
        self._inbox = Inbox(
            max_messages=mqtt_settings.receive_maximum + _TAKE_MAX,
            max_bytes=ingest.max_pending_bytes,
        )
        self.metrics = IngestMetrics(pending=self._inbox.__len__)
        self._registry = RegistryCache(
            refresh_s=ingest.registry_refresh_s, miss_retry_s=ingest.registry_miss_retry_s
        )
        self._seen = _SeenMemory(ingest.last_seen_resolution_s)
        self._gateways_written: dict[str, float] = {}
        self._max_age_s = settings.storage.retention_days * 86400.0
        self._lock = threading.Lock()  # guards the generation and acks against reconnects
        self._generation = 0
        self._connected_once = False
        self._stopping = False
        self._last_message_mono = time.monotonic()
        self._settled = 0  # messages whose batch was committed and acknowledged
        self.retired = False  # retire mode: everything queued was written
        self._client: mqtt.Client | None = None
        self._stack = ExitStack()
        self.subscribed = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        with ExitStack() as stack:
            if self.settings.ingest.metrics_port is not None:
                self._serve_metrics(stack)
            self._client = self._start_client(stack)
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _serve_metrics(self, stack: ExitStack) -> None:
        from prometheus_client import start_http_server

        ingest = self.settings.ingest
        assert ingest.metrics_port is not None
        server, thread = start_http_server(
            ingest.metrics_port, addr=ingest.metrics_host, registry=self.metrics.registry()
        )
        log.info("metrics on http://%s:%s/metrics", ingest.metrics_host, server.server_port)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join()

        stack.callback(stop)

    def _start_client(self, stack: ExitStack) -> mqtt.Client:
        client = new_client(self.broker, self.client_id, manual_ack=True)
        # an error in a callback must not end paho's network thread: it is logged instead
        client.enable_logger(logging.getLogger("lovekey.ingest.paho"))
        client.suppress_exceptions = True
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 30)
        mqtt_settings = self.settings.mqtt
        if self.broker.mqtt5:
            client.connect_async(
                self.broker.host,
                self.broker.port,
                keepalive=mqtt_settings.keepalive_s,
                clean_start=False,
                properties=connect_properties(
                    session_expiry_s=mqtt_settings.session_expiry_s,
                    receive_maximum=mqtt_settings.receive_maximum,
                ),
            )
        else:  # the session is kept by the client's clean_session=False
            client.connect_async(self.broker.host, self.broker.port, keepalive=mqtt_settings.keepalive_s)
        client.loop_start()

        def stop() -> None:
            self._stopping = True
            self._inbox.close()  # a network thread waiting for room gives up
            if self.retired:  # the broker may forget the session now
                ending = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
                ending.SessionExpiryInterval = 0
                client.disconnect(properties=ending)
            else:
                client.disconnect()
            client.loop_stop()

        stack.callback(stop)
        log.info(
            "ingest connecting to mqtt://%s:%s as %s%s",
            self.broker.host,
            self.broker.port,
            self.client_id,
            f" (shared group {self.shared_group})" if self.shared_group else "",
        )
        return client

    # -- paho callbacks (network thread) --------------------------------------------------

    def topics(self) -> list[str]:
        prefix = self.settings.mqtt.topic_prefix
        share = f"$share/{self.shared_group}/" if self.shared_group else ""
        return [f"{share}{prefix}/+/+/reading", f"{share}{prefix}/+/+/event", f"{share}{prefix}/+/status"]

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        with self._lock:
            self._generation += 1
        again = "re" if self._connected_once else ""
        self._connected_once = True
        log.info("%sconnected to the broker (session present: %s)", again, flags.session_present)
        if self.retire:  # take what the session holds, and no new messages
            client.unsubscribe(self.topics())
        elif self.broker.mqtt5:
            client.subscribe([(topic, SubscribeOptions(qos=1)) for topic in self.topics()])
        else:
            client.subscribe([(topic, 1) for topic in self.topics()])

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        with self._lock:
            self._generation += 1
        self.subscribed.clear()
        if not self._stopping:
            log.warning("lost the broker connection (%s); reconnecting", reason)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons_: list[ReasonCode],
        properties: Any,
    ) -> None:
        failed = [str(r) for r in reasons_ if r.is_failure]
        if failed:
            log.error("subscription refused by the broker: %s", ", ".join(failed))
        else:
            self.subscribed.set()

    def _on_unsubscribe(self, client: mqtt.Client, *args: Any) -> None:
        log.info("unsubscribed: writing what the session still holds, then retiring it")
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.metrics.received += 1
        self._last_message_mono = time.monotonic()
        try:
            topic = message.topic
        except UnicodeDecodeError:  # brokers refuse such topics; kept as bad_topic regardless
            topic = bytes(message._topic).decode("utf-8", "replace")
        payload = message.payload
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        self._inbox.put(Inbound(topic, payload, message.mid, message.qos, self._generation, time.monotonic()))

    # -- collecting (the caller's thread) and writing (the ingest-writer thread) ---------

    def run(self, stop: threading.Event) -> None:
        """Ingest until `stop` is set; returns once the batch being written is done.

        Two stages overlap: this thread collects and decodes the next batch (CPU) while a
        writer thread waits on the database for the previous one (I/O). One decoded batch
        at most waits between them.
        """
        interval_s = self.settings.ingest.summary_interval_s
        summary = SummaryLog(self.metrics)
        next_summary = time.monotonic() + interval_s
        handoff: queue.Queue[list[tuple[Inbound, ReceivedMessage]]] = queue.Queue(maxsize=1)
        halt = threading.Event()  # ours, so the caller's event is only ever read
        failures: list[BaseException] = []
        writer = threading.Thread(
            target=self._write_loop, args=(handoff, halt, failures), name="ingest-writer"
        )
        writer.start()
        try:
            while not stop.is_set() and writer.is_alive():
                if self.retire and self._drained():
                    self.retired = True
                    log.info(
                        "session of %s drained: %d messages written; retiring it",
                        self.client_id,
                        self._settled,
                    )
                    break
                batch = self._collect()
                while batch and not stop.is_set() and writer.is_alive():
                    try:
                        handoff.put(batch, timeout=_IDLE_WAIT_S)
                        break
                    except queue.Full:
                        continue
                if time.monotonic() >= next_summary:
                    log.info("%s", summary.line(interval_s))
                    next_summary = time.monotonic() + interval_s
        finally:
            halt.set()  # the writer finishes its batch; what waits in `handoff` comes back
            writer.join()
        if failures:
            raise failures[0]

    def _write_loop(
        self,
        handoff: queue.Queue[list[tuple[Inbound, ReceivedMessage]]],
        halt: threading.Event,
        failures: list[BaseException],
    ) -> None:
        """The writer thread: commit each batch, then acknowledge its messages."""
        try:
            with _Database(self.database_url) as database:
                while not halt.is_set():
                    try:
                        batch = handoff.get(timeout=_IDLE_WAIT_S)
                    except queue.Empty:
                        continue
                    if not self._commit(database, batch, halt):
                        return
                    self._ack(batch)
                    self._settled += len(batch)
        except BaseException as exc:
            log.exception("ingest writer failed")
            failures.append(exc)

    def _drained(self) -> bool:
        """Retire mode: unsubscribed, all received written, and the broker has gone quiet."""
        return (
            self.subscribed.is_set()
            and self._settled == self.metrics.received
            and time.monotonic() - self._last_message_mono >= _RETIRE_QUIET_S
        )

    def _collect(self) -> list[tuple[Inbound, ReceivedMessage]]:
        """One batch: until `batch_rows` rows or `batch_ms` after its first message."""
        ingest = self.settings.ingest
        taken = self._inbox.take(_TAKE_MAX, _IDLE_WAIT_S)
        if not taken:
            return []
        deadline = taken[0].received_mono + ingest.batch_ms / 1000
        batch: list[tuple[Inbound, ReceivedMessage]] = []
        rows = 0
        while True:
            now = datetime.now(UTC)
            for item in taken:
                decoded = self._decode(item, now)
                batch.append((item, ReceivedMessage(item.topic, item.payload, decoded)))
                if isinstance(decoded, DecodedMessage):
                    rows += max(1, len(decoded.readings) + len(decoded.events))
                else:
                    rows += 1  # a rejected_input row
            remaining_s = deadline - time.monotonic()
            if rows >= ingest.batch_rows or remaining_s <= 0:
                return batch
            # sleep until the batch can fill up or its time is up, not message by message
            need = min(_TAKE_MAX, ingest.batch_rows - rows)
            taken = self._inbox.take(need, remaining_s, at_least=need)
            if not taken:
                return batch

    def _decode(self, item: Inbound, now: datetime) -> DecodedMessage | PayloadError:
        ingest = self.settings.ingest
        try:
            return decode_message(
                self.settings.mqtt.topic_prefix,
                item.topic,
                item.payload,
                now=now,
                max_payload_bytes=ingest.max_payload_bytes,
                future_tolerance_s=ingest.future_tolerance_s,
                max_age_s=self._max_age_s,
            )
        except PayloadError as exc:
            return exc

    def _commit(
        self, database: _Database, batch: list[tuple[Inbound, ReceivedMessage]], stop: threading.Event
    ) -> bool:
        """Write the batch, waiting out database outages; False if stopped first."""
        ingest = self.settings.ingest
        received = [r for _, r in batch]
        attempt = 0
        down_since: float | None = None
        while True:
            try:
                conn = database.connection()
                self._sync_registry(conn, received)
                started = time.monotonic()
                result = self._write(conn, received)
            except _RETRY as exc:
                database.discard()
                if down_since is None:
                    down_since = time.monotonic()
                    self.metrics.outages += 1
                    log.error(
                        "database unavailable (%s): holding %d messages unacknowledged, retrying",
                        _one_line(exc),
                        len(batch) + len(self._inbox),
                    )
                else:
                    log.debug("database still unavailable: %s", _one_line(exc))
                self.metrics.database_up = False
            except psycopg.Error as exc:
                # not an outage and not a bad row: a schema or server problem; never drop
                database.discard()
                if down_since is None:
                    down_since = time.monotonic()
                    self.metrics.outages += 1
                    log.error("database refused a batch (%s); retrying", _one_line(exc))
                self.metrics.database_up = False
            else:
                self.metrics.database_up = True
                self.metrics.batches += 1
                self.metrics.batch_seconds.observe(np.array([time.monotonic() - started]))
                if down_since is not None:
                    log.warning(
                        "database back after %.1fs; writing resumed",
                        time.monotonic() - down_since,
                    )
                log.debug(
                    "batch messages=%d water=%d sensor=%d events=%d duplicates=%d rejected=%d",
                    len(batch),
                    result.water,
                    result.sensor,
                    result.events,
                    result.duplicates,
                    result.rejected,
                )
                return True
            delay_s = min(ingest.retry_max_s, ingest.retry_min_s * 2 ** min(attempt, 30))
            attempt += 1
            if stop.wait(random.uniform(delay_s / 2, delay_s)):
                return False

    def _sync_registry(self, conn: psycopg.Connection, received: list[ReceivedMessage]) -> None:
        now_mono = time.monotonic()
        cache = self._registry
        if cache.refresh_due(now_mono):
            devices, gateways = load_registry(conn)
            cache.replace(devices, gateways, now_mono)
            log.debug("registry loaded: %d devices, %d gateways", len(devices), len(gateways))
        claims = [
            (r.decoded.gateway_id, r.decoded.device_id)
            for r in received
            if isinstance(r.decoded, DecodedMessage)
        ]
        device_ids, gateway_ids = cache.stale_ids(claims, now_mono)
        if device_ids or gateway_ids:
            found_devices, found_gateways = look_up(conn, device_ids, gateway_ids)
            cache.merge(device_ids, found_devices, gateway_ids, found_gateways, now_mono)

    def _write(self, conn: psycopg.Connection, received: list[ReceivedMessage]) -> WriteResult:
        """Write these messages; a row the database refuses is found by halving, and kept."""
        try:
            return self._write_once(conn, received)
        except _REFUSED as exc:
            if _missing_partition(exc) and self._add_partitions(conn):
                return self._write(conn, received)
            if len(received) > 1:
                half = len(received) // 2
                result = self._write(conn, received[:half])
                result.add(self._write(conn, received[half:]))
                return result
            log.warning("database refused a message on %s: %s", received[0].topic, exc)
            refused = PayloadError(reasons.STORAGE_REFUSED, f"{exc.sqlstate}: {_one_line(exc)}"[:500])
            return self._write_once(conn, [ReceivedMessage(received[0].topic, received[0].payload, refused)])

    def _write_once(self, conn: psycopg.Connection, received: list[ReceivedMessage]) -> WriteResult:
        ingest = self.settings.ingest
        plan = plan_batch(
            received,
            self._registry.devices,
            self._registry.gateways,
            topic_prefix=self.settings.mqtt.topic_prefix,
            now=datetime.now(UTC),
            keep_bytes=ingest.rejected_keep_bytes,
        )
        now_mono = time.monotonic()
        devices_seen = self._seen.due(plan.devices_seen, now_mono)
        gateways_seen = self._gateways_due(plan, now_mono)
        result = write_plan(
            conn,
            plan,
            devices_seen=devices_seen,
            gateways_seen=gateways_seen,
            away_s=ingest.away_default_h * 3600,
        )
        self._seen.written(devices_seen, now_mono)
        for gateway_id, _ in gateways_seen:
            self._gateways_written[gateway_id] = now_mono
        self._count(plan, result)
        return result

    def _gateways_due(self, plan: BatchPlan, now_mono: float) -> list[tuple[str, bool | None]]:
        resolution_s = self.settings.ingest.last_seen_resolution_s
        return sorted(
            (gateway_id, online)
            for gateway_id, online in plan.gateways_seen.items()
            if online is not None
            or now_mono - self._gateways_written.get(gateway_id, -np.inf) >= resolution_s
        )

    def _count(self, plan: BatchPlan, result: WriteResult) -> None:
        m = self.metrics
        m.stored["water_reading"] += result.water
        m.stored["sensor_reading"] += result.sensor
        m.stored["device_event"] += result.events
        m.duplicates += result.duplicates
        for row in plan.rejected:
            m.rejected[row[3]] += 1
        if plan.accepted_ts:
            m.lag_seconds.observe(time.time() - np.asarray(plan.accepted_ts))
        if result.residents_updated:
            log.info("away status updated for residents %s", ", ".join(result.residents_updated))

    def _add_partitions(self, conn: psycopg.Connection) -> bool:
        """Create missing native partitions (maintenance has not run lately)."""
        from lovekey.storage.maintenance import ensure_partitions
        from lovekey.storage.migrate import Layout, recorded_layout

        if recorded_layout(conn) is not Layout.NATIVE:
            return False
        created = ensure_partitions(conn, self.settings.storage)
        if created:
            log.warning("created missing partitions %s (is `lovekey maintain` running?)", ", ".join(created))
        return bool(created)

    def _ack(self, batch: list[tuple[Inbound, ReceivedMessage]]) -> None:
        client = self._client
        assert client is not None, "run() needs the ingester entered (with Ingester(...))"
        acked = 0
        with self._lock:
            generation = self._generation
            for item, _ in batch:
                if item.qos and item.generation == generation:
                    client.ack(item.mid, item.qos)
                    acked += 1
        self.metrics.acked += acked


def _missing_partition(exc: psycopg.Error) -> bool:
    return exc.sqlstate == "23514" and "no partition" in str(exc)


def _one_line(exc: BaseException) -> str:
    # storage.connect already masks passwords in the URLs its errors mention
    return " ".join(str(exc).split())
