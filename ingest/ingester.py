"""The ingester: an MQTT session and a batch pipeline, composed; committed, then acknowledged.

Threads and what they own:

- paho's network thread (`ingest.session`) reads the socket and puts each message in the
  `Inbox` (`ingest.inbox`), which is bounded by count and bytes.
- the thread that calls `Ingester.run()` collects a batch from the inbox and decodes it
  (`ingest.pipeline`), then hands it over (one batch at most waits).
- the `ingest-writer` thread commits it (`BatchPipeline.commit`) and only then asks the
  session to acknowledge its messages. Decoding the next batch overlaps the database's work
  on this one. A crash at any instant loses nothing: what was not acknowledged comes back.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from contextlib import ExitStack
from types import TracebackType
from typing import Self

from lovekey.config import Settings
from lovekey.errors import SettingsError
from lovekey.ingest.inbox import Inbox
from lovekey.ingest.metrics import IngestMetrics, SummaryLog, serving
from lovekey.ingest.mqtt import BrokerAddress, TlsFiles
from lovekey.ingest.pipeline import IDLE_WAIT_S, TAKE_MAX, Batch, BatchPipeline, Database
from lovekey.ingest.session import MqttSession
from lovekey.storage.health import database_check

log = logging.getLogger(__name__)

# Retiring a session: it is drained once nothing has arrived for this long.
_RETIRE_QUIET_S = 3.0


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
        self.broker = BrokerAddress.parse(mqtt_url, TlsFiles.from_settings(settings.mqtt))
        if retire and not self.broker.mqtt5:
            raise SettingsError("retiring a session needs MQTT 5")
        self.shared_group = shared_group
        self.retire = retire
        base = settings.mqtt.client_id
        self.client_id = client_id or (
            f"{base}-{shared_group}-{socket.gethostname()}" if shared_group else base
        )
        # room for everything the broker may have in flight plus one take, so with QoS 1
        # the inbox is never what stops paho's thread
        inbox = Inbox(
            max_messages=settings.mqtt.receive_maximum + TAKE_MAX,
            max_bytes=settings.ingest.max_pending_bytes,
        )
        self.metrics = IngestMetrics(pending=inbox.__len__)
        self.pipeline = BatchPipeline(settings, inbox, self.metrics, remember_levels=shared_group is None)
        self.session = MqttSession(
            settings.mqtt,
            self.broker,
            self.client_id,
            inbox=inbox,
            metrics=self.metrics,
            shared_group=shared_group,
            retire=retire,
            source_filters=tuple(source.filters for source in self.pipeline.sources),
        )
        self.subscribed = self.session.subscribed
        self.retired = False  # retire mode: everything queued was written
        self._settled = 0  # messages whose batch was committed and acknowledged
        self._stack = ExitStack()
        self.metrics_port: int | None = None  # bound while entered, when metrics_port is set

    def topics(self) -> list[str]:
        return self.session.topics()

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        ingest = self.settings.ingest
        with ExitStack() as stack:
            if ingest.metrics_port is not None:
                checks = {"database": database_check(self.database_url), "broker": self.session.connected}
                self.metrics_port = stack.enter_context(
                    serving(self.metrics, host=ingest.metrics_host, port=ingest.metrics_port, checks=checks)
                )
            stack.enter_context(self.session)
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

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
        handoff: queue.Queue[Batch] = queue.Queue(maxsize=1)
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
                    self.session.end_session = True  # nothing left in it: let the broker forget it
                    log.info(
                        "session of %s drained: %d messages written; retiring it",
                        self.client_id,
                        self._settled,
                    )
                    break
                batch = self.pipeline.collect()
                # wait for the writer in short steps, so a stop or a dead writer is noticed
                while batch and not stop.is_set() and writer.is_alive():
                    try:
                        handoff.put(batch, timeout=IDLE_WAIT_S)
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
        handoff: queue.Queue[Batch],
        halt: threading.Event,
        failures: list[BaseException],
    ) -> None:
        """The writer thread: commit each batch, then acknowledge its messages."""
        try:
            with Database(self.database_url) as database:
                while not halt.is_set():
                    try:
                        batch = handoff.get(timeout=IDLE_WAIT_S)
                    except queue.Empty:
                        continue
                    committed = self.pipeline.commit(database, batch, halt)
                    if committed is None:  # stopped during an outage: nothing acknowledged
                        return
                    self.session.ack(committed)
                    self._settled += len(committed)
        except BaseException as exc:
            # handed to run(), which re-raises it in the caller's thread
            log.exception("ingest writer failed")
            failures.append(exc)

    def _drained(self) -> bool:
        """Retire mode: unsubscribed, all received written, and the broker has gone quiet."""
        return (
            self.subscribed.is_set()
            and self._settled == self.metrics.received
            and time.monotonic() - self.session.last_message_mono >= _RETIRE_QUIET_S
        )
