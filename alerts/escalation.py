"""What happens next to an alert: a pure function of the alert, its escalations so far, its
chain and `now`. No database, no clock; `alerts.escalation_pass` fetches the inputs and applies the
decision in one transaction.

The check-in stage comes first for an alert of the sensitive tier (`tier = 'check_in'`): the
chain's `check_in` steps ask the resident, one after the other; an answer "fine" resolves the
alert (elsewhere), "need help", a raise to the neighbour tier, or the end of the stage without an
answer go on to the chain's `steps` at once. A resident who cannot be asked (the stage is off,
no usable phone) goes straight to the chain's `steps`: the sensitive tier's flag is never
dropped. In quiet hours the stage waits for their end (the neighbour tier still runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from lovekey.alerts.chains import Chain, RoleRef
from lovekey.vocabulary import WELFARE_KINDS, AlertStatus, AlertTier, CheckInAnswer, ContactRole


@dataclass(frozen=True, slots=True)
class AlertSnapshot:
    """The facts about one alert, read at one pass, that the decision depends on.
    (`detectors.hysteresis.AlertState` is something else: whether a kind is raised per subject.)"""

    id: int
    kind: str
    status: AlertStatus
    opened_at: datetime
    away_until: datetime | None  # the resident is away until then (None: not away)
    anyone_notified: bool  # an alert notification reached (or is queued for) someone
    stood_down: bool  # the stand-down after resolution was queued
    available_roles: frozenset[str]  # "role" and "role:N" that have a reachable recipient
    tier: AlertTier = AlertTier.NEIGHBOUR
    # why the resident cannot be asked at all: 'off' (the community switched the stage off) or
    # 'no_phone' (no usable phone); None: they can
    check_in_blocked: str | None = None
    check_in_quiet_until: datetime | None = None  # quiet hours for the stage end then
    check_in_answer: CheckInAnswer | None = None  # the resident's answer so far
    # the door reminder saw the resident go out before this check-in: when the stage ends
    # unanswered, nobody else is told; the detectors' neighbour tier decides (a raise to
    # `neighbour` ends the stage as any raise does)
    check_in_holds: bool = False
    # the detectors' neighbour tier had fired when this check-in was raised
    # (`detect.quiet_neighbour_asks_first`): the resident is asked first only when they can be
    # asked now; in quiet hours the neighbour is told at once, as without the stage
    check_in_urgent: bool = False


# how often a held check-in (`check_in_holds`) is looked at again; a raise to the neighbour
# tier makes it due at once
HELD_RECHECK = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Escalation:
    """One past notification round, as recorded in the alert's history."""

    round: int
    step: int | None  # index into chain.steps; None for a repeat or a check-in
    at: datetime
    check_in: int | None = None  # index into chain.check_in: the resident was asked
    # every notification of the round failed for good (an invalid number, every channel
    # spent): nobody can acknowledge it, so its wait is over at once
    unreached: bool = False


@dataclass(frozen=True, slots=True)
class Notify:
    round: int
    step: int | None
    roles: tuple[RoleRef, ...]
    next_check: datetime
    skipped: tuple[int, ...] = ()  # steps passed over because nobody holds their roles
    check_in: int | None = None  # asks the resident: index into chain.check_in
    ends_check_in: bool = False  # the first step after the check-in stage (it ends unanswered)
    # a check-in alert whose resident could not be asked: 'off' (the stage is switched off),
    # 'no_phone', or 'quiet' (quiet hours, and the neighbour tier had fired: `check_in_urgent`);
    # it goes straight to the chain's steps
    check_in_skipped: str | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    until: datetime


@dataclass(frozen=True, slots=True)
class StandDown:
    """Resolved: tell everyone who was notified that they need not act."""


@dataclass(frozen=True, slots=True)
class ResolveAway:
    """The resident is away and this kind is suppressed while away."""

    away_until: datetime


@dataclass(frozen=True, slots=True)
class Done:
    reason: str  # resolved | acknowledged | chain_exhausted | no_recipients


Decision = Notify | Wait | StandDown | ResolveAway | Done


