"""Replay history through the same detector, sweep by sweep, as the runner would.

`replay` drives `detectors.engine.Detector` exactly as the runner does, with readings made
visible when they arrived (a daily meter's values arrive the next morning), absences from
away/home presses (the same semantics as ingest: away until `away_default_h` or home), and
smoke/gas/SOS raised when their event arrives. It returns every alert raised, with when it
was raised and cleared; `evaluation/scoring.py` matches them to the truth and
`evaluation/report.py` prints the table.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lovekey.config import DetectSettings
from lovekey.detectors.engine import Detector, Presence, Registry
from lovekey.detectors.ring import NEVER
from lovekey.simulator.checkin import ATTEMPT_OFFSETS_S, DOWN_KINDS, CheckInModel
from lovekey.vocabulary import DOOR_EVENTS, LIFE_SAFETY_EVENTS, AlertTier, CheckInAnswer, EventType

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

# From the neighbour being told to the outcome recorded: they go round, find the resident
# and whoever helps records "needed help" (the runner reads it at its next sweep)
VISIT_S = 3600


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
    tier: str = AlertTier.NEIGHBOUR  # the tier it was raised at
    asked_s: int | None = None  # the check-in stage began (the resident asked)
    answer: str | None = None  # how the stage ended: fine, none
    answered_s: int | None = None
    neighbour_s: int | None = None  # the neighbour (love-key holder) reached
    # a check-in raised after the door saw the resident go out (no water since): unanswered,
    # it does not wake the neighbour (`detect.door_out_holds_neighbour`)
    door_out: bool = False

    def __post_init__(self) -> None:
        if self.tier == AlertTier.NEIGHBOUR and self.neighbour_s is None:
            self.neighbour_s = self.raised_s  # raised at the neighbour tier: woken at once

    @property
    def check_in(self) -> bool:
        return self.tier == AlertTier.CHECK_IN


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
    # how residents answer a check-in (the simulator's model over its truth); None: no stage
    # is simulated, a check-in alert stays a check-in unless its neighbour tier fires
    check_in: CheckInModel | None = None
    # local hours in which nobody is asked (start, end); the stage waits for their end
    quiet_hours: tuple[int, int] | None = None
    # a resident who answered "fine" after the first ask at least `slow_after` times (0:
    # never) in the last `slow_window_s` gets `slow_extra` more asks (the chains'
    # `check_in_slow`, alerts.check_in_slow_after / _days)
    slow_extra: int = 0
    slow_after: int = 0
    slow_window_s: int = 28 * 86400


def replay(
    data: ReplayData,
    settings: DetectSettings,
    *,
    step_s: int,
    utc_offset_s: int,
    away_default_s: int,
    max_flow_lpm: float | None,
    gateway_offline_since: Mapping[str, Sequence[tuple[int, int]]] | None = None,
) -> list[RaisedAlert]:
    """Run the detector over [start_s, end_s), one sweep every `step_s` of simulated time.
    `max_flow_lpm` is `ingest.max_flow_lpm`, as the runner gives it (None: no limit)."""
    reg = data.registry
    det = Detector(reg, settings, now_s=data.start_s, utc_offset_s=utc_offset_s, max_flow_lpm=max_flow_lpm)
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

    answered = np.full(residents, NEVER, np.int64)  # per resident: their last "fine"
    active_at = np.full(residents, NEVER, np.int64)  # per resident: their last door passage
    # per resident and quarter of the day: the longest dry stretch answered "fine" at
    fine_dry = np.zeros((residents, 4), np.int64)
    # as the runner reads them: the answers of the last `routine_history_days`
    fine_window = _FineWindow(fine_dry, settings.routine_history_days * 86400, settings.check_in_fine_nth)
    # and the stretches a visit found the resident well at after an unanswered check-in
    found_dry = np.zeros((residents, 4), np.int64)
    found_window = _FineWindow(
        found_dry, settings.routine_history_days * 86400, max(1, settings.check_in_found_fine_nth)
    )
    door_seen = False
    stages: list[tuple[int, RaisedAlert, str]] = []  # (settled at, alert, answer), by time
    late = _LateAnswers(data.slow_after, data.slow_window_s)
    # per resident: the start of the dry run they were last found needing help in (the
    # simulated outcome of a visit to a resident the truth has down); see `_Visits`
    visits = _Visits(data.check_in, residents, res_index)
    within_s = int(settings.check_in_found_fine_within_h * 3600)

    def found_well(well: _FoundWell) -> None:
        """As `found_well_stretches` (detectors/store.py) reads a visit's outcome: the part
        of the day the resident was asked in, the stretch until found (at most `within_s`
        after the ask), within the window from the stage's end."""
        quarter = ((well.asked_s + utc_offset_s) % 86400) // 21600
        stretch = well.asked_s - well.since_s + min(well.found_s - well.asked_s, within_s)
        found_window.add(well.settled_s, well.resident, quarter, stretch)

    if settings.check_in_found_fine_nth > 0:
        visits.found_well = found_well

    quiet = data.quiet_hours
    t, lo = data.start_s, 0
    while t < data.end_s:
        t = min(t + step_s, data.end_s)
        # check-in stages settled by now: "fine" closes the alert, no answer wakes the neighbour
        stages.sort(key=lambda x: x[0])
        while stages and stages[0][0] <= t:
            settled, alert, answer = stages.pop(0)
            if alert.cleared_s is not None or alert.neighbour_s is not None:
                continue  # closed by water, or the neighbour tier got there first
            alert.answer, alert.answered_s = answer, settled
            if answer == CheckInAnswer.FINE:
                alert.cleared_s = settled
                open_alerts.pop((alert.kind, alert.subject), None)
                r = res_index.get(alert.resident_id or "")
                if r is not None and alert.asked_s is not None:
                    answered[r] = max(answered[r], settled)
                    quarter = ((alert.asked_s + utc_offset_s) % 86400) // 21600
                    dry = alert.asked_s - alert.since_s
                    fine_window.add(settled, r, quarter, dry)
                    if settled - alert.asked_s >= ATTEMPT_OFFSETS_S[1]:
                        late.add(r, alert.asked_s)
            elif not alert.door_out:  # after a passage out, the neighbour tier decides
                alert.neighbour_s = settled
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
            elif ev.type in DOOR_EVENTS and r is not None:  # seen up and about
                active_at[r] = max(active_at[r], ev.ts_s)
                door_seen = True
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
                            neighbour_s=ev.arrival_s,  # life safety goes straight to people
                        )
                        out.append(alert)
        fine_window.expire(t)
        found_window.expire(t)
        visits.record(t)
        ended = (away_until != NEVER) & (away_until <= t)
        monitor_since[ended] = np.maximum(monitor_since[ended], away_until[ended])
        lapsed[ended] = away_from[ended]
        away_until[ended] = NEVER
        presence = Presence(
            away_until > t,
            monitor_since.copy(),
            lapsed.copy(),
            answered.copy(),
            active_at.copy() if door_seen else None,
            np.maximum(fine_dry, found_dry),
            visits.found.copy() if visits.any else None,
        )
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
                    tier=change.tier,
                    door_out=bool(change.details.get("door_out")),
                )
                open_alerts[key] = alert
                out.append(alert)
                visits.watch(alert)
                if not alert.check_in:
                    alert.neighbour_s = t
                elif change.details.get("neighbour_tier") and _after_quiet(t, quiet, utc_offset_s) > t:
                    # raised asking first although the neighbour tier fired: in quiet hours
                    # the neighbour is told at once (alerts/escalation.py, `check_in_urgent`)
                    alert.neighbour_s = t
                elif data.check_in is not None and alert.resident_id is not None:
                    alert.asked_s = _after_quiet(t, data.quiet_hours, utc_offset_s)
                    r = res_index.get(alert.resident_id)
                    extra = data.slow_extra if r is not None and late.slow(r, alert.asked_s) else 0
                    answer, settled = data.check_in.answer(alert.resident_id, alert.asked_s, extra)
                    stages.append((settled, alert, answer))
            elif change.action == "escalate":
                if key in open_alerts and open_alerts[key].neighbour_s is None:
                    open_alerts[key].neighbour_s = t
            elif key in open_alerts:
                open_alerts.pop(key).cleared_s = t
    return out


