"""The inbox between paho's network thread and the batch pipeline: bounded, one wake-up a batch.

The MQTT session (`ingest.session`) puts each received message here from paho's thread; the
pipeline (`ingest.pipeline`) takes them in batches from its own. Nothing here knows MQTT or
the database, so it is tested on its own.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class Inbound:
    """One message as paho handed it over: not yet decoded, not yet acknowledged."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int  # connection it arrived on; acks go only to that connection
    received_mono: float
    source: int = 0  # which of the pipeline's MQTT sources (`ingest.sources`); 0: native


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
