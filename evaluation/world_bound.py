"""The best dry-run threshold per start hour on the very world `lovekey evaluate` scores.

`python -m lovekey.evaluation.world_bound --residents 2000 --days 30 --seed S
[--scenario simulator/scenarios/no_use_20x.toml] [--unanswered 0.05] [--by hour|hour-mobile]
[--choose-seed S2] [--slow-extra N] [--door-oracle]`

`evaluation/stages_bound.py` simulates years of a simpler life (day outs and cleaning days
only, every reading at once). This study builds the same world as `lovekey evaluate` (the
same seed, scenario, warm-up and scored days, door reminders drawn the same way), keeps the
water-only households, and replays their readings as the platform receives them (a daily
meter's values arrive the next morning; an outage's late). Its family of rules:

- one threshold per local hour in which a dry run began (the reading that showed the last
  use), the same for every resident (`--by hour-mobile`: a second set for residents who
  carry a mobile, what a registry field saying so would buy);
- a dry run that reaches its threshold in a reading the platform has received raises a
  check-in at the next sweep (every 15 min); the resident is asked at once (`evaluate`'s
  default: no quiet hours) and answers as `simulator/checkin.py` says, from the truth;
- "fine" restarts the dry run from the answer; no answer wakes the neighbour when the
  stage ends, unless water was seen by then; an away press holds the rule until the
  resident is back, as the detectors do.

It is scored as `evaluate` scores: check-ins and false neighbour alerts per household-month
over the scored days, and, for daytime (07-19) no-use incidents, the median time from onset
to the check-in and to the neighbour (an incident the rule never reaches counts as later
than every other). The oracle chooses its thresholds on the scored world itself (in sample:
it knows the future), by Lagrange weights on incidents reaching the neighbour within
`within` hours against false neighbour alerts and check-ins, each hour on its own; every
point is then measured exactly. It pays for nothing else: no 12-hour net, no floor, no
leak or running-tap rule. `--choose-seed` chooses on another seed's world instead (out of
sample, what a rule learned from a district's history could do).

So the frontier is a generous bound on any rule of this family: a rule that reads only the
length of the resident's current dry run and the hour it began. Two options give the rule
more than the platform has: `--slow-extra N` gives the residents the model makes hard to reach
N more asks (what the chains' `check_in_slow` gives those whose answers came late), and
`--door-oracle` knows when each resident is out and asks nobody then, counting again from
their return: a perfect door reminder, the most a door household's rule could know from it
(the door sees nothing of a quiet afternoon at home).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lovekey.evaluation.replay import ReplayEvent
from lovekey.evaluation.scoring import TARGETS
from lovekey.simulator.checkin import OUT_KINDS, CheckInModel, stage_s
from lovekey.vocabulary import AlertKind, CheckInAnswer, EventType

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]

NEVER = np.int64(1 << 50)
INF = float("inf")
# `detect.use_min_l` when the documented bounds were measured (now 0.2): kept so they reproduce
USE_MIN_L = 0.5
MONTH_S = 30 * 86400
# candidate thresholds: 1 h to 16 h in half hours, and never
CANDIDATES_S = np.append(np.arange(2, 33) * 1800, NEVER).astype(np.int64)
MATCHES = TARGETS[AlertKind.ROUTINE_BREAK]  # what a welfare alert is true for


@dataclass(frozen=True, slots=True)
class Incident:
    resident: int
    start_s: int
    end_s: int  # NEVER when open


@dataclass(slots=True)
class Study:
    """The water-only households' dry runs, as the platform would see them."""

    resident_ids: list[str]
    mobile: BOOL  # per resident: carries a mobile (the registry field of `--by hour-mobile`)
    keys: I64  # readings, sorted: meter << 40 | ts
    arrival_s: I64  # per reading: when it was received
    run_resident: I64
    run_meter: I64
    run_anchor_s: I64  # the reading that showed the last use
    run_hi: I64  # index of the next use's reading (alarms come from readings before it)
    run_end_s: I64  # when that use was received (the alert clears); NEVER: still dry at the end
    incidents: list[Incident]  # daytime no-use incidents in the scored days
    truth: dict[int, list[Incident]]  # per resident: what a welfare alert is true for
    away: dict[int, list[tuple[int, int, bool]]]  # per resident: (from, to, ended by a home press)
    model: CheckInModel
    start_s: int
    scored_from_s: int
    end_s: int
    step_s: int
    utc_offset_s: int
    household_months: float
    # per resident: more asks in their check-in stage (`--slow-extra`: the chains'
    # `check_in_slow` for those who answer late, here known from the model)
    extra_asks: I64 | None = None
    # `--door-oracle`: the rule knows when the resident is out (a perfect door reminder) and
    # asks nobody then; the count restarts when they are back
    door_oracle: bool = False

    def asks_more(self, resident: int) -> int:
        return 0 if self.extra_asks is None else int(self.extra_asks[resident])

    def local_hour(self, t: I64) -> I64:
        return ((t + self.utc_offset_s) % 86400) // 3600


