"""Scoring: replay history through the same detector, sweep by sweep, against ground truth.

`replay` drives `detectors.engine.Detector` exactly as the runner does, with readings made
visible when they arrived (a daily meter's values arrive the next morning), absences from
away/home presses (the same semantics as ingest: away until `away_default_h` or home), and
smoke/gas/SOS raised when their event arrives. `score` matches the alerts to the truth and
reports, per rule: recall, precision, false alerts per household-month and time to alert.

Matching. An alert matches an incident when it is about the same resident (the device for
meter_silent, the gateway for gateway_offline; a meter of an outage's gateway also matches
it), its kind answers the incident's kind (`TARGETS`), it was raised after the incident
began, and the condition it reports began before the incident ended (`since < end`). An
alert matching nothing is false. Recall counts the incidents long enough for a rule to see
them: e.g. a no-use incident is due for `low_usage` once it has lasted 12 h plus twice the
meter's reporting interval plus an hour (a daily meter tells tomorrow what happened today).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from lovekey.config import DetectSettings
from lovekey.detectors.engine import Detector, Presence, Registry
from lovekey.detectors.ring import NEVER
from lovekey.vocabulary import (
    LIFE_SAFETY_EVENTS,
    LIFE_SAFETY_KINDS,
    MAINTENANCE_KINDS,
    RESIDENT_KINDS,
    WELFARE_KINDS,
    AlertKind,
    EventType,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

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
class RaisedAlert:
    kind: str
    subject: str
    resident_id: str | None
    device_id: str | None
    gateway_id: str | None
    since_s: int
    raised_s: int
    cleared_s: int | None = None


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """A device event as the platform gets it: `arrival_s` is when it was committed."""

    arrival_s: int
    ts_s: int
    type: str  # smoke, gas, sos, away, home, ...
    active: bool
    resident_id: str | None
    device_id: str
    gateway_id: str


@dataclass(frozen=True, slots=True)
class ReplayData:
    """Everything a replay needs, columnar where it is large."""

    registry: Registry
    meter: I64  # readings: meter index, ts, litres, arrival (any order)
    ts_s: I64
    total_l: F64
    arrival_s: I64
    events: Sequence[ReplayEvent]
    start_s: int
    end_s: int


def replay(
    data: ReplayData,
    settings: DetectSettings,
    *,
    step_s: int,
    utc_offset_s: int,
    away_default_s: int,
    gateway_offline_since: Mapping[str, Sequence[tuple[int, int]]] | None = None,
) -> list[RaisedAlert]:
    """Run the detector over [start_s, end_s), one sweep every `step_s` of simulated time."""
    reg = data.registry
    det = Detector(reg, settings, now_s=data.start_s, utc_offset_s=utc_offset_s)
    order = np.argsort(data.arrival_s, kind="stable")
    arrival = data.arrival_s[order]
    by_meter = np.argsort(data.meter, kind="stable")  # for rebuilding a meter from history
    meter_bounds = np.searchsorted(data.meter[by_meter], np.arange(len(reg.meter_ids) + 1))
    res_index = {r: i for i, r in enumerate(reg.resident_ids)}
    gw_index = {g: i for i, g in enumerate(reg.gateway_ids)}
    residents = len(reg.resident_ids)
    away_until = np.full(residents, NEVER, np.int64)
    away_from = np.full(residents, NEVER, np.int64)
    lapsed = np.full(residents, NEVER, np.int64)
    monitor_since = np.full(residents, NEVER, np.int64)
    events = sorted(data.events, key=lambda e: (e.arrival_s, e.ts_s))
    next_event = 0
    open_alerts: dict[tuple[str, str], RaisedAlert] = {}
    out: list[RaisedAlert] = []
    raised_events: set[tuple[str, str, int]] = set()
    status = {g: sorted(v) for g, v in (gateway_offline_since or {}).items()}

    t, lo = data.start_s, 0
    while t < data.end_s:
        t = min(t + step_s, data.end_s)
        hi = int(np.searchsorted(arrival, t, side="right"))
        if hi > lo:
            rows = order[lo:hi]
            result = det.apply(data.meter[rows], data.ts_s[rows], data.total_l[rows], data.arrival_s[rows])
            if result.dirty.size:
                _rebuild(det, data, by_meter, meter_bounds, result.dirty, t)
            lo = hi
        # events arriving in this step: presence, and life-safety alerts at once
        while next_event < len(events) and events[next_event].arrival_s <= t:
            ev = events[next_event]
            next_event += 1
            r = res_index.get(ev.resident_id or "")
            if ev.type == EventType.AWAY and r is not None:
                away_until[r] = ev.ts_s + away_default_s
                away_from[r] = ev.ts_s
                lapsed[r] = NEVER
            elif ev.type == EventType.HOME and r is not None:
                if away_until[r] != NEVER or lapsed[r] != NEVER:
                    monitor_since[r] = max(monitor_since[r], ev.ts_s)
                away_until[r] = NEVER
                lapsed[r] = NEVER
            elif ev.type in LIFE_SAFETY_EVENTS and ev.active and ev.resident_id:
                event_key = (ev.type, ev.resident_id, ev.ts_s)
                if event_key not in raised_events:
                    raised_events.add(event_key)
                    if (ev.type, ev.resident_id) not in open_alerts:
                        alert = RaisedAlert(
                            ev.type,
                            ev.resident_id,
                            ev.resident_id,
                            ev.device_id,
                            ev.gateway_id,
                            ev.ts_s,
                            ev.arrival_s,
                        )
                        out.append(alert)
        ended = (away_until != NEVER) & (away_until <= t)
        monitor_since[ended] = np.maximum(monitor_since[ended], away_until[ended])
        lapsed[ended] = away_from[ended]
        away_until[ended] = NEVER
        presence = Presence(away_until > t, monitor_since.copy(), lapsed.copy())
        offline = None
        if status:
            offline = np.full(len(reg.gateway_ids), NEVER, np.int64)
            for g, spans in status.items():
                i = gw_index.get(g)
                if i is not None:
                    for a, b in spans:
                        if a <= t < b:
                            offline[i] = a
        for change in det.sweep(t, presence, offline):
            key = (change.kind, change.subject)
            if change.action == "raise":
                alert = RaisedAlert(
                    change.kind,
                    change.subject,
                    change.resident_id,
                    change.device_id,
                    change.gateway_id,
                    change.since_s,
                    t,
                )
                open_alerts[key] = alert
                out.append(alert)
            elif key in open_alerts:
                open_alerts.pop(key).cleared_s = t
    return out


def _rebuild(det: Detector, data: ReplayData, by_meter: I64, bounds: I64, dirty: I64, t: int) -> None:
    rows = np.concatenate([by_meter[bounds[m] : bounds[m + 1]] for m in dirty.tolist()])
    seen = rows[(data.arrival_s[rows] <= t) & (data.ts_s[rows] >= t - det.ring.buckets * det.bucket_s)]
    det.rebuild(dirty, data.meter[seen], data.ts_s[seen], data.total_l[seen], data.arrival_s[seen])


# -- scoring ----------------------------------------------------------------------------------


@dataclass(slots=True)
class RuleScore:
    rule: str
    alerts: int = 0
    true_alerts: int = 0
    false_alerts: int = 0
    incidents: int = 0  # incidents of the kinds this rule is judged on, long enough
    detected: int = 0
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
    neighbour_false = [
        scored[ai] for ai, tis in matches.items() if not tis and scored[ai].kind in RESIDENT_KINDS
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
    caused = [
        a
        for a in scored
        if a.kind in (AlertKind.LOW_USAGE, AlertKind.ROUTINE_BREAK)
        and _overlaps_kind(a, told, ("meter_silent", "gateway_outage", "planned_absence"), gateway_of)
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
        "neighbour": {
            "alerts": sum(1 for a in scored if a.kind in RESIDENT_KINDS),
            "false_alerts": len(neighbour_false),
            "false_per_household_month": round(len(neighbour_false) / months, 4) if months else None,
            "false_during": explained,
            "caused_by_silent_meter_or_away": len(caused),
            "during_absences_whose_press_was_lost": len(during_lost),
        },
        "checks_per_household_month": round(sum(1 for a in scored if a.kind in RESIDENT_KINDS) / months, 4)
        if months
        else None,
    }


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


def _overlaps_kind(
    alert: RaisedAlert, truth: Iterable[Truth], kinds: Sequence[str], gateway_of: Mapping[str, str]
) -> bool:
    """Whether the alert's evidence [since, raised] overlaps an incident of these kinds."""
    for inc in truth:
        if inc.kind not in kinds:
            continue
        mine = (inc.resident_id is not None and inc.resident_id == alert.resident_id) or (
            inc.gateway_id is not None and inc.gateway_id == gateway_of.get(alert.device_id or "")
        )
        if not mine and inc.kind == "gateway_outage" and alert.resident_id:
            mine = inc.gateway_id == alert.gateway_id
        end = (1 << 62) if inc.end_s is None else inc.end_s
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


