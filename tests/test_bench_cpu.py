"""The benchmarks' reading of how busy the machine was during a burst (bench/support/cpu.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lovekey.bench.support.cpu import MachineCpu, burst_figures, machine_busy_s


def _sampled(at: list[float], busy: list[float], steal: list[float] | None = None) -> MachineCpu:
    machine = MachineCpu()
    machine._at, machine._busy = at, busy
    machine._steal = steal if steal is not None else [0.0] * len(at)
    return machine


def test_a_burst_is_read_from_the_commit_to_the_p99_arrival() -> None:
    cores = os.cpu_count() or 1
    # the machine works `cores * 0.5` CPU-seconds a second; 100 notifications, p99 at 2 s
    at = [100.0 + 0.1 * i for i in range(40)]
    busy = [50.0 + cores * 0.5 * 0.1 * i for i in range(40)]
    steal = [7.0 + cores * 0.1 * 0.1 * i for i in range(40)]  # and the host takes a tenth
    latencies = np.linspace(0.1, 2.0, 100)
    p99 = float(np.percentile(latencies, 99))
    burst = _sampled(at, busy, steal).burst(100.5, latencies)
    assert burst is not None
    assert burst.busy_share == pytest.approx(0.6)
    assert burst.steal_share == pytest.approx(0.1)
    assert burst.ms_per_notification == pytest.approx(cores * 0.5 * p99 * 1000 / 99)
    assert burst.budget_ms == pytest.approx(cores * 1000 / 99)


def test_a_round_outside_the_samples_is_not_measured() -> None:
    machine = _sampled([10.0, 10.5], [1.0, 2.0])
    assert machine.burst(10.2, np.array([0.1, 0.9])) is None  # p99 after the last sample
    assert burst_figures(MachineCpu(), 10.0, np.array([100.0])) is None  # no samples at all


def test_the_sampler_reads_this_machine() -> None:
    if machine_busy_s() is None:
        pytest.skip("no /proc/stat here")  # the benchmarks then print no machine figures
    with MachineCpu() as machine:
        sum(i * i for i in range(2_000_000))  # some work while it samples
    assert len(machine._at) >= 2
    assert all(b >= a for a, b in zip(machine._busy, machine._busy[1:], strict=False))
    assert machine._busy[-1] > machine._busy[0]  # the work above was counted