@dataclass(frozen=True, slots=True)
class Outcome:
    check_ins: int
    false_neighbour: int
    to_check_in_h: list[float]  # per daytime incident (inf: never reached)
    to_neighbour_h: list[float]

    def row(self, months: float) -> dict[str, float]:
        ci = np.array(self.to_check_in_h)
        nb = np.array(self.to_neighbour_h)
        return {
            "check_ins_per_household_month": round(self.check_ins / months, 3),
            "false_neighbour_per_household_month": round(self.false_neighbour / months, 4),
            "onset_to_check_in_median_h": _median(ci),
            "onset_to_neighbour_median_h": _median(nb),
            "neighbour_within_6h": round(float((nb <= 6).mean()), 3) if nb.size else 0.0,
            "incidents": int(nb.size),
        }


def _median(x: F64) -> float:
    if x.size == 0:
        return INF
    m = float(np.median(x))
    return round(m, 2) if np.isfinite(m) else INF


# -- building the study -------------------------------------------------------------------


def build(
    *,
    residents: int,
    days: float,
    warmup_days: float,
    seed: int,
    scenario: Path | None,
    door_share: float,
    unanswered: float,
    step_min: int,
    start: str,
) -> Study:
    from lovekey.config import Settings
    from lovekey.evaluation.sources import from_world, stage_models
    from lovekey.simulator import Scenario, World

    settings = Settings()
    world = World.build(
        Scenario.load(scenario),
        residents=residents,
        seed=seed,
        start=settings.parse_time(start),
        days=warmup_days + days,
    )
    source = from_world(world, settings.detect)
    data = source.data
    offset = settings.zone.utcoffset(datetime.fromtimestamp(data.start_s, UTC))
    offset_s = int(offset.total_seconds()) if offset is not None else 0
    model, door = stage_models(
        source, seed=seed, unanswered=unanswered, door_share=door_share, utc_offset_s=offset_s
    )
    reg = data.registry
    water_only = [r for r in reg.resident_ids if not door.has_reminder(r)]
    r_index = {r: i for i, r in enumerate(water_only)}
    meter_res = np.array(
        [r_index.get(reg.resident_ids[r], -1) if r >= 0 else -1 for r in reg.resident_of], np.int64
    )
    keep = meter_res[data.meter] >= 0
    meter, ts, total, arrival = data.meter[keep], data.ts_s[keep], data.total_l[keep], data.arrival_s[keep]
    order = np.lexsort((ts, meter))
    meter, ts, total, arrival = meter[order], ts[order], total[order], arrival[order]
    keys = (meter << 40) | ts
    first = np.r_[True, meter[1:] != meter[:-1]]
    diff = np.r_[0.0, np.diff(total)]
    used = ~first & ((diff >= USE_MIN_L) | (diff < 0))  # a swap's restart ends a run too
    u = np.flatnonzero(used)
    # a run from each use reading to the next use reading of the same meter
    nxt = np.r_[u[1:], len(ts)]
    same = np.r_[meter[u[1:]] == meter[u[:-1]], False]
    meter_end = np.searchsorted(meter, meter[u], side="right")
    hi = np.where(same, nxt, meter_end)
    end_s = np.where(same, arrival[np.minimum(nxt, len(ts) - 1)], NEVER)
    scored_from = data.start_s + int(warmup_days * 86400)
    truth: dict[int, list[Incident]] = {}
    incidents = []
    for t in source.truth:
        r = r_index.get(t.resident_id or "")
        if r is None or t.kind not in MATCHES:
            continue
        inc = Incident(r, t.start_s, int(NEVER) if t.end_s is None else t.end_s)
        truth.setdefault(r, []).append(inc)
        hour = ((t.start_s + offset_s) % 86400) / 3600
        if t.kind == "no_use" and scored_from <= t.start_s < data.end_s and 7 <= hour < 19:
            incidents.append(inc)
    away = _away_spans(data.events, r_index, int(settings.ingest.away_default_h * 3600))
    return Study(
        resident_ids=water_only,
        mobile=np.array([model.carries_mobile(r) for r in water_only], np.bool_),
        keys=keys,
        arrival_s=arrival,
        run_resident=meter_res[meter[u]],
        run_meter=meter[u],
        run_anchor_s=ts[u],
        run_hi=hi,
        run_end_s=end_s,
        incidents=incidents,
        truth=truth,
        away=away,
        model=model,
        start_s=data.start_s,
        scored_from_s=scored_from,
        end_s=data.end_s,
        step_s=step_min * 60,
        utc_offset_s=offset_s,
        household_months=len(water_only) * (data.end_s - scored_from) / MONTH_S,
    )