class _FineWindow:
    """Per resident and quarter of the day, the `nth` longest dry stretch answered "fine"
    within the last `window_s`, kept in `table` (`detectors/store.py` `fine_dry_stretches`)."""

    def __init__(self, table: I64, window_s: int, nth: int = 1) -> None:
        self.table = table
        self.window_s = window_s
        self.nth = nth
        self._order: deque[tuple[int, int, int]] = deque()  # (answered, resident, quarter)
        self._cells: dict[tuple[int, int], deque[tuple[int, int]]] = {}  # -> (answered, dry)

    def add(self, answered_s: int, resident: int, quarter: int, dry_s: int) -> None:
        self._order.append((answered_s, resident, quarter))
        cell = self._cells.setdefault((resident, quarter), deque())
        cell.append((answered_s, dry_s))
        self._update(resident, quarter, cell)

    def expire(self, now_s: int) -> None:
        while self._order and self._order[0][0] <= now_s - self.window_s:
            _, r, q = self._order.popleft()
            cell = self._cells[(r, q)]
            cell.popleft()
            self._update(r, q, cell)

    def _update(self, r: int, q: int, cell: deque[tuple[int, int]]) -> None:
        longest = sorted((dry for _, dry in cell), reverse=True)
        self.table[r, q] = longest[self.nth - 1] if len(longest) >= self.nth else 0


