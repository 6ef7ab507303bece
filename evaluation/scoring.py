"""Scoring: the alerts a replay raised against the simulator's ground truth.

`score` reports, per rule: recall, precision, false alerts per household-month and time to
alert, plus the no-use and neighbour summaries the table's footer prints.

Matching. An alert matches an incident when it is about the same resident (the device for
meter_silent, the gateway for gateway_offline; a meter of an outage's gateway also matches
it), its kind answers the incident's kind (`TARGETS`), it was raised after the incident
began, and the condition it reports began before the incident ended (`since < end`). An
alert matching nothing is false. Recall counts the incidents long enough for a rule to see
them: e.g. a no-use incident is due for `low_usage` once it has lasted 12 h plus twice the
meter's reporting interval plus an hour (a daily meter tells tomorrow what happened today).
Incidents nothing of which reached LoveKey are not judged: a no-use incident whose meter
could not be heard, an alarm or SOS press lost with its gateway's messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from lovekey.config import DetectSettings
from lovekey.evaluation.replay import RaisedAlert
from lovekey.vocabulary import (
    LIFE_SAFETY_KINDS,
    MAINTENANCE_KINDS,
    RESIDENT_KINDS,
    WELFARE_KINDS,
    AlertKind,
)

# the rows of the table, in this order: what the water says, what the devices say, the alarms
RULES: tuple[AlertKind, ...] = WELFARE_KINDS + MAINTENANCE_KINDS + LIFE_SAFETY_KINDS
# which incident kinds (the simulator's ground truth) each alert kind answers
TARGETS: dict[str, frozenset[str]] = {
    AlertKind.LOW_USAGE: frozenset({"no_use", "unannounced_absence"}),
    AlertKind.ROUTINE_BREAK: frozenset({"no_use", "unannounced_absence"}),
    AlertKind.RUNNING_TAP: frozenset({"running_tap"}),
    AlertKind.LEAK: frozenset({"slow_leak"}),
    AlertKind.METER_SILENT: frozenset({"meter_silent", "gateway_outage"}),
    AlertKind.GATEWAY_OFFLINE: frozenset({"gateway_outage"}),
    AlertKind.SMOKE: frozenset({"smoke"}),
    AlertKind.GAS: frozenset({"gas"}),
    AlertKind.SOS: frozenset({"sos"}),
}
# the incident kinds whose recall each rule is judged on (the first set above)
RECALL_OF: dict[str, frozenset[str]] = {
    **TARGETS,
    AlertKind.METER_SILENT: frozenset({"meter_silent"}),
}
INSTANT_MATCH_S = 3600  # an SOS press (no duration) is answered within this


@dataclass(frozen=True, slots=True)
class Truth:
    kind: str
    resident_id: str | None
    device_id: str | None
    gateway_id: str | None
    start_s: int
    end_s: int | None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Truth:
        def when(text: str | None) -> int | None:
            return None if text is None else int(datetime.fromisoformat(text).timestamp())

        start = when(obj["start"])
        if start is None:
            raise ValueError("an incident needs a start")
        return cls(
            obj["kind"],
            obj.get("resident_id"),
            obj.get("device_id"),
            obj.get("gateway_id"),
            start,
            when(obj.get("end")),
            dict(obj.get("details") or {}),
        )


@dataclass(slots=True)
class RuleScore:
    rule: str
    alerts: int = 0
    true_alerts: int = 0
    false_alerts: int = 0
    incidents: int = 0  # incidents of the kinds this rule is judged on, long enough
    detected: int = 0
    lost_on_the_way: int = 0  # not judged: nothing of them reached LoveKey (a lost outage)
    delays_s: list[int] = field(default_factory=list)

    def row(self, household_months: float) -> dict[str, Any]:
        delays = sorted(self.delays_s)
        return {
            "rule": self.rule,
            "alerts": self.alerts,
            "false_alerts": self.false_alerts,
            "incidents": self.incidents,
            "detected": self.detected,
            "recall": _ratio(self.detected, self.incidents),
            "lost_on_the_way": self.lost_on_the_way,
            "precision": _ratio(self.true_alerts, self.alerts),
            "false_per_household_month": round(self.false_alerts / household_months, 4)
            if household_months
            else None,
            "median_h": _hours(_quantile(delays, 0.5)),
            "p90_h": _hours(_quantile(delays, 0.9)),
        }


def score(
    alerts: Sequence[RaisedAlert],
    truth: Sequence[Truth],
    *,
    households: int,
    start_s: int,
    end_s: int,
    report_interval_s: Mapping[str, int],
    gateway_of: Mapping[str, str],
    settings: DetectSettings,
    utc_offset_s: int,
    away_presses: Iterable[tuple[str, int]] | None = None,
) -> dict[str, Any]:
    """Match alerts to incidents and summarise; only [start_s, end_s) is scored.

    `away_presses`: (resident, ts) of the away events that reached the platform; an absence
    whose press was lost on the way (a gateway outage) is not one the platform was told of.
    """
    scored = [a for a in alerts if start_s <= a.raised_s < end_s]
    months = households * (end_s - start_s) / (30 * 86400)
    matches: dict[int, list[int]] = {}  # alert -> incidents it matches
    for ai, alert in enumerate(scored):
        matches[ai] = [ti for ti, inc in enumerate(truth) if _matches(alert, inc, gateway_of)]
    first_alert: dict[tuple[int, str], int] = {}
    for ai, tis in matches.items():
        for ti in tis:
            key = (ti, scored[ai].kind)
            first_alert[key] = min(first_alert.get(key, 1 << 62), scored[ai].raised_s)
    # an alert already open when an incident began (raised for something else, not yet
    # cleared) is how people hear of it: found at its start
    for alert in alerts:
        for ti, inc in enumerate(truth):
            if (
                inc.kind in TARGETS.get(alert.kind, ())
                and alert.resident_id is not None
                and alert.resident_id == inc.resident_id
                and alert.raised_s < inc.start_s
                and (alert.cleared_s is None or alert.cleared_s > inc.start_s)
            ):
                first_alert.setdefault((ti, alert.kind), inc.start_s)
    blind = {
        ti
        for ti, inc in enumerate(truth)
        if inc.kind in ("no_use", "unannounced_absence") and _blind(inc, truth, gateway_of, settings)
    }

    rules: dict[str, RuleScore] = {rule: RuleScore(rule) for rule in RULES}
    for ai, alert in enumerate(scored):
        rs = rules[alert.kind]
        rs.alerts += 1
        if matches[ai]:
            rs.true_alerts += 1
        else:
            rs.false_alerts += 1
    for ti, inc in enumerate(truth):
        if not start_s <= inc.start_s < end_s or ti in blind:
            continue
        if inc.kind in LIFE_SAFETY_KINDS and _lost_with_gateway(inc, truth, gateway_of):
            rules[inc.kind].lost_on_the_way += 1
            continue
        for rule, kinds in RECALL_OF.items():
            if inc.kind not in kinds or not _due(rule, inc, end_s, report_interval_s, settings):
                continue
            rs = rules[rule]
            rs.incidents += 1
            if (ti, rule) in first_alert:
                rs.detected += 1
                rs.delays_s.append(first_alert[(ti, rule)] - inc.start_s)

    no_use = [
        (ti, inc) for ti, inc in enumerate(truth) if inc.kind == "no_use" and start_s <= inc.start_s < end_s
    ]
    due = [
        (ti, inc)
        for ti, inc in no_use
        if ti not in blind and _due(AlertKind.LOW_USAGE, inc, end_s, report_interval_s, settings)
    ]
    either = [
        ti
        for ti, _ in due
        if (ti, AlertKind.LOW_USAGE) in first_alert or (ti, AlertKind.ROUTINE_BREAK) in first_alert
    ]
    day_time = [(ti, inc) for ti, inc in no_use if 7 <= ((inc.start_s + utc_offset_s) % 86400) / 3600 < 19]
    routine_day = sorted(
        first_alert[(ti, AlertKind.ROUTINE_BREAK)] - inc.start_s
        for ti, inc in day_time
        if (ti, AlertKind.ROUTINE_BREAK) in first_alert
    )
    any_day = sorted(
        min(
            first_alert.get((ti, AlertKind.ROUTINE_BREAK), 1 << 62),
            first_alert.get((ti, AlertKind.LOW_USAGE), 1 << 62),
        )
        - inc.start_s
        for ti, inc in day_time
        if (ti, AlertKind.ROUTINE_BREAK) in first_alert or (ti, AlertKind.LOW_USAGE) in first_alert
    )
    # the neighbour is woken by an alert raised at the neighbour tier, by an open check-in
    # whose neighbour tier fired, or by a check-in nobody answered; a "fine" wakes nobody
    neighbour_false = [
        scored[ai]
        for ai, tis in matches.items()
        if not tis and scored[ai].kind in RESIDENT_KINDS and scored[ai].neighbour_s is not None
    ]
    explained = _explain(neighbour_false, truth, gateway_of)
    heard = None if away_presses is None else set(away_presses)
    told = [
        inc
        for inc in truth
        if inc.kind != "planned_absence"
        or heard is None
        or any((inc.resident_id, inc.start_s + d) in heard for d in range(-120, 121))
    ]
    lost = [inc for inc in truth if inc.kind == "planned_absence" and inc not in told]
    # an alert that matches an incident (a resident back from an absence who fell, or left
    # again unannounced) was caused by it, whatever its dry run reached back over
    caused = [
        a
        for ai, a in enumerate(scored)
        if a.kind in (AlertKind.LOW_USAGE, AlertKind.ROUTINE_BREAK)
        and a.neighbour_s is not None
        and not matches[ai]
        and _overlaps_kind(
            a,
            told,
            ("meter_silent", "gateway_outage", "planned_absence"),
            gateway_of,
            heard_again_s=lambda alert: _heard_again_s(alert, report_interval_s, settings),
        )
    ]
    during_lost = [
        a
        for a in scored
        if a.kind in (AlertKind.LOW_USAGE, AlertKind.ROUTINE_BREAK)
        and _overlaps_kind(a, lost, ("planned_absence",), gateway_of)
    ]
    return {
        "households": households,
        "days": round((end_s - start_s) / 86400, 2),
        "household_months": round(months, 2),
        "rules": [rules[r].row(months) for r in RULES],
        "no_use": {
            "incidents": len(no_use),
            "not_judged_meter_silent": len(blind & {ti for ti, _ in no_use}),
            "due_after_12h": len(due),
            "detected_by_low_usage_or_routine": len(either),
            "recall_after_12h": _ratio(len(either), len(due)),
            "daytime_incidents": len(day_time),
            "routine_break_daytime_detected": len(routine_day),
            "routine_break_daytime_median_h": _hours(_quantile(routine_day, 0.5)),
            "routine_break_daytime_p90_h": _hours(_quantile(routine_day, 0.9)),
            "first_alert_daytime_median_h": _hours(_quantile(any_day, 0.5)),
        },
        "stages": _stages(scored, matches, truth, day_time, first_alert, months),
        "neighbour": {
            "alerts": sum(1 for a in scored if a.kind in RESIDENT_KINDS and a.neighbour_s is not None),
            "false_alerts": len(neighbour_false),
            "false_per_household_month": round(len(neighbour_false) / months, 4) if months else None,
            "false_during": explained,
            "caused_by_silent_meter_or_away": len(caused),
            "during_absences_whose_press_was_lost": len(during_lost),
        },
        "checks_per_household_month": round(
            sum(1 for a in scored if a.kind in RESIDENT_KINDS and a.neighbour_s is not None) / months, 4
        )
        if months
        else None,
    }


def _stages(
    scored: Sequence[RaisedAlert],
    matches: Mapping[int, list[int]],
    truth: Sequence[Truth],
    day_time: Sequence[tuple[int, Truth]],
    first_alert: Mapping[tuple[int, str], int],
    months: float,
) -> dict[str, Any]:
    """The check-in stage: how many residents were asked, how they answered, and for daytime
    no-use incidents the time from onset to the check-in and to the neighbour."""
    check_ins = [ai for ai, a in enumerate(scored) if a.check_in and a.asked_s is not None]
    answers: dict[str, int] = {}
    for ai in check_ins:
        key = f"{'true' if matches[ai] else 'false'}:{scored[ai].answer or 'open'}"
        answers[key] = answers.get(key, 0) + 1
    welfare = (AlertKind.LOW_USAGE, AlertKind.ROUTINE_BREAK)
    asked: dict[int, int] = {}
    woke: dict[int, int] = {}
    for ai, tis in matches.items():
        a = scored[ai]
        if a.kind not in welfare:
            continue
        for ti in tis:
            if a.asked_s is not None:
                asked[ti] = min(asked.get(ti, 1 << 62), a.asked_s)
            if a.neighbour_s is not None:
                woke[ti] = min(woke.get(ti, 1 << 62), a.neighbour_s)
    # an alert already open when the incident began counts from its start (as `first_alert`)
    for ti, _ in day_time:
        for kind in welfare:
            at = first_alert.get((ti, kind))
            if at is not None and ti not in woke and ti not in asked:
                woke.setdefault(ti, at)
    to_check_in = sorted(
        min(asked.get(ti, 1 << 62), woke.get(ti, 1 << 62)) - inc.start_s
        for ti, inc in day_time
        if ti in asked or ti in woke
    )
    to_neighbour = sorted(woke[ti] - inc.start_s for ti, inc in day_time if ti in woke)
    return {
        "check_ins": len(check_ins),
        "check_ins_per_household_month": round(len(check_ins) / months, 4) if months else None,
        "answers": dict(sorted(answers.items())),
        "daytime_incidents": len(day_time),
        "daytime_reached": len(to_check_in),
        "onset_to_first_contact_median_h": _hours(_quantile(to_check_in, 0.5)),
        "onset_to_first_contact_p90_h": _hours(_quantile(to_check_in, 0.9)),
        "daytime_neighbour_reached": len(to_neighbour),
        "onset_to_neighbour_median_h": _hours(_quantile(to_neighbour, 0.5)),
        "onset_to_neighbour_p90_h": _hours(_quantile(to_neighbour, 0.9)),
    }


def field_rule_comparison(
    alerts: Sequence[RaisedAlert],
    field_alerts: Sequence[RaisedAlert],
    truth: Sequence[Truth],
    *,
    start_s: int,
    end_s: int,
    quiet_days: float = 14.0,
) -> dict[str, Any]:
    """Issue 17: for every no-use incident in [start_s, end_s), LoveKey's first flag (a
    check-in or an alert of low_usage or routine_break) against the plain field rule's
    first alert (`field_alerts`, a replay with the field rule alone) on the same data.

    A resident the field rule is quiet for is one it raised no alert for in the
    `quiet_days` before the incident (and had none open then). For those, `later` counts
    incidents LoveKey flagged after the field rule did and `missed` those the field rule
    flagged and LoveKey never did: the floor's guarantee is that both are 0."""
    welfare = (AlertKind.LOW_USAGE, AlertKind.ROUTINE_BREAK)

    def first(pool: Sequence[RaisedAlert], inc: Truth) -> int | None:
        found = [
            inc.start_s if a.raised_s < inc.start_s else a.raised_s
            for a in pool
            if a.kind in welfare
            and a.resident_id == inc.resident_id
            and (
                _matches(a, inc, {})
                or (a.raised_s < inc.start_s and (a.cleared_s is None or a.cleared_s > inc.start_s))
            )
        ]
        return min(found, default=None)

    by_resident: dict[str, list[RaisedAlert]] = {}
    for a in alerts:
        by_resident.setdefault(a.resident_id or "", []).append(a)
    field_by: dict[str, list[RaisedAlert]] = {}
    for a in field_alerts:
        field_by.setdefault(a.resident_id or "", []).append(a)
    rows: list[dict[str, Any]] = []
    for inc in truth:
        if inc.kind != "no_use" or not start_s <= inc.start_s < end_s or inc.resident_id is None:
            continue
        mine, theirs = by_resident.get(inc.resident_id, []), field_by.get(inc.resident_id, [])
        quiet_from = inc.start_s - int(quiet_days * 86400)
        quiet = not any(
            a.kind == AlertKind.LOW_USAGE
            and a.raised_s < inc.start_s
            and (a.cleared_s is None or a.cleared_s > quiet_from)
            for a in theirs
        )
        ours, field = first(mine, inc), first(theirs, inc)
        rows.append(
            {
                "resident_id": inc.resident_id,
                "start_s": inc.start_s,
                "field_quiet": quiet,
                "lovekey_h": None if ours is None else round((ours - inc.start_s) / 3600, 2),
                "field_h": None if field is None else round((field - inc.start_s) / 3600, 2),
            }
        )

    def count(quiet: bool) -> dict[str, Any]:
        mine = [r for r in rows if r["field_quiet"] == quiet]
        both = [r for r in mine if r["lovekey_h"] is not None and r["field_h"] is not None]
        later = [r for r in both if r["lovekey_h"] > r["field_h"]]
        missed = [r for r in mine if r["field_h"] is not None and r["lovekey_h"] is None]
        by_h = sorted(r["lovekey_h"] - r["field_h"] for r in later)
        return {
            "incidents": len(mine),
            "field_flagged": sum(1 for r in mine if r["field_h"] is not None),
            "lovekey_flagged": sum(1 for r in mine if r["lovekey_h"] is not None),
            "later": len(later),
            "missed": len(missed),
            "later_median_h": round(by_h[len(by_h) // 2], 2) if by_h else None,
            "later_max_h": round(by_h[-1], 2) if by_h else None,
        }

    return {"field_quiet": count(True), "field_fires_on_ordinary_days": count(False), "incidents": rows}


def _matches(alert: RaisedAlert, inc: Truth, gateway_of: Mapping[str, str]) -> bool:
    if inc.kind not in TARGETS.get(alert.kind, ()):
        return False
    if alert.kind == AlertKind.METER_SILENT:
        same = (
            alert.device_id == inc.device_id
            if inc.kind == "meter_silent"
            else inc.gateway_id is not None and gateway_of.get(alert.device_id or "") == inc.gateway_id
        )
    elif alert.kind == AlertKind.GATEWAY_OFFLINE:
        same = alert.gateway_id == inc.gateway_id
    else:
        same = alert.resident_id is not None and alert.resident_id == inc.resident_id
    if not same or alert.raised_s < inc.start_s:
        return False
    end = inc.end_s
    if end is None or end <= inc.start_s:  # open, or an instant like an SOS press
        end = inc.start_s + INSTANT_MATCH_S if inc.kind == "sos" else (1 << 62)
        return alert.raised_s <= end if inc.kind == "sos" else True
    return alert.since_s < end


def _blind(inc: Truth, truth: Sequence[Truth], gateway_of: Mapping[str, str], st: DetectSettings) -> bool:
    """Whether the resident's meter could not be heard before the incident was 12 h old: it
    was silent, or its gateway was down and its values lost (not buffered)."""
    due_by = inc.start_s + int(st.low_usage_window_h * 3600)
    gateway = gateway_of.get(inc.device_id or "")
    for other in truth:
        silent = other.kind == "meter_silent" and other.device_id == inc.device_id
        lost = (
            other.kind == "gateway_outage"
            and gateway is not None
            and other.gateway_id == gateway
            and not other.details.get("buffered", False)
        )
        if not (silent or lost):
            continue
        end = (1 << 62) if other.end_s is None else other.end_s
        if other.start_s < due_by and end > inc.start_s:
            return True
    return False


def _lost_with_gateway(inc: Truth, truth: Sequence[Truth], gateway_of: Mapping[str, str]) -> bool:
    """Whether an alarm or SOS press was sent while its gateway was down and lost what it
    held (not buffered): no rule can see it, so recall does not judge it (seed 33's SOS)."""
    gateway = gateway_of.get(inc.device_id or "")
    return gateway is not None and any(
        other.kind == "gateway_outage"
        and other.gateway_id == gateway
        and not other.details.get("buffered", False)
        and other.start_s <= inc.start_s < ((1 << 62) if other.end_s is None else other.end_s)
        for other in truth
    )


def _heard_again_s(alert: RaisedAlert, report_interval_s: Mapping[str, int], st: DetectSettings) -> int:
    """How long after a silent meter (or its gateway) is back the detector can know it: its
    first reading comes up to one report interval later, and a dry run counts from the
    start of that reading's bucket (seed 39's alert overlapped a silence by 21 minutes)."""
    interval = report_interval_s.get(alert.device_id or "", st.default_report_interval_s)
    return interval + st.bucket_minutes * 60


def _overlaps_kind(
    alert: RaisedAlert,
    truth: Iterable[Truth],
    kinds: Sequence[str],
    gateway_of: Mapping[str, str],
    *,
    heard_again_s: Callable[[RaisedAlert], int] | None = None,
) -> bool:
    """Whether the alert's evidence [since, raised] overlaps an incident of these kinds; a
    silent meter or gateway outage only by more than `heard_again_s` (the detector's slop)."""
    for inc in truth:
        if inc.kind not in kinds:
            continue
        mine = (inc.resident_id is not None and inc.resident_id == alert.resident_id) or (
            inc.gateway_id is not None and inc.gateway_id == gateway_of.get(alert.device_id or "")
        )
        if not mine and inc.kind == "gateway_outage" and alert.resident_id:
            mine = inc.gateway_id == alert.gateway_id
        end = (1 << 62) if inc.end_s is None else inc.end_s
        if heard_again_s is not None and inc.kind in ("meter_silent", "gateway_outage"):
            end -= heard_again_s(alert)
        if mine and alert.since_s < end and alert.raised_s > inc.start_s:
            return True
    return False


def _explain(
    false: Sequence[RaisedAlert], truth: Sequence[Truth], gateway_of: Mapping[str, str]
) -> dict[str, int]:
    """What was going on for the resident when each false alert was raised."""
    out: dict[str, int] = {}
    for alert in false:
        during = "nothing"
        for inc in truth:
            if inc.resident_id != alert.resident_id or inc.resident_id is None:
                continue
            end = (1 << 62) if inc.end_s is None else inc.end_s
            if inc.start_s - 86400 < alert.raised_s and alert.since_s < end:
                during = inc.kind
                break
        key = f"{alert.kind}:{during}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def _due(
    rule: str,
    inc: Truth,
    end_s: int,
    report_interval_s: Mapping[str, int],
    st: DetectSettings,
) -> bool:
    """Whether the incident lasted long enough (within the scored span) for the rule to see."""
    lasted = min(inc.end_s if inc.end_s is not None else end_s, end_s) - inc.start_s
    interval = report_interval_s.get(inc.device_id or "", st.default_report_interval_s)
    lag = 2 * interval + 3600
    need: dict[str, int] = {
        AlertKind.LOW_USAGE: int(st.low_usage_window_h * 3600) + lag,
        AlertKind.ROUTINE_BREAK: 0,
        AlertKind.RUNNING_TAP: int(st.running_tap_limit_h * 3600) + lag,
        AlertKind.LEAK: int(st.leak_limit_h * 3600) + lag,
        AlertKind.METER_SILENT: interval + st.silent_grace_s + 2 * st.sweep_interval_s + 900,
        AlertKind.GATEWAY_OFFLINE: st.gateway_grace_s + 2 * 3600,
    }
    return lasted >= need.get(rule, 0)


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _quantile(values: Sequence[int], q: float) -> float | None:
    if not values:
        return None
    return float(np.quantile(np.array(values, dtype=np.float64), q))


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 2)
