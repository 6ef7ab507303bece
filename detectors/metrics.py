"""What one detector process counts, exported to Prometheus when asked.

Plain attributes written by the sweep thread and the event watcher's thread (each writes its
own), read at scrape time by a collector of our own in a registry of our own, as
`ingest.metrics` does. Labels are alert kinds only: never a resident, device or gateway (one
series per home would be a cardinality problem and a privacy one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lovekey.ingest.metrics import BulkHistogram

# a district's sweep takes tens of milliseconds; a city shard's, seconds
SWEEP_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(slots=True)
class DetectMetrics:
    sweeps: int = 0  # sweeps that committed
    sweep_failures: int = 0  # sweeps that failed (state rebuilt on the next one)
    sweep_seconds: BulkHistogram = field(default_factory=lambda: BulkHistogram(SWEEP_BUCKETS_S))
    last_sweep_unix_s: float = 0.0  # end of the last sweep that committed (0: none yet)
    meters: int = 0  # water meters this shard watches
    meters_silent: int = 0  # of those, currently in the meter_silent state
    raised: Counter[str] = field(default_factory=Counter)  # alerts raised, by kind
    cleared: Counter[str] = field(default_factory=Counter)  # alerts cleared, by kind

    def count_changes(self, changes: Iterable[tuple[str, str]]) -> None:
        """Count (kind, action) pairs; action is 'raise' or 'clear'."""
        for kind, action in changes:
            (self.raised if action == "raise" else self.cleared)[str(kind)] += 1

    def observe_sweep(self, seconds: float, *, at_unix_s: float, meters: int, meters_silent: int) -> None:
        self.sweep_seconds.observe(np.array([seconds]))
        self.sweeps += 1
        self.last_sweep_unix_s = at_unix_s
        self.meters, self.meters_silent = meters, meters_silent

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return registry


class _Collector:
    def __init__(self, metrics: DetectMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield CounterMetricFamily("lovekey_detect_sweeps", "detector sweeps committed", value=m.sweeps)
        yield CounterMetricFamily(
            "lovekey_detect_sweep_failures", "detector sweeps that failed", value=m.sweep_failures
        )
        yield m.sweep_seconds.family(
            "lovekey_detect_sweep_seconds", "time to read, evaluate and commit a sweep"
        )
        yield GaugeMetricFamily(
            "lovekey_detect_last_sweep_timestamp_seconds",
            "Unix time the last successful sweep ended (0: none yet)",
            value=m.last_sweep_unix_s,
        )
        yield GaugeMetricFamily("lovekey_detect_meters", "water meters this detector watches", value=m.meters)
        yield GaugeMetricFamily(
            "lovekey_detect_meters_silent", "water meters currently silent (no data)", value=m.meters_silent
        )
        for name, counts, doc in (
            ("lovekey_detect_alerts_raised", m.raised, "alerts raised, by kind"),
            ("lovekey_detect_alerts_cleared", m.cleared, "alerts cleared, by kind"),
        ):
            family = CounterMetricFamily(name, doc, labels=["kind"])
            for kind, count in sorted(counts.items()):
                family.add_metric([kind], count)
            yield family