# -- presentation -----------------------------------------------------------------------------


def render(report: Mapping[str, Any]) -> str:
    """The report as a terminal table."""
    head = (
        f"{'rule':<16}{'alerts':>7}{'false':>7}{'incid.':>7}{'found':>7}{'recall':>8}"
        f"{'precis.':>8}{'false/hh-mo':>12}{'median h':>10}{'p90 h':>8}"
    )
    lines = [
        f"{report['households']} households x {report['days']} days"
        f" ({report['household_months']} household-months scored)",
        head,
        "-" * len(head),
    ]
    for r in report["rules"]:
        lines.append(
            f"{r['rule']:<16}{r['alerts']:>7}{r['false_alerts']:>7}{r['incidents']:>7}"
            f"{r['detected']:>7}{_pct(r['recall']):>8}{_pct(r['precision']):>8}"
            f"{_num(r['false_per_household_month'], 3):>12}{_num(r['median_h'], 1):>10}"
            f"{_num(r['p90_h'], 1):>8}"
        )
    nu, nb = report["no_use"], report["neighbour"]
    lines += [
        "",
        f"no-use incidents: {nu['incidents']} ({nu['not_judged_meter_silent']} while the meter"
        f" could not be heard); due after 12 h: {nu['due_after_12h']};"
        f" found by low_usage or routine_break: {nu['detected_by_low_usage_or_routine']}"
        f" (recall {_pct(nu['recall_after_12h'])})",
        f"starting 07:00-19:00: {nu['daytime_incidents']}; routine_break found"
        f" {nu['routine_break_daytime_detected']}, median {_num(nu['routine_break_daytime_median_h'], 1)} h,"
        f" p90 {_num(nu['routine_break_daytime_p90_h'], 1)} h; first alert of any rule: median"
        f" {_num(nu['first_alert_daytime_median_h'], 1)} h",
        f"neighbour alerts: {nb['alerts']}, false {nb['false_alerts']}"
        f" ({_num(nb['false_per_household_month'], 3)} per household-month);"
        f" caused by a silent meter or an away button: {nb['caused_by_silent_meter_or_away']}"
        f" (during absences whose press was lost on the way:"
        f" {nb['during_absences_whose_press_was_lost']})",
        f"false ones happened during: {json.dumps(nb['false_during'])}",
        f"all neighbour checks: {_num(report['checks_per_household_month'], 3)} per household-month",
    ]
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def alerts_json(alerts: Sequence[RaisedAlert]) -> list[dict[str, Any]]:
    return [asdict(a) for a in alerts]
