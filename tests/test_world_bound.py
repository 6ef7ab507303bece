"""The world bound's replay of a start-hour threshold rule, on hand-made histories (and the
command once on a small simulated district).

One resident, one meter reading every 15 minutes, residents who always answer at home and
carry no mobile: each test says when water was used and what the resident was doing, and
checks the check-ins, the neighbour and the times the rule gives.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from lovekey.evaluation import world_bound as wb
from lovekey.simulator.checkin import CheckInModel

OFFSET = 8 * 3600
DAY0 = 1_772_294_400  # a local midnight (2026-03-01 00:00 +08:00)
STEP = 900
H = 3600


def study(
    uses_h: list[float],
    *,
    spans: list[tuple[str, float, float]] = (),  # type: ignore[assignment]
    away: list[tuple[float, float, bool]] = (),  # type: ignore[assignment]
    days: int = 1,
) -> wb.Study:
    """A meter reporting every 15 min for `days`, with a use in the quarter ending at each of
    `uses_h` (hours from the first local midnight)."""
    ts = DAY0 + np.arange(1, days * 96 + 1, dtype=np.int64) * STEP
    used = np.zeros(ts.size, bool)
    for u in uses_h:
        used[int(u * 4) - 1] = True
    total = np.cumsum(np.where(used, 10.0, 0.0))
    u = np.flatnonzero(used)
    nxt = np.r_[u[1:], ts.size]
    end = np.where(np.arange(u.size) < u.size - 1, ts[np.minimum(nxt, ts.size - 1)] + 30, wb.NEVER)
    at = lambda h: DAY0 + int(h * H)  # noqa: E731
    incidents = [wb.Incident(0, at(a), at(b)) for kind, a, b in spans if kind == "no_use"]
    model = CheckInModel(
        seed=1,
        hard_to_reach_share=0.0,
        miss_others=0.0,
        mobile_share=0.0,
        utc_offset_s=OFFSET,
        spans={"R-1": [(kind, at(a), at(b)) for kind, a, b in spans]},
    )
    assert total[-1] > 0
    return wb.Study(
        resident_ids=["R-1"],
        mobile=np.zeros(1, bool),
        keys=ts.copy(),  # meter 0
        arrival_s=ts + 30,
        run_resident=np.zeros(u.size, np.int64),
        run_meter=np.zeros(u.size, np.int64),
        run_anchor_s=ts[u],
        run_hi=nxt,
        run_end_s=end,
        incidents=[i for i in incidents if 7 <= ((i.start_s + OFFSET) % 86400) / H < 19],
        truth={0: incidents} if incidents else {},
        away={0: [(at(a), at(b), ended) for a, b, ended in away]} if away else {},
        model=model,
        start_s=DAY0,
        scored_from_s=DAY0,
        end_s=DAY0 + days * 86400,
        step_s=STEP,
        utc_offset_s=OFFSET,
        household_months=days / 30,
    )


def rule(**hours: float) -> np.ndarray:
    """Thresholds by start hour (`h10=4` asks after 4 h for runs that began 10:00-10:59)."""
    out = np.full((1, 24), wb.NEVER, np.int64)
    for key, value in hours.items():
        out[0, int(key[1:])] = int(value * H)
    return out


GROUP = np.zeros(1, np.int64)


def test_a_rule_that_never_asks_raises_nothing_and_reaches_no_incident() -> None:
    s = study([8, 9, 20, 32, 44], spans=[("no_use", 10.5, 30)], days=2)
    out = wb.measure(s, rule(), GROUP)
    assert out.check_ins == 0
    assert out.to_neighbour_h == [float("inf")]


def test_a_resident_at_home_answers_and_the_count_restarts_from_the_answer() -> None:
    # dry from 10:00 to 21:00; the 14:00 reading arrives at 14:00:30 and the 14:15 sweep
    # asks, "fine" a minute later; counted from then by the hour of the answer (14: 3 h):
    # asked again at the 17:45 sweep; from 17:46 (hour 17: never) no more
    s = study([6, 10, 21])
    out = wb.measure(s, rule(h10=4, h14=3), GROUP)
    assert out.check_ins == 2
    assert out.false_neighbour == 0


def test_an_unanswered_check_in_on_a_day_out_wakes_the_neighbour() -> None:
    s = study([6, 10, 21], spans=[("day_out", 10.2, 20.5)])
    out = wb.measure(s, rule(h10=4), GROUP)
    assert (out.check_ins, out.false_neighbour) == (1, 1)


def test_water_before_the_stage_ends_wakes_nobody() -> None:
    # out until 14:20 and water at 14:30: the stage asked at 14:15 ends at 14:45
    s = study([6, 10, 14.5], spans=[("day_out", 10.2, 14.3)])
    out = wb.measure(s, rule(h10=4), GROUP)
    assert (out.check_ins, out.false_neighbour) == (1, 0)


def test_an_incident_is_reached_when_its_stage_ends_unanswered() -> None:
    # last use 10:00, on the floor from 11:00: asked at the 14:15 sweep, the neighbour 30 min
    # later: 3.25 h to the check-in, 3.75 h to the neighbour; the alert is a true one
    s = study([6, 10, 40, 44], spans=[("no_use", 11, 39)], days=2)
    out = wb.measure(s, rule(h10=4), GROUP)
    assert out.check_ins == 1
    assert out.to_check_in_h == [pytest.approx(3.25)]
    assert out.to_neighbour_h == [pytest.approx(3.75)]
    assert out.false_neighbour == 0


def test_an_away_press_holds_the_rule_until_the_resident_is_back() -> None:
    # away 10:30-16:00 (a home press): nothing asked in it; counted again from 16:00 (hour
    # 16: 2 h) -> asked at 18:15 at home, "fine"
    s = study([6, 10, 21], away=[(10.5, 16, True)])
    assert wb.measure(s, rule(h10=4, h16=2), GROUP).check_ins == 1
    # one that ran out (no home press) holds until water is used
    s = study([6, 10, 21], away=[(10.5, 12, False)])
    assert wb.measure(s, rule(h10=4, h12=1), GROUP).check_ins == 0


def test_the_choice_gives_up_hours_whose_check_ins_cost_more_than_they_catch() -> None:
    # a day out from 09:00 on day 1 (unanswered: no mobile); on day 2 the same morning's last
    # use at 08:45 and on the floor from 11:00
    uses = [6, 8.75, 19, 30, 32.75]
    s = study(uses, spans=[("day_out", 9, 18.5), ("no_use", 35, 48)], days=2)
    tab = wb.table(s, GROUP, 6 * H)
    assert tab.incidents == 1
    cheap = wb.choose(tab, months=s.household_months, weight_false=0.001, weight_check_in=0.0)
    dear = wb.choose(tab, months=s.household_months, weight_false=100.0, weight_check_in=0.0)
    assert cheap[0, 8] < wb.NEVER  # the run that began 08:45 catches the incident
    assert dear[0, 8] == wb.NEVER  # at a high price for a false neighbour, not worth it


def test_the_command_chooses_on_a_small_world_and_prints_the_schedule_asked_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """End to end on a small simulated district: one choice asked for, its figures and its
    24 hours (as `detect.routine_check_in_schedule_h` takes them)."""
    argv = ["--residents", "80", "--warmup-days", "14", "--days", "10", "--seed", "4"]
    argv += ["--synthetic", "1", "--within", "6", "--weights-false", "1", "--weights-check-in", "0.03"]
    assert wb.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    head = json.loads(lines[0])
    assert head["synthetic_per_resident_day"] == 1.0
    assert 0 < head["water_only_households"] < 80
    schedule = json.loads(lines[-1])
    assert len(schedule) == 24
    assert all(h == 0 or 1 <= h <= 16 for h in schedule)
    assert any(h > 0 for h in schedule)  # placed incidents are worth some check-ins


def test_a_late_answerers_extra_ask_reaches_the_neighbour_ten_minutes_later() -> None:
    # as above, with one more ask for this resident (`--slow-extra`): the stage ends at 40 min
    s = study([6, 10, 40, 44], spans=[("no_use", 11, 39)], days=2)
    s.extra_asks = np.ones(1, np.int64)
    out = wb.measure(s, rule(h10=4), GROUP)
    assert out.to_check_in_h == [pytest.approx(3.25)]
    assert out.to_neighbour_h == [pytest.approx(3.25 + 40 / 60)]
    # who gets them: those the model makes hard to reach
    easy = wb.with_slow_extra(study([6, 10]), 2)
    assert easy.extra_asks is not None
    assert easy.extra_asks.tolist() == [0]  # `study` has no hard-to-reach residents
    hard = study([6, 10])
    hard.model = dataclasses.replace(hard.model, hard_to_reach_share=1.0)
    assert wb.with_slow_extra(hard, 2).asks_more(0) == 2


def test_a_perfect_door_asks_nobody_while_they_are_out_and_counts_again_from_their_return() -> None:
    # out 10:12-20:30: asked at 14:15 and left unanswered without the oracle; with it nobody is
    # asked while out, and the count restarts at 20:30 (hour 20: after 15 min -> the 21:00 sweep)
    s = study([6, 10, 21], spans=[("day_out", 10.2, 20.5)])
    s.door_oracle = True
    assert wb.measure(s, rule(h10=4), GROUP).check_ins == 0
    out = wb.measure(s, rule(h10=4, h20=0.25), GROUP)
    assert (out.check_ins, out.false_neighbour) == (1, 0)
    # the chooser's table counts no cost for an alarm while they are out
    tab = wb.table(s, GROUP, 6 * H)
    h10 = int(np.flatnonzero(wb.CANDIDATES_S == 4 * H)[0])
    assert tab.check_ins[0, 10, h10] == 0
    s.door_oracle = False
    assert wb.table(s, GROUP, 6 * H).false_neighbour[0, 10, h10] == 1
