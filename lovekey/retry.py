"""One back-off for every retry loop: doubling, capped, with full-range jitter.

`Backoff` is a small value with no clock and no sleeping of its own: a loop asks it how long
to wait (`next_delay_s()`), waits however suits it (`stop.wait(...)`, `time.sleep`,
`asyncio.sleep`), and calls `reset()` once the thing it waits for works again. Jitter spreads
the delays over [delay/2, delay], so a fleet of processes that lost the database together does
not come back in lockstep. Pass a seeded `random.Random` to make the sequence reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays of first_s, 2*first_s, 4*first_s ... up to max_s, each jittered down to half."""

    first_s: float = 0.5
    max_s: float = 30.0
    jitter: bool = True
    rng: random.Random = field(default_factory=random.Random, repr=False)
    failures: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s:
            raise ValueError(f"need 0 < first_s <= max_s, got {self.first_s} and {self.max_s}")

    @property
    def ceiling_s(self) -> float:
        """The un-jittered delay the next failure would get."""
        return min(self.max_s, self.first_s * 2.0 ** min(self.failures, 60))

    def next_delay_s(self) -> float:
        """Record one more failure and say how long to wait before the next try."""
        delay = self.ceiling_s
        self.failures += 1
        return self.rng.uniform(delay / 2, delay) if self.jitter else delay

    def reset(self) -> None:
        """The operation worked: the next failure starts from first_s again."""
        self.failures = 0
