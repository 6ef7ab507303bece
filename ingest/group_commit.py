"""The receiver's write path: requests queue their messages, writer threads commit them.

`lovekey receive` (`ingest.http_receiver`) hands each request's messages to `Committer.submit`
with a callback; `receive.committers` writer threads, each with its own connection and its
own `BatchPipeline` (the ingester's: registry checks, plausibility, staged COPY with ON
CONFLICT DO NOTHING, rejected_input, outage retries), take whatever has queued and commit it
in one transaction - a group commit with no timer: requests arriving while a transaction
runs share the next. Each callback is called on the loop once its transaction committed
(True), or when the receiver stopped before it could be (False). Nothing here knows HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lovekey.config import Settings
from lovekey.ingest.batch import ReceivedMessage
from lovekey.ingest.inbox import Inbox
from lovekey.ingest.metrics import IngestMetrics
from lovekey.ingest.pipeline import Batch, BatchPipeline, Database

log = logging.getLogger(__name__)

# How long a writer waits for work before looking at its stop flag again.
IDLE_WAIT_S = 0.25


Settled = Callable[[bool], None]


@dataclass(slots=True)
class Pending:
    """The messages of one request, and what to call (on the loop) once they are committed."""

    messages: list[ReceivedMessage]
    settled: Settled


class Committer:
    """Writes what requests queued, one transaction at a time per writer, and calls each
    request back (on the loop) once its transaction has committed.

    Requests that arrive while a transaction runs are written together in the next: under
    load a commit holds hundreds of requests, with no timer anywhere. `receive.committers`
    writers (threads, each with its own connection and pipeline; one by default, the
    fastest on two shared cores) take turns at the queue.
    """

    def __init__(self, settings: Settings, db_url: str, loop: asyncio.AbstractEventLoop) -> None:
        # the pipeline's inbox is the MQTT ingester's; here requests queue in `_waiting`.
        # A writer may remember alarm states only when it is the only one: another writer may
        # commit a newer state of the same device (as a shared-subscription ingester would)
        writers = settings.receive.committers
        self._pipelines = [
            BatchPipeline(
                settings, Inbox(max_messages=1, max_bytes=1), IngestMetrics(), remember_levels=writers == 1
            )
            for _ in range(writers)
        ]
        self._db_url = db_url
        self._loop = loop
        self._commit_rows = settings.receive.commit_rows
        self._waiting: deque[Pending] = deque()
        self._ready = threading.Condition()
        self._closing = False
        # set when the receiver stops: a commit waiting out a database outage gives up
        self.abandon = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(pipeline,), name=f"lovekey-receive-commit-{n}")
            for n, pipeline in enumerate(self._pipelines)
        ]
        self.commits = 0

    @property
    def database_up(self) -> bool:
        return any(p.metrics.database_up for p in self._pipelines)

    def totals(self) -> tuple[int, int, int]:
        """Rows stored, duplicates and rejected rows, over every writer."""
        stored = sum(sum(p.metrics.stored.values()) for p in self._pipelines)
        duplicates = sum(p.metrics.duplicates for p in self._pipelines)
        rejected = sum(sum(p.metrics.rejected.values()) for p in self._pipelines)
        return stored, duplicates, rejected

    def write_seconds(self) -> tuple[float, float]:
        """Mean seconds a transaction took to write and commit, and its 99th percentile bucket."""
        total = sum(p.metrics.batch_seconds.total for p in self._pipelines)
        count = sum(int(p.metrics.batch_seconds.counts.sum()) for p in self._pipelines)
        p99 = max((p.metrics.batch_seconds.quantile(0.99) or 0.0) for p in self._pipelines)
        return (total / count if count else 0.0), p99

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, messages: list[ReceivedMessage], settled: Settled) -> None:
        """Queue a request's messages; `settled(True)` is called on the loop once they are
        committed, `settled(False)` if the receiver stopped before they could be."""
        with self._ready:
            self._waiting.append(Pending(messages, settled))
            self._ready.notify()

    def close(self) -> None:
        """Write what is queued, then end (call once no request can submit any more)."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _take(self) -> list[Pending] | None:
        """What has queued, up to `commit_rows` rows; None once closed and drained."""
        with self._ready:
            while not self._waiting:
                if self._closing:
                    return None
                self._ready.wait(IDLE_WAIT_S)
            taken: list[Pending] = []
            rows = 0
            while self._waiting and (not taken or rows < self._commit_rows):
                pending = self._waiting.popleft()
                taken.append(pending)
                rows += len(pending.messages)
            return taken

    def _run(self, pipeline: BatchPipeline) -> None:
        with Database(self._db_url) as database:
            while (taken := self._take()) is not None:
                batch = Batch(received=[m for p in taken for m in p.messages])
                try:
                    committed = pipeline.commit(database, batch, self.abandon) is not None
                except Exception:
                    # a fault of ours, not the database's (commit waits those out): these
                    # pushes are answered 503 and sent again; the writer goes on
                    log.exception("a commit of %d pushes failed", len(taken))
                    database.discard()
                    committed = False
                self.commits += 1  # a counter for the log: an update lost to a race is no harm
                # one hand-over to the loop per commit, not one per request
                self._loop.call_soon_threadsafe(_settle, [p.settled for p in taken], committed)


def _settle(callbacks: list[Settled], committed: bool) -> None:
    for settled in callbacks:
        settled(committed)
