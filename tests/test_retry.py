"""The one back-off every retry loop uses."""

from __future__ import annotations

import random

import pytest

from lovekey.retry import Backoff


def test_delays_double_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(first_s=0.5, max_s=4.0, jitter=False)
    assert [backoff.next_delay_s() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_stays_between_half_and_the_full_delay() -> None:
    backoff = Backoff(first_s=1.0, max_s=8.0, rng=random.Random(7))
    for ceiling in (1.0, 2.0, 4.0, 8.0, 8.0):
        delay = backoff.next_delay_s()
        assert ceiling / 2 <= delay <= ceiling


def test_jitter_spreads_processes_that_failed_together() -> None:
    delays = {Backoff(first_s=1.0, max_s=8.0, rng=random.Random(seed)).next_delay_s() for seed in range(20)}
    assert len(delays) == 20


def test_reset_starts_over() -> None:
    backoff = Backoff(first_s=0.1, max_s=10.0, jitter=False)
    for _ in range(5):
        backoff.next_delay_s()
    backoff.reset()
    assert backoff.next_delay_s() == 0.1


@pytest.mark.parametrize(("first_s", "max_s"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_rejects_impossible_bounds(first_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="first_s"):
        Backoff(first_s=first_s, max_s=max_s)
