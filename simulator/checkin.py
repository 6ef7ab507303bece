"""How simulated residents answer a check-in: the resident asked first, before the neighbour.

A check-in (issue 14) calls the resident's phone, calls again 10 minutes later, then sends an
SMS, and waits 10 minutes more; "fine" by key press or reply closes the alert, no answer by
the end of the stage goes on to the love-key holder. `CheckInModel.answer` says what one
resident does when asked at one moment, from the ground truth of what they were doing:

- a resident in a no-use incident (on the floor) never answers;
- a resident out (a day out, an absence) answers only from a mobile they carry;
- a resident at home answers each attempt with a probability that depends on them (hard of
  hearing, or often away from the phone) and on the hour.

Defaults and their sources (the figures quoted in issue 14 from the Seoul and Yongin
programmes; the split of that figure into two kinds of residents is ours):

- Seoul's centre: 17 % of checks met no answer (or a wrong number) at the first attempt, and
  after the whole sequence about 2 % ended in a visit (100,296 checks over 34 months for
  7,459 households, 82 % closed by phone or text, 0.7 % needing a visit); Yongin: 194 alerts,
  116 staff calls, 4 visits. With `hard_to_reach_share` = 0.10 of residents missing an
  attempt with probability 0.6 and the others with 0.12, a first attempt goes unanswered
  0.1 x 0.6 + 0.9 x 0.12 = 16.8 % of the time and all three 0.1 x 0.216 + 0.9 x 0.0017 =
  2.3 %: the two published figures (a single miss rate for everyone gives 0.17^3 = 0.5 % at
  the end, too few: misses cluster on the same people).
- By hour: an attempt before 07:00 or after 21:00 is missed 1.5 times as often (asleep,
  phone in another room); an assumption, not a published figure.
- `mobile_share`: residents who carry a phone when they go out; the issue's programme gives
  the "120 one-key" home phone to all and a mobile to some; 0.5 is an assumption.
- `extra_unanswered`: the sensitivity row (5 % of healthy residents' check-ins unanswered
  however many attempts), 0 by default.

Pure and deterministic: each answer is drawn from a hash of (seed, resident, time asked), so
a replay gives the same answers whatever order it asks in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lovekey.vocabulary import CheckInAnswer

# the stage: call, call again 10 min later, SMS 10 min after that, 10 min to answer it
ATTEMPT_OFFSETS_S: tuple[int, ...] = (0, 600, 1200)
STAGE_S = 1800
# how long after an attempt a resident who answers it does (a call is picked up within a
# minute; an SMS reply takes a few)
ANSWER_DELAY_S: tuple[int, ...] = (60, 60, 300)
# a resident who answers late gets `extra` more calls (the chain's `check_in_slow` steps),
# each 10 min after the last ask; the stage ends 10 min after the last
EXTRA_ATTEMPT_S = 600
EXTRA_DELAY_S = 60


def stage_s(extra: int = 0) -> int:
    """How long the stage lasts with `extra` more asks."""
    return STAGE_S + extra * EXTRA_ATTEMPT_S


def _attempts(extra: int) -> list[tuple[int, int]]:
    """(offset from the first ask, answer delay) of each ask of a stage with `extra` more."""
    more = [(STAGE_S + i * EXTRA_ATTEMPT_S, EXTRA_DELAY_S) for i in range(extra)]
    return [*zip(ATTEMPT_OFFSETS_S, ANSWER_DELAY_S, strict=True), *more]


# kinds of the ground truth in which the resident is not at home
OUT_KINDS = frozenset({"day_out", "planned_absence", "unannounced_absence"})
# in which they cannot answer at all
DOWN_KINDS = frozenset({"no_use"})


@dataclass(frozen=True, slots=True)
class CheckInModel:
    """What residents do when asked; see the module docstring for the defaults' sources."""

    seed: int
    hard_to_reach_share: float = 0.10
    miss_hard_to_reach: float = 0.60
    miss_others: float = 0.12
    night_factor: float = 1.5  # before 07:00, after 21:00 local
    mobile_share: float = 0.5
    extra_unanswered: float = 0.0  # sensitivity: share of healthy residents' check-ins lost
    utc_offset_s: int = 8 * 3600
    # per resident, the spans of truth that matter: (kind, start_s, end_s)
    spans: Mapping[str, Sequence[tuple[str, int, int]]] = field(default_factory=dict)

    def _u(self, *parts: object) -> float:
        """A uniform number in [0, 1) from the seed and `parts` (stable across runs)."""
        text = ":".join(str(p) for p in (self.seed, *parts)).encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2.0**64

    def hard_to_reach(self, resident_id: str) -> bool:
        return self._u("hard", resident_id) < self.hard_to_reach_share

    def carries_mobile(self, resident_id: str) -> bool:
        return self._u("mobile", resident_id) < self.mobile_share

    def doing(self, resident_id: str, t_s: int) -> str | None:
        """The truth kind the resident is in at `t_s` (None: an ordinary moment at home)."""
        for kind, start, end in self.spans.get(resident_id, ()):
            if start <= t_s < end:
                return kind
        return None

    def answer(self, resident_id: str, asked_s: int, extra: int = 0) -> tuple[CheckInAnswer, int]:
        """How the stage that starts at `asked_s` (with `extra` more asks) ends, and when it
        is settled."""
        unanswered = CheckInAnswer.NONE, asked_s + stage_s(extra)
        doing = self.doing(resident_id, asked_s)
        if doing in DOWN_KINDS:
            return unanswered
        if doing in OUT_KINDS and not self.carries_mobile(resident_id):
            return unanswered
        if self._u("lost", resident_id, asked_s) < self.extra_unanswered:
            return unanswered
        for attempt, (offset, delay) in enumerate(_attempts(extra)):
            at = asked_s + offset
            if self._u("attempt", resident_id, asked_s, attempt) >= self.attempt_miss(resident_id, at):
                return CheckInAnswer.FINE, at + delay
        return unanswered

    def attempt_miss(self, resident_id: str, at_s: int) -> float:
        """The chance that the resident, at home, misses one attempt made at `at_s`."""
        base = self.miss_hard_to_reach if self.hard_to_reach(resident_id) else self.miss_others
        hour = ((at_s + self.utc_offset_s) % 86400) // 3600
        return min(1.0, base * (self.night_factor if hour < 7 or hour >= 21 else 1.0))

    def unanswered_chance(self, resident_id: str, asked_s: int, extra: int = 0) -> float:
        """The chance that `answer` leaves the stage asked at `asked_s` unanswered, for a
        resident who is not on the floor (out without a mobile: certain)."""
        if self.doing(resident_id, asked_s) in OUT_KINDS and not self.carries_mobile(resident_id):
            return 1.0
        missed = 1.0
        for offset, _ in _attempts(extra):
            missed *= self.attempt_miss(resident_id, asked_s + offset)
        return 1 - (1 - self.extra_unanswered) * (1 - missed)


TruthLine = tuple[str, str | None, int, int | None]  # kind, resident, start, end (None: open)


def spans_from_truth(truth: Sequence[TruthLine], end_s: int) -> dict[str, list[tuple[str, int, int]]]:
    """Per resident, (kind, start, end) of the truth lines that decide how they answer."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    for kind, resident_id, start_s, stop_s in truth:
        if resident_id is None or kind not in OUT_KINDS | DOWN_KINDS:
            continue
        out.setdefault(resident_id, []).append((kind, start_s, end_s if stop_s is None else stop_s))
    return out
