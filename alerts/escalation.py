"""What happens next to an alert: a pure function of the alert, its escalations so far, its
chain and `now`. No database, no clock; `alerts.escalation_pass` fetches the inputs and applies the
decision in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from lovekey.alerts.chains import Chain, RoleRef
from lovekey.vocabulary import AlertStatus


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


@dataclass(frozen=True, slots=True)
class Escalation:
    """One past notification round, as recorded in the alert's history."""

    round: int
    step: int | None  # index into chain.steps; None for a repeat
    at: datetime


@dataclass(frozen=True, slots=True)
class Notify:
    round: int
    step: int | None
    roles: tuple[RoleRef, ...]
    next_check: datetime
    skipped: tuple[int, ...] = ()  # steps passed over because nobody holds their roles


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
        return _from_step(0, 0, alert, chain, now)

    last = max(history, key=lambda e: e.round)
    if last.step is not None and last.step + 1 < len(chain.steps):
        due = last.at + timedelta(seconds=chain.steps[last.step].wait_s)
        if now < due:
            return Wait(due)
        return _from_step(last.step + 1, last.round + 1, alert, chain, now)

    if chain.repeat_every_s is None:
        return Done("chain_exhausted")
    wait_s = chain.steps[-1].wait_s if last.step is not None else chain.repeat_every_s
    due = last.at + timedelta(seconds=wait_s)
    if now < due:
        return Wait(due)
    return _repeat(last.round + 1, alert, chain, now, ())


def _available(roles: Sequence[RoleRef], alert: AlertSnapshot) -> tuple[RoleRef, ...]:
    return tuple(r for r in roles if str(r) in alert.available_roles)


def _from_step(first: int, round_: int, alert: AlertSnapshot, chain: Chain, now: datetime) -> Decision:
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
            )
        skipped.append(index)
    if chain.repeat_every_s is None:
        return Done("no_recipients")
    return _repeat(round_, alert, chain, now, tuple(skipped))


def _repeat(
    round_: int, alert: AlertSnapshot, chain: Chain, now: datetime, skipped: tuple[int, ...]
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
    )