def next_step(alert: AlertSnapshot, history: Sequence[Escalation], chain: Chain, now: datetime) -> Decision:
    if alert.status == AlertStatus.RESOLVED:
        if alert.anyone_notified and not alert.stood_down:
            return StandDown()
        return Done("resolved")
    if alert.status == AlertStatus.ACKNOWLEDGED:
        return Done("acknowledged")
    if chain.suppress_when_away and alert.away_until is not None and alert.away_until > now:
        return ResolveAway(alert.away_until)

    if not history:
        start = alert.opened_at + timedelta(seconds=chain.delay_s)
        if now < start:
            return Wait(start)
        if alert.tier == AlertTier.CHECK_IN and alert.kind in WELFARE_KINDS:
            return _start_check_in(alert, chain, now)
        return _from_step(0, 0, alert, chain, now)

    last = max(history, key=lambda e: e.round)
    if last.check_in is not None:
        return _in_check_in(last, alert, chain, now)
    if last.step is not None and last.step + 1 < len(chain.steps):
        due = last.at if last.unreached else last.at + timedelta(seconds=chain.steps[last.step].wait_s)
        if now < due:
            return Wait(due)
        return _from_step(last.step + 1, last.round + 1, alert, chain, now)

    if chain.repeat_every_s is None:
        return Done("chain_exhausted")
    wait_s = chain.steps[-1].wait_s if last.step is not None else chain.repeat_every_s
    due = last.at if last.unreached else last.at + timedelta(seconds=wait_s)
    if now < due:
        return Wait(due)
    return _repeat(last.round + 1, alert, chain, now, ())


def _start_check_in(alert: AlertSnapshot, chain: Chain, now: datetime) -> Decision:
    if not chain.check_in or alert.check_in_blocked == "off":
        return _from_step(0, 0, alert, chain, now, check_in_skipped="off")
    if alert.check_in_blocked is not None or ContactRole.RESIDENT not in alert.available_roles:
        return _from_step(0, 0, alert, chain, now, check_in_skipped="no_phone")
    if alert.check_in_quiet_until is not None and alert.check_in_quiet_until > now:
        if alert.check_in_urgent:
            return _from_step(0, 0, alert, chain, now, check_in_skipped="quiet")
        return Wait(alert.check_in_quiet_until)
    return _ask(0, 0, chain, now)


def _in_check_in(last: Escalation, alert: AlertSnapshot, chain: Chain, now: datetime) -> Decision:
    assert last.check_in is not None
    if (
        alert.tier == AlertTier.NEIGHBOUR
        or alert.check_in_answer == CheckInAnswer.NEED_HELP
        or last.unreached  # the resident's number was refused: asking again cannot reach them
    ):
        return _from_step(0, last.round + 1, alert, chain, now, ends_check_in=True)
    index = last.check_in
    wait_s = chain.check_in[index].wait_s if index < len(chain.check_in) else 0
    due = last.at + timedelta(seconds=wait_s)
    if now < due:
        return Wait(due)
    if index + 1 < len(chain.check_in) and ContactRole.RESIDENT in alert.available_roles:
        if alert.check_in_quiet_until is not None and alert.check_in_quiet_until > now:
            return Wait(alert.check_in_quiet_until)
        return _ask(index + 1, last.round + 1, chain, now)
    if alert.check_in_holds:
        return Wait(now + HELD_RECHECK)
    return _from_step(0, last.round + 1, alert, chain, now, ends_check_in=True)


def _ask(index: int, round_: int, chain: Chain, now: datetime) -> Notify:
    step = chain.check_in[index]
    return Notify(
        round=round_,
        step=None,
        roles=step.roles,
        next_check=now + timedelta(seconds=step.wait_s),
        check_in=index,
    )


def _available(roles: Sequence[RoleRef], alert: AlertSnapshot) -> tuple[RoleRef, ...]:
    return tuple(r for r in roles if str(r) in alert.available_roles)


def _from_step(
    first: int,
    round_: int,
    alert: AlertSnapshot,
    chain: Chain,
    now: datetime,
    *,
    ends_check_in: bool = False,
    check_in_skipped: str | None = None,
) -> Decision:
    skipped: list[int] = []
    for index in range(first, len(chain.steps)):
        step = chain.steps[index]
        roles = _available(step.roles, alert)
        if roles:
            return Notify(
                round=round_,
                step=index,
                roles=roles,
                next_check=now + timedelta(seconds=step.wait_s),
                skipped=tuple(skipped),
                ends_check_in=ends_check_in,
                check_in_skipped=check_in_skipped,
            )
        skipped.append(index)
    if chain.repeat_every_s is None:
        return Done("no_recipients")
    return _repeat(
        round_,
        alert,
        chain,
        now,
        tuple(skipped),
        ends_check_in=ends_check_in,
        check_in_skipped=check_in_skipped,
    )


def _repeat(
    round_: int,
    alert: AlertSnapshot,
    chain: Chain,
    now: datetime,
    skipped: tuple[int, ...],
    *,
    ends_check_in: bool = False,
    check_in_skipped: str | None = None,
) -> Decision:
    assert chain.repeat_every_s is not None
    roles = _available(chain.repeat_roles, alert)
    if not roles:
        return Done("no_recipients")
    return Notify(
        round=round_,
        step=None,
        roles=roles,
        next_check=now + timedelta(seconds=chain.repeat_every_s),
        skipped=skipped,
        ends_check_in=ends_check_in,
        check_in_skipped=check_in_skipped,
    )
