"""What one ingester counts, as plain numbers, exported to Prometheus when asked.

Each counter is a plain attribute written by one thread (no locks on the hot path):
`received` by paho's network thread (`ingest.session`), the rest by the writer thread
(`ingest.pipeline`, and `acked` after the session acknowledged). A collector of our own
reads them at scrape time, in a registry of its own, so several ingesters in one
process (tests, `lovekey run`) never collide in a global registry.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from lovekey.storage import health
from lovekey.storage.health import Check

log = logging.getLogger(__name__)

BATCH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS_S = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    21600.0,
    86400.0,
)


class BulkHistogram:
    """A Prometheus-style histogram fed a whole numpy array at a time."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.edges = np.asarray(buckets, dtype=np.float64)
        self.counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # last one: +Inf
        self.total = 0.0

    def observe(self, values: np.ndarray) -> None:
        if values.size:
            slots = np.searchsorted(self.edges, values, side="left")
            self.counts += np.bincount(slots, minlength=self.counts.size)
            self.total += float(values.sum())

    def snapshot(self) -> np.ndarray:
        return self.counts.copy()

    def quantile(self, q: float, since: np.ndarray | None = None) -> float | None:
        """The upper bound of the bucket holding quantile `q` (of counts since `since`)."""
        counts = self.counts - since if since is not None else self.counts
        n = int(counts.sum())
        if n == 0:
            return None
        slot = int(np.searchsorted(np.cumsum(counts), q * n, side="left"))
        return float(self.edges[slot]) if slot < self.edges.size else float("inf")

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative = np.cumsum(self.counts)
        buckets = [(f"{edge:g}", int(c)) for edge, c in zip(self.edges, cumulative, strict=False)]
        buckets.append(("+Inf", int(cumulative[-1])))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


@dataclass(slots=True)
class IngestMetrics:
    received: int = 0  # messages taken from the broker
    acked: int = 0  # messages acknowledged after their commit
    stored: Counter[str] = field(default_factory=Counter)  # rows inserted, by table
    duplicates: int = 0  # rows already stored (redelivery, repeats)
    rejected: Counter[str] = field(default_factory=Counter)  # rejected_input rows, by reason
    batches: int = 0
    outages: int = 0
    database_up: bool = False
    batch_seconds: BulkHistogram = field(default_factory=lambda: BulkHistogram(BATCH_BUCKETS_S))
    lag_seconds: BulkHistogram = field(default_factory=lambda: BulkHistogram(LAG_BUCKETS_S))
    pending: Callable[[], int] = lambda: 0

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return registry


@contextmanager
def serving(metrics: IngestMetrics, *, host: str, port: int, checks: Mapping[str, Check]) -> Iterator[int]:
    """Serve `metrics` on http://host:port/metrics, with /healthz and /readyz answered by
    `checks`, for the block; yields the bound port."""
    with health.serving(metrics.registry(), host=host, port=port, checks=checks, name="ingest") as bound:
        yield bound


class _Collector:
    def __init__(self, metrics: IngestMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield CounterMetricFamily(
            "lovekey_ingest_received_messages", "MQTT messages received", value=m.received
        )
        yield CounterMetricFamily(
            "lovekey_ingest_acked_messages", "messages acknowledged after commit", value=m.acked
        )
        stored = CounterMetricFamily(
            "lovekey_ingest_stored_rows", "rows inserted, by table", labels=["table"]
        )
        for table, count in sorted(m.stored.items()):
            stored.add_metric([table], count)
        yield stored
        yield CounterMetricFamily(
            "lovekey_ingest_duplicate_rows", "rows that were already stored", value=m.duplicates
        )
        rejected = CounterMetricFamily(
            "lovekey_ingest_rejected", "rejected inputs, by reason", labels=["reason"]
        )
        for reason, count in sorted(m.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield CounterMetricFamily("lovekey_ingest_batches", "batches committed", value=m.batches)
        yield CounterMetricFamily(
            "lovekey_ingest_database_outages",
            "times the database became unreachable",
            value=m.outages,
        )
        yield GaugeMetricFamily(
            "lovekey_ingest_database_up", "1 while the database answers", value=int(m.database_up)
        )
        yield GaugeMetricFamily(
            "lovekey_ingest_pending_messages", "received, not yet committed", value=m.pending()
        )
        yield m.batch_seconds.family("lovekey_ingest_batch_seconds", "time to write and commit one batch")
        yield m.lag_seconds.family(
            "lovekey_ingest_lag_seconds", "commit time minus the reading's own timestamp"
        )


class SummaryLog:
    """A one-line summary of what changed since the previous line."""

    def __init__(self, metrics: IngestMetrics) -> None:
        self.metrics = metrics
        self._last = self._take()

    def _take(self) -> tuple[int, int, int, int, Counter[str], np.ndarray, np.ndarray]:
        m = self.metrics
        return (
            m.received,
            sum(m.stored.values()),
            m.duplicates,
            m.batches,
            m.rejected.copy(),
            m.batch_seconds.snapshot(),
            m.lag_seconds.snapshot(),
        )

    def line(self, interval_s: float) -> str:
        received, stored, duplicates, batches, rejected, batch_counts, lag_counts = self._last
        now = self._take()
        self._last = now
        m = self.metrics
        bad = now[4] - rejected
        reasons = ",".join(f"{k}={v}" for k, v in sorted(bad.items())) or "none"
        batch_p99 = m.batch_seconds.quantile(0.99, batch_counts)
        lag_p50 = m.lag_seconds.quantile(0.5, lag_counts)
        return (
            f"ingest summary: received={now[0] - received} stored={now[1] - stored}"
            f" ({(now[1] - stored) / interval_s:.0f}/s) duplicates={now[2] - duplicates}"
            f" rejected={sum(bad.values())} [{reasons}] batches={now[3] - batches}"
            f" batch_p99<={_fmt(batch_p99)} lag_p50<={_fmt(lag_p50)}"
            f" pending={m.pending()} database={'up' if m.database_up else 'DOWN'}"
        )


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:g}s"