class _LateAnswers:
    """Per resident, when they were asked the check-ins they answered "fine" only after the
    first ask: a resident with `after` of them (0: never) asked in the last `window_s` is a
    slow answerer (`alerts/escalation_pass.py`, `_slow_answerer`)."""

    def __init__(self, after: int, window_s: int) -> None:
        self.after = after
        self.window_s = window_s
        self._times: dict[int, deque[int]] = {}

    def add(self, resident: int, asked_s: int) -> None:
        self._times.setdefault(resident, deque()).append(asked_s)

    def slow(self, resident: int, now_s: int) -> bool:
        times = self._times.get(resident)
        if self.after <= 0 or times is None:
            return False
        while times and times[0] <= now_s - self.window_s:
            times.popleft()
        return len(times) >= self.after


def _after_quiet(t_s: int, quiet: tuple[int, int] | None, utc_offset_s: int) -> int:
    """`t_s`, or the end of the quiet hours it falls in (nobody is asked at night)."""
    if quiet is None:
        return t_s
    start_h, end_h = quiet
    local = (t_s + utc_offset_s) % 86400
    hour = local / 3600
    inside = (start_h <= hour or hour < end_h) if start_h > end_h else (start_h <= hour < end_h)
    if not inside:
        return t_s
    wait = (end_h * 3600 - local) % 86400
    return t_s + int(wait)


def _rebuild(det: Detector, data: ReplayData, by_meter: I64, bounds: I64, dirty: I64, t: int) -> None:
    rows = np.concatenate([by_meter[bounds[m] : bounds[m + 1]] for m in dirty.tolist()])
    seen = rows[(data.arrival_s[rows] <= t) & (data.ts_s[rows] >= t - det.ring.buckets * det.bucket_s)]
    det.rebuild(dirty, data.meter[seen], data.ts_s[seen], data.total_l[seen], data.arrival_s[seen])


def alerts_json(alerts: Sequence[RaisedAlert]) -> list[dict[str, Any]]:
    return [asdict(a) for a in alerts]


@dataclass(frozen=True, slots=True)
class _FoundWell:
    """A visit that found the resident well after a check-in they left unanswered."""

    found_s: int  # the outcome recorded
    resident: int
    settled_s: int  # the stage ended (the neighbour told)
    asked_s: int
    since_s: int  # the alert's start


class _Visits:
    """The outcome a visit records. When the neighbour has been told of an alert and the
    truth has its resident down then (collapsed: the check-in model's `DOWN_KINDS`), the
    visit finds them needing help `VISIT_S` later; `found` then holds the alert's start, as
    the runner reads it from the alert's outcome. When the neighbour was told because a
    check-in went unanswered and the resident is not down, the visit finds them well (or out)
    `VISIT_S` later and `found_well` is told, as the runner reads a `resident_ok` or `away`
    outcome. Without a check-in model nothing is found."""

    def __init__(self, model: CheckInModel | None, residents: int, res_index: Mapping[str, int]) -> None:
        self._model = model
        self._index = res_index
        self.found = np.full(residents, NEVER, np.int64)
        self.any = False
        self._waiting: list[RaisedAlert] = []  # raised, the neighbour not told yet
        self._due: list[tuple[int, int, int]] = []  # (recorded at, resident, since)
        # called with the visit when one after an unanswered check-in finds the resident
        # well: not down (resolved resident_ok or away); None: nothing is recorded
        self.found_well: Callable[[_FoundWell], None] | None = None
        self._well: list[_FoundWell] = []

    def watch(self, alert: RaisedAlert) -> None:
        if self._model is not None and alert.resident_id in self._index:
            self._waiting.append(alert)

    def record(self, t: int) -> None:
        """Outcomes recorded by `t`, from the alerts whose neighbour was told before it."""
        if self._model is None:
            return
        waiting: list[RaisedAlert] = []
        for a in self._waiting:
            rid = a.resident_id or ""
            if a.neighbour_s is None and a.cleared_s is None:
                waiting.append(a)
            elif a.neighbour_s is not None and self._model.doing(rid, a.neighbour_s) in DOWN_KINDS:
                self._due.append((a.neighbour_s + VISIT_S, self._index[rid], a.since_s))
            elif (
                self.found_well is not None
                and a.neighbour_s is not None
                and a.answer == CheckInAnswer.NONE
                and a.asked_s is not None
            ):
                found = a.neighbour_s + VISIT_S
                self._well.append(_FoundWell(found, self._index[rid], a.neighbour_s, a.asked_s, a.since_s))
        self._waiting = waiting
        if self._well and self.found_well is not None:
            for well in self._well:
                if well.found_s <= t:
                    self.found_well(well)
            self._well = [well for well in self._well if well.found_s > t]
        still: list[tuple[int, int, int]] = []
        for at, r, since in self._due:
            if at <= t:
                self.found[r] = max(self.found[r], since)
                self.any = True
            else:
                still.append((at, r, since))
        self._due = still