def _away_spans(
    events: Sequence[ReplayEvent], r_index: Mapping[str, int], away_default_s: int
) -> dict[int, list[tuple[int, int, bool]]]:
    """Per resident: the absences the platform was told of, (from, to, ended by `home`).
    One that ran out (`ended` False) lasts, as in the detectors, until water is used."""
    out: dict[int, list[tuple[int, int, bool]]] = {}
    pressed: dict[int, int] = {}
    for ev in sorted(events, key=lambda e: e.ts_s):
        r = r_index.get(ev.resident_id or "")
        if r is None:
            continue
        if ev.type == EventType.AWAY:
            if r in pressed:
                a = pressed[r]
                out.setdefault(r, []).append(
                    (a, min(ev.ts_s, a + away_default_s), ev.ts_s <= a + away_default_s)
                )
            pressed[r] = ev.ts_s
        elif ev.type == EventType.HOME and r in pressed:
            a = pressed.pop(r)
            ended = ev.ts_s <= a + away_default_s
            out.setdefault(r, []).append((a, ev.ts_s if ended else a + away_default_s, ended))
    for r, a in pressed.items():
        out.setdefault(r, []).append((a, a + away_default_s, False))
    return out


# -- measuring one choice of thresholds -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckIn:
    since_s: int  # where the dry run was counted from (the use, or the last "fine")
    raised_s: int
    neighbour_s: int | None  # woken when the stage ended unanswered and no water came
    run_end_s: int


def with_slow_extra(study: Study, extra: int) -> Study:
    """`study` with `extra` more asks for each resident the model makes hard to reach."""
    if extra:
        hard = [study.model.hard_to_reach(r) for r in study.resident_ids]
        study.extra_asks = np.array(hard, np.int64) * extra
    return study


def groups_of(study: Study, by: str) -> I64:
    """Per resident, the row of the threshold table that applies to them."""
    if by == "hour":
        return np.zeros(len(study.resident_ids), np.int64)
    if by == "hour-mobile":
        return study.mobile.astype(np.int64)
    raise ValueError(f"unknown grouping {by!r}")


