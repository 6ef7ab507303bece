"""The door "going-out reminder" (温馨电子外出提示器): when it senses someone at the door.

Installed inside beside the door (with the smoke and gas alarms), it senses a person there
and speaks a reminder (keys, gas, stove). LoveKey reads each trigger as "someone was up and
moving at the door". `DoorModel.passages` draws a household's triggers from the ground truth:

- leaving and coming back: the start and the end of a day out or an absence (announced or
  not) are a passage each;
- visitors: the resident opens the door to them (in and out), `visitors_per_day` on days at
  home; never while the resident lies on the floor (nobody opens);
- false triggers: a draught, a pet, a neighbour's shadow through the gap: `false_per_day`,
  at any time, an incident included (what makes a passage weak evidence);
- misses: each real passage is not sensed with `miss_rate`; `dead_share` of the reminders
  have a dead battery for the whole span and sense nothing.

`share` of the households have one (the rest are water-only, scored apart). These figures are
assumptions: no published rate exists for these devices; they are set so that a passage is
common but neither certain nor clean, and are reported with every evaluation.

Pure and deterministic: drawn from (seed, resident), whatever order residents are asked in.
The ordinary errands of the water model are not in the ground truth, so they make no
passages here: the evaluation sees fewer passages than a real household would make.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DAY_S = 86400
# the truth kinds that start with leaving home and end with coming back
OUTING_KINDS = frozenset({"day_out", "planned_absence", "unannounced_absence"})
DOWN_KINDS = frozenset({"no_use"})


@dataclass(frozen=True, slots=True)
class DoorModel:
    seed: int
    share: float = 0.5
    miss_rate: float = 0.10
    visitors_per_day: float = 0.3
    false_per_day: float = 0.05
    dead_share: float = 0.05

    def _rng(self, *parts: object) -> np.random.Generator:
        text = ":".join(str(p) for p in (self.seed, "door", *parts)).encode()
        return np.random.default_rng(int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big"))

    def has_reminder(self, resident_id: str) -> bool:
        return bool(self._rng("has", resident_id).random() < self.share)

    def passages(
        self, resident_id: str, spans: Sequence[tuple[str, int, int]], start_s: int, end_s: int
    ) -> list[int]:
        """The times (epoch s) the resident's reminder triggers in [start_s, end_s), sorted;
        `spans`: their truth lines (kind, start, end) of `OUTING_KINDS` and `DOWN_KINDS`."""
        if not self.has_reminder(resident_id):
            return []
        rng = self._rng("passages", resident_id)
        if rng.random() < self.dead_share:
            return []
        down = [(a, b) for kind, a, b in spans if kind in DOWN_KINDS]
        out_spans = [(a, b) for kind, a, b in spans if kind in OUTING_KINDS]
        times: list[int] = []
        for a, b in out_spans:  # leaving, coming back
            times += [t for t in (a, b) if start_s <= t < end_s and rng.random() >= self.miss_rate]
        days = max(1, (end_s - start_s) // DAY_S)
        # visitors, at waking hours (09:00-20:00 at UTC+8 is 01:00-12:00 UTC), in and out
        for _ in range(int(rng.poisson(self.visitors_per_day * days))):
            day = int(rng.integers(0, days))
            at = start_s + day * DAY_S - start_s % DAY_S + int(rng.uniform(1, 12) * 3600)
            stay = int(rng.uniform(0.2, 1.5) * 3600)
            if _inside(at, down) or _inside(at, out_spans):
                continue  # nobody at home opens the door
            times += [t for t in (at, at + stay) if start_s <= t < end_s and rng.random() >= self.miss_rate]
        for _ in range(int(rng.poisson(self.false_per_day * days))):
            times.append(int(rng.integers(start_s, end_s)))
        return sorted(times)


def _inside(t: int, spans: Sequence[tuple[int, int]]) -> bool:
    return any(a <= t < b for a, b in spans)


def door_events(
    model: DoorModel,
    residents: Sequence[str],
    spans: Mapping[str, Sequence[tuple[str, int, int]]],
    start_s: int,
    end_s: int,
) -> list[tuple[str, int]]:
    """(resident, time) of every trigger of every household's reminder, by time."""
    out = [(r, t) for r in residents for t in model.passages(r, spans.get(r, ()), start_s, end_s)]
    return sorted(out, key=lambda x: x[1])
