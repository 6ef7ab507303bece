"""The ingester's batch pipeline: collect from the inbox, decode, write in one transaction.

`collect` takes messages from the `Inbox` until a batch is full (`batch_rows` rows) or old
(`batch_ms` after its first message) and decodes them with the pure codecs; `commit` checks
them against the in-memory registry (the pure `ingest.batch` core), writes the plan in one
transaction (`ingest.writer`) and hands back the messages that are now safe to acknowledge.
It waits out database outages with `lovekey.retry.Backoff` and never drops a message: a row
the database refuses is found by halving the batch and kept in `rejected_input`; a missing
native partition is created and the write tried again. Nothing here knows MQTT.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Self

import numpy as np
import psycopg

from lovekey.config import Settings
from lovekey.errors import PayloadError, StorageError
from lovekey.ingest import reasons
from lovekey.ingest.batch import BatchPlan, ReceivedMessage, plan_batch
from lovekey.ingest.codecs import DecodeContext, decode_message
from lovekey.ingest.decoded import DecodedMessage
from lovekey.ingest.inbox import Inbound, Inbox
from lovekey.ingest.last_totals import LastTotals
from lovekey.ingest.level_memory import LevelMemory
from lovekey.ingest.metrics import IngestMetrics
from lovekey.ingest.registry_cache import (
    RegistryCache,
    load_external,
    load_registry,
    look_up,
    look_up_external,
)
from lovekey.ingest.seen_memory import SeenMemory
from lovekey.ingest.sources import MqttSource, mqtt_sources
from lovekey.ingest.writer import WriteResult, prepare, write_plan
from lovekey.retry import Backoff
from lovekey.storage import connect

log = logging.getLogger(__name__)

APPLICATION_NAME = "lovekey-ingest"
# Messages taken from the inbox at once while filling a batch.
TAKE_MAX = 2048
# How long a stage waits for work before looking at its stop event again.
IDLE_WAIT_S = 0.25

# Failures that say "the database is not there (or not itself) right now": wait and retry.
_RETRY = (psycopg.OperationalError, psycopg.InterfaceError, StorageError)
# Failures that say "this row is unacceptable": find the message and reject it.
_REFUSED = (psycopg.DataError, psycopg.IntegrityError)


@dataclass(slots=True)
class Batch:
    """Messages written together: as the broker sent them (to acknowledge) and as decoded (to write)."""

    inbound: list[Inbound] = field(default_factory=list)
    received: list[ReceivedMessage] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.inbound)


class Database:
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


class BatchPipeline:
    """Collect (the caller's thread) and commit (the writer's thread) batches from `inbox`.

    The two calls run in different threads on different batches; what they share is the
    inbox (thread-safe) and the metrics (plain counters, each written by one thread).
    """

    def __init__(
        self, settings: Settings, inbox: Inbox, metrics: IngestMetrics, *, remember_levels: bool = True
    ) -> None:
        ingest = settings.ingest
        self.settings = settings
        self.metrics = metrics
        self._inbox = inbox
        # what the ingester reads: the native contract first, then each configured MQTT
        # source (`Inbound.source` is an index into this)
        self.sources: tuple[MqttSource, ...] = mqtt_sources(settings)
        self._registry = RegistryCache(
            refresh_s=ingest.registry_refresh_s, miss_retry_s=ingest.registry_miss_retry_s
        )
        self._seen = SeenMemory(ingest.last_seen_resolution_s)
        # each meter's newest (ts, total), to judge its next reading; loaded on first commit
        self._last_totals = LastTotals(ingest.flow_memory_devices)
        self._last_totals_loaded = False
        # each device's newest committed state per alarm type: unchanged snapshots skip the
        # writer. Not with a shared subscription: another member may commit a newer state of
        # the same device, which this memory would not know
        self._levels = LevelMemory() if remember_levels else None
        self._gateways_written: dict[str, float] = {}
        self._max_age_s = settings.storage.retention_days * 86400.0
        # min(): a first wait configured above the cap used to mean "always the cap"
        self._backoff = Backoff(first_s=min(ingest.retry_min_s, ingest.retry_max_s), max_s=ingest.retry_max_s)

    # -- collecting (the caller's thread) --------------------------------------------------

    def collect(self) -> Batch | None:
        """One batch: until `batch_rows` rows or `batch_ms` after its first message.

        None when nothing arrived for `IDLE_WAIT_S`, so the caller can look at its stop event.
        """
        ingest = self.settings.ingest
        taken = self._inbox.take(TAKE_MAX, IDLE_WAIT_S)
        if not taken:
            return None
        # `batch_ms` counts from the first message's arrival, so time it spent in the
        # inbox while the writer was busy counts too: latency stays bounded under load
        deadline = taken[0].received_mono + ingest.batch_ms / 1000
        batch = Batch()
        rows = 0
        while True:
            # one clock read per take: the future/too-old limits need no finer grain
            now = datetime.now(UTC)
            now_mono = time.monotonic()
            context: DecodeContext | None = None
            sources = self.sources
            for item in taken:
                if item.source:
                    if context is None:
                        context = self._context(now)
                    # a snapshot without a clock of its own (Zigbee2MQTT without last_seen) is
                    # read at its own receipt: two states in one batch must not share a time
                    received = now - timedelta(seconds=now_mono - item.received_mono)
                    item_context = DecodeContext(received, context.latest, context.earliest)
                    decoded = self._adapt(sources[item.source], item, item_context)
                else:
                    decoded = self._decode(item, now)
                batch.received.append(
                    ReceivedMessage(item.topic, item.payload, decoded, sources[item.source].name)
                )
                if isinstance(decoded, DecodedMessage):
                    rows += max(1, len(decoded.readings) + len(decoded.events))
                else:
                    rows += 1  # a rejected_input row
            batch.inbound += taken
            remaining_s = deadline - time.monotonic()
            if rows >= ingest.batch_rows or remaining_s <= 0:
                return batch
            # sleep until the batch can fill up or its time is up, not message by message
            need = min(TAKE_MAX, ingest.batch_rows - rows)
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
            return exc  # kept in rejected_input with its reason, never dropped

    def _context(self, now: datetime) -> DecodeContext:
        tolerance = timedelta(seconds=self.settings.ingest.future_tolerance_s)
        oldest = now - timedelta(seconds=self._max_age_s)
        return DecodeContext(now=now, latest=now + tolerance, earliest=oldest)

    def _adapt(
        self, source: MqttSource, item: Inbound, context: DecodeContext
    ) -> DecodedMessage | PayloadError:
        """A configured source's message, through its adapter (`ingest.sources`)."""
        adapter = source.adapter
        assert adapter is not None  # only the native source (index 0) has none
        limit = self.settings.ingest.max_payload_bytes
        if len(item.payload) > limit:
            return PayloadError(reasons.PAYLOAD_TOO_LARGE, f"{len(item.payload)} bytes > {limit}")
        topic = item.topic
        if source.strip:
            topic = topic[len(source.strip) :]
        try:
            return adapter.decode(topic, item.payload, context)
        except PayloadError as exc:
            return exc  # kept in rejected_input with its reason and source, never dropped

    # -- committing (the writer's thread) --------------------------------------------------

    def commit(self, database: Database, batch: Batch, stop: threading.Event) -> list[Inbound] | None:
        """Write `batch` in one transaction, waiting out database outages.

        Returns the messages now safe to acknowledge; None when `stop` was set before the
        batch could be written (they stay unacknowledged and the broker sends them again).
        """
        down_since: float | None = None
        while True:
            try:
                conn = database.connection()
                self._sync_registry(conn, batch.received)
                started = time.monotonic()
                result = self._write(conn, batch.received)
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
                self._backoff.reset()
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
                return batch.inbound
            # the batch stays in hand and unacknowledged; the broker holds the rest
            if stop.wait(self._backoff.next_delay_s()):
                return None

    def store(self, database: Database, received: list[ReceivedMessage]) -> WriteResult:
        """Write these decoded messages now, in one transaction, and say what was stored.

        For a caller that must answer only once the rows are safe (the HTTP push receiver,
        `lovekey receive`): decode with the source's adapter (`ingest.sources`), wrap each
        message in a `ReceivedMessage` with the source's name, call this, then answer. A
        database outage raises (psycopg.OperationalError, StorageError) for the caller to
        answer "try again"; a row the database refuses is kept in `rejected_input`, as
        always. One caller at a time: the registry cache and the meters' last totals are
        this pipeline's, not thread-safe.
        """
        try:
            conn = database.connection()
            self._sync_registry(conn, received)
            return self._write(conn, received)
        except _RETRY:
            database.discard()
            raise

    def _sync_registry(self, conn: psycopg.Connection, received: list[ReceivedMessage]) -> None:
        """Bring the registry cache up to date for the devices and gateways of this batch."""
        if not self._last_totals_loaded:
            self._load_last_totals(conn)
        now_mono = time.monotonic()
        cache = self._registry
        if cache.refresh_due(now_mono):
            devices, gateways = load_registry(conn)
            cache.replace(devices, gateways, now_mono, load_external(conn))
            log.debug("registry loaded: %d devices, %d gateways", len(devices), len(gateways))
        # a device registered (or moved) since the last load is looked up now, so its
        # first readings are not rejected as unknown for up to `registry_refresh_s`
        claims: list[tuple[str, str | None]] = []
        external: list[tuple[str, str]] = []
        for r in received:
            decoded = r.decoded
            if not isinstance(decoded, DecodedMessage):
                continue
            if decoded.external and decoded.device_id is not None:
                external.append((decoded.gateway_id, decoded.device_id.lower()))
            else:
                claims.append((decoded.gateway_id, decoded.device_id))
        if external and (stale := cache.stale_external(external, now_mono)):
            found = look_up_external(conn, stale)
            cache.merge_external(stale, found, now_mono)
            # the devices found by their external id, as the cache holds devices
            claims += [(gateway_id, device_id) for (gateway_id, _), device_id in found.items()]
        device_ids, gateway_ids = cache.stale_ids(claims, now_mono)
        if device_ids or gateway_ids:
            found_devices, found_gateways = look_up(conn, device_ids, gateway_ids)
            cache.merge(device_ids, found_devices, gateway_ids, found_gateways, now_mono)

    def _load_last_totals(self, conn: psycopg.Connection) -> None:
        """Each recently active meter's newest reading, so a restart judges jumps at once."""
        ingest = self.settings.ingest
        rows = conn.execute(
            """
            SELECT DISTINCT ON (device_key) device_key, extract(epoch FROM ts)::float8,
                   reading_total_l(total_dl, total_l_exact)
            FROM water_reading
            WHERE ts > now() - make_interval(secs => %s) AND device_key < %s
            ORDER BY device_key, ts DESC
            """,
            (ingest.flow_memory_lookback_h * 3600, ingest.flow_memory_devices),
        ).fetchall()
        if rows:
            keys, ts_s, total_l = zip(*rows, strict=True)
            self._last_totals.remember(
                np.array(keys, np.int64), np.array(ts_s, np.float64), np.array(total_l, np.float64)
            )
        self._last_totals_loaded = True
        log.debug("last totals loaded for %d meters", len(rows))

    def _write(self, conn: psycopg.Connection, received: list[ReceivedMessage]) -> WriteResult:
        """Write these messages; a row the database refuses is found by halving, and kept."""
        try:
            return self._write_once(conn, received)
        except _REFUSED as exc:
            # maintenance has not created this month's partition: create it and try again
            if _missing_partition(exc) and self._add_partitions(conn):
                return self._write(conn, received)
            # one bad row fails the whole transaction: split until the one message that
            # holds it is alone, so every other message of the batch is still stored
            if len(received) > 1:
                half = len(received) // 2
                result = self._write(conn, received[:half])
                result.add(self._write(conn, received[half:]))
                return result
            log.warning("database refused a message on %s: %s", received[0].topic, exc)
            refused = PayloadError(reasons.STORAGE_REFUSED, f"{exc.sqlstate}: {_one_line(exc)}"[:500])
            only = received[0]
            return self._write_once(conn, [ReceivedMessage(only.topic, only.payload, refused, only.source)])

    def _write_once(self, conn: psycopg.Connection, received: list[ReceivedMessage]) -> WriteResult:
        ingest = self.settings.ingest
        plan = plan_batch(
            received,
            self._registry.devices,
            self._registry.gateways,
            topic_prefix=self.settings.mqtt.topic_prefix,
            now=datetime.now(UTC),
            keep_bytes=ingest.rejected_keep_bytes,
            max_flow_lpm=ingest.max_flow_lpm,
            last_totals=self._last_totals,
            external=self._registry.external,
        )
        if self._levels is not None:
            plan.levels = self._levels.changes(plan.levels)
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
        # remembered only after the commit: a failed write must write them again
        self._seen.written(devices_seen, now_mono)
        if plan.judged is not None:
            self._last_totals.remember(*plan.judged)
        if self._levels is not None:
            self._levels.committed(plan.levels)
        for gateway_id, _ in gateways_seen:
            self._gateways_written[gateway_id] = now_mono
        self._count(plan, result)
        return result

    def _gateways_due(self, plan: BatchPlan, now_mono: float) -> list[tuple[str, bool | None]]:
        """Gateways whose row to update: every status change, else once per resolution."""
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
        # imported on first use: only a write that met a missing partition needs them
        from lovekey.storage.maintenance import ensure_partitions
        from lovekey.storage.migrate import Layout, recorded_layout

        if recorded_layout(conn) is not Layout.NATIVE:
            return False
        created = ensure_partitions(conn, self.settings.storage)
        if created:
            log.warning("created missing partitions %s (is `lovekey maintain` running?)", ", ".join(created))
        return bool(created)


def _missing_partition(exc: psycopg.Error) -> bool:
    return exc.sqlstate == "23514" and "no partition" in str(exc)


def _one_line(exc: BaseException) -> str:
    # storage.connect already masks passwords in the URLs its errors mention
    return " ".join(str(exc).split())