def _relevant(study: Study) -> I64:
    """The runs that can raise a check-in in the scored days."""
    return np.flatnonzero((study.run_end_s > study.scored_from_s) & (study.run_anchor_s < study.end_s))


def _alarm(study: Study, runs: I64, target: I64) -> tuple[I64, BOOL]:
    """For each run, the sweep at which a reading at or after `target` was there to see (and
    whether one came before the run's next use and the end)."""
    k = np.searchsorted(study.keys, (study.run_meter[runs] << 40) | np.minimum(target, NEVER - 1))
    ok = k < study.run_hi[runs]
    arrival = study.arrival_s[np.minimum(k, len(study.keys) - 1)]
    step = study.step_s
    alarm = study.start_s + -(-(arrival - study.start_s) // step) * step
    ok &= (alarm < study.run_end_s[runs]) & (alarm < study.end_s)
    return np.where(ok, alarm, NEVER), ok


def _held(study: Study, resident: int, anchor_s: int, t_s: int) -> int | None:
    """Whether an absence the platform was told of holds the rule at `t_s`: None if not,
    else where the run restarts (NEVER: not before water is used)."""
    for a, b, ended in study.away.get(resident, ()):
        if a <= t_s < b:
            return b if ended else int(NEVER)
        if not ended and a <= t_s and anchor_s <= b:
            return int(NEVER)
    return None


def _out_until(study: Study, resident: int, t_s: int) -> int | None:
    """With `door_oracle`: the end of the time out the resident is in at `t_s` (None: home)."""
    if not study.door_oracle:
        return None
    for kind, start, end in study.model.spans.get(study.resident_ids[resident], ()):
        if kind in OUT_KINDS and start <= t_s < end:
            return end
    return None


def measure(study: Study, thresholds: I64, group: I64) -> Outcome:
    """Replay the rule `thresholds[group, hour]` (seconds; NEVER: never) exactly."""
    runs = _relevant(study)
    since = study.run_anchor_s[runs].copy()
    records: dict[int, list[CheckIn]] = {}
    model, ids = study.model, study.resident_ids
    while runs.size:
        res = study.run_resident[runs]
        limit = thresholds[group[res], study.local_hour(since)]
        alarm, ok = _alarm(study, runs, since + limit)
        ok &= limit < NEVER
        nxt_runs, nxt_since = [], []
        for run, r, start, at in zip(
            runs[ok].tolist(), res[ok].tolist(), since[ok].tolist(), alarm[ok].tolist(), strict=True
        ):
            end = int(study.run_end_s[run])
            restart = _held(study, r, int(study.run_anchor_s[run]), at)
            if restart is None:
                restart = _out_until(study, r, at)
            if restart is not None:
                if restart < end:
                    nxt_runs.append(run)
                    nxt_since.append(restart)
                continue
            answer, settled = model.answer(ids[r], at, study.asks_more(r))
            woken = None
            if answer == CheckInAnswer.FINE:
                if settled < end:
                    nxt_runs.append(run)
                    nxt_since.append(settled)
            elif end > settled:
                woken = settled
            records.setdefault(r, []).append(CheckIn(start, at, woken, end))
        runs = np.array(nxt_runs, np.int64)
        since = np.array(nxt_since, np.int64)
    return _score(study, records)


def _true(study: Study, r: int, c: CheckIn) -> bool:
    return any(inc.start_s <= c.raised_s and c.since_s < inc.end_s for inc in study.truth.get(r, ()))


def _score(study: Study, records: Mapping[int, list[CheckIn]]) -> Outcome:
    lo, hi = study.scored_from_s, study.end_s
    check_ins = false_neighbour = 0
    for r, cs in records.items():
        for c in cs:
            if lo <= c.raised_s < hi:
                check_ins += 1
                if c.neighbour_s is not None and not _true(study, r, c):
                    false_neighbour += 1
    to_check_in, to_neighbour = [], []
    for inc in study.incidents:
        asked = woke = INF
        for c in records.get(inc.resident, ()):
            if c.raised_s >= inc.start_s and c.since_s < inc.end_s:
                asked = min(asked, c.raised_s)
                if c.neighbour_s is not None:
                    woke = min(woke, c.neighbour_s)
            elif c.raised_s < inc.start_s < c.run_end_s and c.neighbour_s is not None:
                asked = woke = min(woke, inc.start_s)  # already open: found at its start
        to_check_in.append((min(asked, woke) - inc.start_s) / 3600)
        to_neighbour.append((woke - inc.start_s) / 3600)
    return Outcome(check_ins, false_neighbour, to_check_in, to_neighbour)


# -- choosing: each hour on its own, by Lagrange weights --------------------------------------


@dataclass(frozen=True, slots=True)
class Table:
    """Per group, start hour and candidate: the first check-ins' expected cost and the
    incidents whose neighbour would be woken within `within_s` of onset."""

    check_ins: F64  # (groups, 24, candidates)
    false_neighbour: F64
    caught: F64
    incidents: int


def _incident_runs(study: Study, incidents: Sequence[Incident]) -> tuple[I64, I64]:
    """For each incident, the run it continues (the last use before onset; -1: none) and
    its onset."""
    onset = np.array([inc.start_s for inc in incidents], np.int64)
    res = np.array([inc.resident for inc in incidents], np.int64)
    order = np.lexsort((study.run_anchor_s, study.run_resident))
    key = (study.run_resident[order] << 40) | study.run_anchor_s[order]
    k = np.searchsorted(key, (res << 40) | onset, side="right") - 1
    ok = (k >= 0) & (study.run_resident[order[np.maximum(k, 0)]] == res)
    return np.where(ok, order[np.maximum(k, 0)], -1), onset


def synthetic_incidents(study: Study, per_resident_day: float, seed: int) -> list[Incident]:
    """Incidents placed at uniform daytime (07-19) moments of the scored days, as
    `evaluation/bound.py` places them: what a district's own ordinary history can teach."""
    rng = np.random.default_rng(seed)
    days = int((study.end_s - study.scored_from_s) // 86400)
    n = int(len(study.resident_ids) * days * per_resident_day)
    res = rng.integers(0, len(study.resident_ids), n)
    day = rng.integers(0, days, n)
    local_midnight = study.scored_from_s - (study.scored_from_s + study.utc_offset_s) % 86400
    onset = local_midnight + day * 86400 + rng.integers(7 * 3600, 19 * 3600, n)
    keep = (onset >= study.scored_from_s) & (onset < study.end_s)
    return [Incident(int(r), int(t), int(NEVER)) for r, t in zip(res[keep], onset[keep], strict=True)]


def table(study: Study, group: I64, within_s: int, incidents: Sequence[Incident] | None = None) -> Table:
    """`incidents`: what the catch is judged on (default: the world's own daytime no-use
    incidents; the meter goes on reporting, dry, after each)."""
    incidents = study.incidents if incidents is None else incidents
    groups = int(group.max()) + 1
    shape = (groups, 24, len(CANDIDATES_S))
    ci, fn, caught = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    runs = _relevant(study)
    res = study.run_resident[runs]
    g = group[res]
    hour = study.local_hour(study.run_anchor_s[runs])
    anchor = study.run_anchor_s[runs]
    lo, hi = study.scored_from_s, study.end_s
    inc_run, onset = _incident_runs(study, incidents)
    found = inc_run >= 0
    inc_run, onset = inc_run[found], onset[found]
    inc_anchor = study.run_anchor_s[inc_run]
    inc_meter = study.run_meter[inc_run]
    inc_res = study.run_resident[inc_run]
    inc_cell = (group[inc_res], study.local_hour(inc_anchor))
    inc_stage = np.array([stage_s(study.asks_more(r)) for r in inc_res.tolist()], np.int64)
    meter_end = np.searchsorted(study.keys, (inc_meter + 1) << 40)
    for c, limit in enumerate(CANDIDATES_S.tolist()):
        if limit >= NEVER:
            continue
        alarm, ok = _alarm(study, runs, anchor + limit)
        ok &= (alarm >= lo) & (alarm < hi)
        for i in np.flatnonzero(ok).tolist():
            r, at = int(res[i]), int(alarm[i])
            if _out_until(study, r, at) is not None:
                continue  # a perfect door: nobody is asked while they are out
            ci[g[i], hour[i], c] += 1
            extra = study.asks_more(r)
            if at + stage_s(extra) < study.run_end_s[runs[i]] and not any(
                inc.start_s <= at and anchor[i] < inc.end_s for inc in study.truth.get(r, ())
            ):
                fn[g[i], hour[i], c] += study.model.unanswered_chance(study.resident_ids[r], at, extra)
        # asked while still well: "fine", counted again from then, until after the onset
        times = np.maximum(1, -(-(onset - inc_anchor) // limit))
        k = np.searchsorted(study.keys, (inc_meter << 40) | (inc_anchor + times * limit))
        seen = study.arrival_s[np.minimum(k, len(study.keys) - 1)]
        at = study.start_s + -(-(seen - study.start_s) // study.step_s) * study.step_s
        hit = (k < meter_end) & (at + inc_stage - onset <= within_s)
        np.add.at(caught[:, :, c], (inc_cell[0][hit], inc_cell[1][hit]), 1)
    return Table(ci, fn, caught, len(incidents))


def choose(tab: Table, *, months: float, weight_false: float, weight_check_in: float) -> I64:
    """Per group and hour, the candidate maximising incidents caught (as a share) less the
    weighted false neighbour alerts and check-ins (per household-month)."""
    score = (
        tab.caught / max(tab.incidents, 1)
        - weight_false * tab.false_neighbour / months
        - weight_check_in * tab.check_ins / months
    )
    best = np.argmax(score, axis=2)
    # a candidate that catches nothing is not worth its cost: never
    never = np.take_along_axis(score, best[..., None], axis=2)[..., 0] <= 0
    return np.where(never, NEVER, CANDIDATES_S[best])


# -- the command ------------------------------------------------------------------------------

WEIGHTS_FALSE = tuple(float(w) for w in np.geomspace(0.3, 40.0, 22).round(2))
WEIGHTS_CHECK_IN = (0.0, 0.01, 0.03)
WITHIN_H = (4.5, 5.0, 5.5, 6.0, 6.5)


def frontier(points: list[dict[str, float]]) -> list[dict[str, float]]:
    """Within the check-in budget, the points no other beats on false neighbour alerts and
    median time to the neighbour."""
    ok = sorted(
        (p for p in points if p["check_ins_per_household_month"] <= 3.0),
        key=lambda p: (p["false_neighbour_per_household_month"], p["onset_to_neighbour_median_h"]),
    )
    out: list[dict[str, float]] = []
    for p in ok:
        if not out or p["onset_to_neighbour_median_h"] < out[-1]["onset_to_neighbour_median_h"]:
            out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lovekey.evaluation.world_bound",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--residents", type=int, default=2000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--warmup-days", type=float, default=28.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--choose-seed", type=int, help="choose the thresholds on this seed's world")
    parser.add_argument("--scenario", type=Path)
    parser.add_argument("--choose-scenario", type=Path, help="the chooser's scenario (default: --scenario)")
    parser.add_argument(
        "--synthetic",
        type=float,
        default=0.0,
        metavar="PER_DAY",
        help="choose on this many placed daytime incidents per resident-day instead of the world's own",
    )
    parser.add_argument("--door-share", type=float, default=0.5)
    parser.add_argument(
        "--door-oracle",
        action="store_true",
        help="the rule knows when each resident is out and asks nobody then (a perfect door reminder)",
    )
    parser.add_argument("--unanswered", type=float, default=0.0)
    parser.add_argument(
        "--slow-extra",
        type=int,
        default=0,
        metavar="N",
        help="residents who are hard to reach get N more asks (known from the model)",
    )
    parser.add_argument("--step-min", type=int, default=15)
    parser.add_argument("--by", choices=("hour", "hour-mobile"), default="hour")
    parser.add_argument("--start", default="2026-03-01T00:00:00+08:00")
    parser.add_argument("--within", type=float, nargs="+", default=WITHIN_H, metavar="H")
    parser.add_argument("--weights-false", type=float, nargs="+", default=WEIGHTS_FALSE, metavar="W")
    parser.add_argument("--weights-check-in", type=float, nargs="+", default=WEIGHTS_CHECK_IN, metavar="W")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    began = time.monotonic()

    def study_of(seed: int, scenario: Path | None) -> Study:
        """The world of `seed`, with what the rule is told beyond the readings."""
        study = build(
            residents=args.residents,
            days=args.days,
            warmup_days=args.warmup_days,
            seed=seed,
            scenario=scenario,
            door_share=args.door_share,
            unanswered=args.unanswered,
            step_min=args.step_min,
            start=args.start,
        )
        study.door_oracle = args.door_oracle
        return with_slow_extra(study, args.slow_extra)

    study = study_of(args.seed, args.scenario)
    chooser = study
    if args.choose_seed is not None or args.choose_scenario is not None:
        chooser = study_of(
            args.seed if args.choose_seed is None else args.choose_seed, args.choose_scenario or args.scenario
        )
    chooser_seed = args.seed if args.choose_seed is None else args.choose_seed
    placed = synthetic_incidents(chooser, args.synthetic, chooser_seed) if args.synthetic else None
    group_m, group_c = groups_of(study, args.by), groups_of(chooser, args.by)
    points = []
    for within_h in args.within:
        tab = table(chooser, group_c, int(within_h * 3600), placed)
        for wf in args.weights_false:
            for wc in args.weights_check_in:
                chosen = choose(tab, months=chooser.household_months, weight_false=wf, weight_check_in=wc)
                row = measure(study, chosen, group_m).row(study.household_months)
                points.append({"within_h": within_h, "weight_false": wf, "weight_check_in": wc, **row})
                points[-1]["thresholds_h"] = np.where(chosen >= NEVER, -1, chosen / 3600).round(2).tolist()
    best = frontier(points)
    head = {
        "seed": args.seed,
        "chosen_on_seed": args.choose_seed if args.choose_seed is not None else args.seed,
        "chosen_on_scenario": str(args.choose_scenario or args.scenario or "default"),
        "synthetic_per_resident_day": args.synthetic,
        "by": args.by,
        "slow_extra": args.slow_extra,
        "door_oracle": args.door_oracle,
        "water_only_households": len(study.resident_ids),
        "household_months": round(study.household_months, 1),
        "daytime_incidents": len(study.incidents),
        "seconds": round(time.monotonic() - began),
    }
    if args.json:
        print(json.dumps({**head, "frontier": best, "points": points}, indent=1))
        return 0
    print(json.dumps(head))
    print(f"{'check-ins':>10} {'false nb':>9} {'to check-in h':>14} {'to neighbour h':>15} {'nb <= 6 h':>10}")
    for p in best:
        print(
            f"{p['check_ins_per_household_month']:>10.2f} {p['false_neighbour_per_household_month']:>9.3f}"
            f" {p['onset_to_check_in_median_h']:>14} {p['onset_to_neighbour_median_h']:>15}"
            f" {p['neighbour_within_6h']:>10.1%}"
        )
    if len(points) == 1:  # one choice asked for: its schedule, as detect.routine_check_in_schedule_h
        for row in points[0]["thresholds_h"]:
            print(json.dumps([max(h, 0.0) for h in row]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
