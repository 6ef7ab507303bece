"""The alert state machine, vectorized over subjects, with hysteresis.

Each alert kind has one `RuleState` over its subjects (residents, meters or gateways).
A sweep passes three masks:

- `raise_when`: the alert condition holds now;
- `clear_when`: the subject has *clearly* recovered (a stricter test than "the condition does
  not hold": e.g. 15 L used where the alarm is below 10 L, or half an hour below a rate);
- `hold`: nothing can be said now (no data, resident away): neither raise nor clear. A
  subject for which `raise_when` and `clear_when` both hold is held too, so a sweep with the
  same evidence as the last one never changes its decision.

An idle subject is raised after `raise_after` consecutive sweeps with `raise_when`; an active
one is cleared after `clear_after` consecutive sweeps with `clear_when`. Between the two
tests the state holds, so a value that hovers around a threshold cannot make the alert flap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lovekey.detectors.ring import NEVER

BOOL = npt.NDArray[np.bool_]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Step:
    raised: I64  # subjects that became active in this sweep
    cleared: I64  # subjects that became idle in this sweep


class RuleState:
    """One rule's alert states over its subjects (not `alerts.escalation`'s state of one alert)."""

    def __init__(self, subjects: int, *, raise_after: int = 1, clear_after: int = 1) -> None:
        if raise_after < 1 or clear_after < 1:
            raise ValueError("raise_after and clear_after count sweeps, from 1")
        self.active = np.zeros(subjects, dtype=np.bool_)
        self.raise_streak = np.zeros(subjects, dtype=np.int32)
        self.clear_streak = np.zeros(subjects, dtype=np.int32)
        self.raised_at = np.full(subjects, NEVER, dtype=np.int64)  # evidence time at raise
        self.since = np.full(subjects, NEVER, dtype=np.int64)  # condition began
        # a person resolved this subject's alert at this time: a condition that began before
        # then is the episode they dealt with, and is not raised again
        self.handled_until = np.full(subjects, NEVER, dtype=np.int64)
        self.raise_after = raise_after
        self.clear_after = clear_after

    def step(self, raise_when: BOOL, clear_when: BOOL, hold: BOOL | None = None) -> Step:
        # both at once is contradictory evidence: acting on it would raise an idle subject
        # and clear an active one, so the same data would flip the state on every sweep
        hold = raise_when & clear_when if hold is None else hold | (raise_when & clear_when)
        raise_when = raise_when & ~hold
        clear_when = clear_when & ~hold
        if self.raise_after == 1 and self.clear_after == 1:  # no streaks to keep
            raised = np.flatnonzero(raise_when & ~self.active).astype(np.int64)
            cleared = np.flatnonzero(clear_when & self.active).astype(np.int64)
            self.active[raised] = True
            self.active[cleared] = False
            return Step(raised, cleared)
        self.raise_streak = np.where(raise_when & ~self.active, self.raise_streak + 1, 0).astype(np.int32)
        self.clear_streak = np.where(clear_when & self.active, self.clear_streak + 1, 0).astype(np.int32)
        raised = np.flatnonzero(self.raise_streak >= self.raise_after)
        cleared = np.flatnonzero(self.clear_streak >= self.clear_after)
        self.active[raised] = True
        self.active[cleared] = False
        self.raise_streak[raised] = 0
        self.clear_streak[cleared] = 0
        return Step(raised.astype(np.int64), cleared.astype(np.int64))

    def force_clear(self, subjects: BOOL) -> I64:
        """Make active subjects idle at once (e.g. the resident is now away)."""
        cleared = np.flatnonzero(subjects & self.active).astype(np.int64)
        self.active[cleared] = False
        self.raise_streak[cleared] = 0
        self.clear_streak[cleared] = 0
        return cleared

    def handled(self, subjects: I64, resolved_at_s: I64) -> None:
        """A person resolved these subjects' alerts (after a restart: from the database)."""
        np.maximum.at(self.handled_until, subjects, resolved_at_s)

    def restore(self, subjects: I64, since_s: I64, raised_at_s: I64) -> None:
        """Mark subjects active from alerts already open in the database (after a restart)."""
        self.active[subjects] = True
        self.since[subjects] = since_s
        self.raised_at[subjects] = raised_at_s
