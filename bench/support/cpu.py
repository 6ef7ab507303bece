"""How busy the whole machine was during a burst: is a latency target out of reach because
every core was already working (Linux, /proc/stat)?

A burst of N notifications whose p99 must be under T seconds on C cores can use at most
C * T seconds of CPU, all processes together (worker, database, the stand-in provider, the
benchmark), before its 99th percentile arrives. `MachineCpu` samples the machine's busy time
while a round runs; `BurstCpu` reads, for one round, how busy the cores were from the commit
to the p99 arrival and how much CPU each notification took in that span. A round that kept
the cores nearly always busy is bound by CPU: only less work per notification (or more
cores) brings its p99 down, and `budget_ms` says how little it must be.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass
from types import TracebackType

import numpy as np

SAMPLE_S = 0.01
# /proc/stat's cpu line: user nice system idle iowait irq softirq steal (guest is inside user)
_WORK_FIELDS = (0, 1, 2, 5, 6)
_STEAL = 7


def machine_busy_s() -> tuple[float, float] | None:
    """CPU seconds all cores have spent working since boot, and seconds the hypervisor gave
    to other guests while this one wanted to run (steal: capacity lost, not work); None off
    Linux."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(f) for f in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return sum(fields[i] for i in _WORK_FIELDS) / tick, fields[_STEAL] / tick


@dataclass(frozen=True, slots=True)
class BurstCpu:
    busy_share: float  # of all cores, from the commit to the p99 arrival: work and steal
    steal_share: float  # ... of it taken by the hypervisor for other guests
    ms_per_notification: float  # CPU work of the whole machine until p99, per notification
    budget_ms: float  # what each notification may cost for a p99 of 1 s on these cores

    def text(self) -> str:
        return (
            f"machine CPU {self.busy_share:.0%} busy from commit to p99"
            f" ({self.steal_share:.0%} stolen by the host),"
            f" {self.ms_per_notification:.2f} ms of work a notification"
            f" (a p99 of 1 s on {os.cpu_count()} CPUs allows {self.budget_ms:.2f} ms)"
        )


class MachineCpu:
    """`with MachineCpu() as cpu:` samples the machine's busy time every 10 ms."""

    def __init__(self) -> None:
        self._at: list[float] = []
        self._busy: list[float] = []
        self._steal: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-cpu", daemon=True)

    def __enter__(self) -> MachineCpu:
        if machine_busy_s() is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
            self._take()  # the last arrival may come after the last sample

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._take()
            self._stop.wait(SAMPLE_S)

    def _take(self) -> None:
        sample = machine_busy_s()
        if sample is not None:
            self._at.append(time.time())
            self._busy.append(sample[0])
            self._steal.append(sample[1])

    def burst(self, committed: float, latencies_s: np.ndarray) -> BurstCpu | None:
        """The round committed at `committed` (wall clock) with these latencies; None when
        there are too few samples (not Linux, or a span shorter than the sampling)."""
        if len(self._at) < 2:
            return None
        p99_at = committed + float(np.percentile(latencies_s, 99))
        at, busy = np.array(self._at), np.array(self._busy)
        if p99_at - committed < 5 * SAMPLE_S or at[0] > committed or at[-1] < p99_at:
            return None
        used = float(np.interp(p99_at, at, busy) - np.interp(committed, at, busy))
        steal = np.array(self._steal)
        stolen = float(np.interp(p99_at, at, steal) - np.interp(committed, at, steal))
        cores = os.cpu_count() or 1
        span = cores * (p99_at - committed)
        reached = 0.99 * len(latencies_s)
        return BurstCpu(
            busy_share=(used + stolen) / span,
            steal_share=stolen / span,
            ms_per_notification=used * 1000 / reached,
            budget_ms=cores * 1000 / reached,
        )


def burst_figures(machine: MachineCpu, committed: float, latencies_ms: np.ndarray) -> dict[str, float] | None:
    """A round's `BurstCpu` as figures for the report (None: not measured)."""
    burst = machine.burst(committed, latencies_ms / 1000)
    return None if burst is None else asdict(burst)


def machine_text(figures: dict[str, float] | None) -> str:
    return "" if figures is None else "; " + BurstCpu(**figures).text()
