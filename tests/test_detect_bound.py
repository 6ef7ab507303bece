"""The oracle bound's core (evaluation/bound.py) on hand-made arrays."""

from __future__ import annotations

import numpy as np

from lovekey.evaluation.bound import (
    NEVER,
    PER_DAY,
    PER_H,
    THRESHOLDS,
    Meter,
    choose,
    dry_runs,
    hour_of,
    incident_anchors,
    measure,
)


def _used(*indexes: int, size: int) -> np.ndarray:
    used = np.zeros(size, dtype=np.bool_)
    used[list(indexes)] = True
    return used


def test_dry_runs_are_anchored_after_a_use_and_end_at_the_next() -> None:
    used = _used(0, 3, 5, 6, size=10)
    anchors, lengths = dry_runs(used, 0, 10)
    assert anchors.tolist() == [1, 4]  # 5->6 is no run; the run after 6 never ends
    assert lengths.tolist() == [2, 1]
    anchors, _ = dry_runs(used, 2, 10)  # anchors in [lo, hi) only
    assert anchors.tolist() == [4]


def test_incidents_continue_the_dry_run_they_start_in() -> None:
    used = _used(2, 5, 6, size=12)
    anchors, since = incident_anchors(used, np.array([1, 4, 6, 11]))
    # 1: before the first use, left out; 4: after the use at 2; 6: the use at 6 is the
    # incident's own minute, so the last use before it is 5
    assert anchors.tolist() == [3, 6, 7]
    assert since.tolist() == [1, 0, 4]


def test_hour_of_a_bucket() -> None:
    assert hour_of(np.array([0, PER_H - 1, PER_H, PER_DAY + 13 * PER_H + 1])).tolist() == [0, 0, 1, 13]


def _meter(lengths: list[int], since: list[int]) -> Meter:
    hour = 10
    runs = np.array(lengths, dtype=np.int64)
    needs = np.array(since, dtype=np.int64)
    return Meter(
        train_hour=np.full(runs.size, hour),
        train_length=runs,
        train_incident_hour=np.full(needs.size, hour),
        train_incident_since=needs,
        test_hour=np.full(runs.size, hour),
        test_length=runs,
        test_incident_hour=np.full(needs.size, hour),
        test_incident_since=needs,
    )


def test_free_false_alarms_choose_the_shortest_threshold_and_catch_every_incident() -> None:
    meter = _meter([PER_H] * 30, [0, PER_H])
    chosen = choose([meter], 0.0, train_incidents=2, train_months=1.0)
    assert chosen[0, 10] == THRESHOLDS[0]
    assert (chosen[0, np.arange(24) != 10] == NEVER).all()  # no incidents there: no rule
    got = measure([meter], chosen, test_months=1.0)
    assert got["false_per_resident_month"] == 30  # every ordinary 1 h run alerts
    assert got["within_3h"] == 1.0


def test_a_threshold_just_past_the_ordinary_runs_is_chosen_when_false_alarms_cost() -> None:
    meter = _meter([PER_H] * 30, [0, PER_H])
    chosen = choose([meter], 1.0, train_incidents=2, train_months=1.0)
    assert chosen[0, 10] == PER_H + PER_H // 4  # the first step above 1 h
    got = measure([meter], chosen, test_months=1.0)
    assert got["false_per_resident_month"] == 0
    assert got["within_3h"] == 1.0
    assert got["median_h"] == 0.75  # the mean of 1.25 h and 0.25 h


def test_when_nothing_is_worth_its_false_alarms_there_is_no_rule() -> None:
    meter = _meter([PER_H * h for h in range(1, 37)] * 10, [PER_H])
    chosen = choose([meter], 1000.0, train_incidents=1, train_months=1.0)
    assert (chosen == NEVER).all()
    assert measure([meter], chosen, test_months=1.0)["within_3h"] == 0.0


def test_the_two_stage_reading_wakes_the_neighbour_only_for_unanswered_check_ins() -> None:
    from lovekey.evaluation.bound import two_stage, unanswered_rates

    meter = _meter([PER_H] * 30, [0, PER_H])
    out = np.zeros(40 * PER_DAY, np.bool_)
    anchors = np.arange(30, dtype=np.int64) * PER_DAY + 10 * PER_H
    out[anchors[:10] + PER_H // 2] = True  # the first ten alarms fall on a day out
    meter = Meter(**{**{f: getattr(meter, f) for f in Meter.__slots__}, "test_anchor": anchors, "out": out})
    chosen = choose([meter], 0.0, train_incidents=2, train_months=1.0)  # alarms at 0.5 h
    got = measure([meter], chosen, test_months=1.0)
    assert (got["false_per_resident_month"], got["false_out_per_resident_month"]) == (30, 10)
    staged = two_stage(got, unanswered_home=0.02, unanswered_out=0.5, stage_h=0.5)
    assert staged["check_ins_per_resident_month"] == 30
    assert staged["false_neighbour_per_resident_month"] == 20 * 0.02 + 10 * 0.5
    assert staged["median_to_neighbour_h"] == staged["median_to_check_in_h"] + 0.5
    home, away = unanswered_rates(samples=4000)
    assert 0.01 < home < 0.04  # Seoul's ~2 % after the whole sequence
    assert away > 0.4  # out, only a carried mobile answers


def test_the_door_oracle_asks_a_quiet_home_and_leaves_a_day_out_to_the_neighbour_tier() -> None:
    """evaluation/stages_bound.py: a dry run with no passage is the home class (a check-in
    at the threshold, the neighbour woken with the resident's chance of not answering);
    one with a passage before it is the out class, which under `hold` wakes the neighbour
    only when the run outlasts the passage by `out_neighbour_h`."""
    from lovekey.evaluation.stages_bound import (
        CAND,
        NONE_SEEN,
        STAGE_B,
        Answering,
        Incidents,
        Policy,
        Runs,
        _cost_matrices,
        delays,
    )

    who = Answering(home_day=0.02, home_night=0.05, out=1.0)
    out = np.zeros(10 * PER_DAY, np.bool_)
    # two 10 h runs from 10:00: no passage; a passage 1 h in (and a day out from then)
    anchor = np.array([10 * PER_H, PER_DAY + 10 * PER_H], np.int64)
    out[PER_DAY + 11 * PER_H : PER_DAY + 20 * PER_H] = True
    runs = Runs(anchor, np.full(2, 10 * PER_H, np.int64), np.array([NONE_SEEN, PER_H], np.int64))
    hold = Policy(None, False, 8.0)
    check_ins, neighbour, hour = _cost_matrices(runs, out, who, hold)
    at_3h = int(np.flatnonzero(CAND == 3 * PER_H)[0])
    assert hour.tolist() == [10, 10]
    assert check_ins[:, at_3h].tolist() == [1.0, 0.0]  # the day out is not asked under hold
    assert neighbour[0, at_3h] == 0.02  # home in the day: 2 % unanswered
    assert neighbour[1, at_3h] == 1.0  # the run outlasts the passage by 8 h: the neighbour
    shorter = Runs(anchor, np.full(2, 8 * PER_H, np.int64), runs.seen)
    assert _cost_matrices(shorter, out, who, hold)[1][1, at_3h] == 0.0  # back within 8 h
    wake = Policy(6.0, True, 0.0)
    check_ins, neighbour, _ = _cost_matrices(runs, out, who, wake)
    assert check_ins[1, at_3h] == 1.0  # asked 6 h after the passage, out: nobody answers
    assert neighbour[1, at_3h] == 1.0
    # an incident 2 h into a quiet home's dry run: the check-in 1 h after it at a 3 h threshold
    inc = Incidents(np.array([0]), np.array([2 * PER_H]), np.array([NONE_SEEN]))
    to_ci, to_nb = delays(inc, np.array([3 * PER_H]), hold)
    assert (to_ci.tolist(), to_nb.tolist()) == ([PER_H], [PER_H + STAGE_B])
    # a false trigger at the door 1 h after the onset: out class, the neighbour 8 h after it
    inc = Incidents(np.array([0]), np.array([2 * PER_H]), np.array([3 * PER_H]))
    to_ci, to_nb = delays(inc, np.array([4 * PER_H]), hold)
    assert to_nb.tolist() == [9 * PER_H]


def test_what_the_stages_oracle_knows_can_be_taken_away() -> None:
    """evaluation/stages_bound.py: `--knows district` chooses with the district's average
    answering, `--knows nothing` also forgets which runs were days out; `--pooled` gives
    every resident the district's one threshold per hour."""
    from lovekey.evaluation.stages_bound import Answering, Incidents, Resident, Runs, as_known, pooled

    empty = Runs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    none = Incidents(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    residents = [
        Resident(empty, empty, none, none, Answering(0.0, 0.1, 1.0)),
        Resident(empty, empty, none, none, Answering(0.2, 0.3, 0.0)),
    ]
    out = np.ones((2, 4), np.bool_)
    same, same_out = as_known(residents, out, "resident")
    assert same is residents
    assert same_out is out
    district, d_out = as_known(residents, out, "district")
    assert [r.who for r in district] == [Answering(0.1, 0.2, 0.5)] * 2
    assert d_out is out
    nothing, n_out = as_known(residents, out, "nothing")
    assert not n_out.any()
    who = nothing[0].who
    assert who.home_day == who.home_night == who.out == nothing[1].who.out
    table = np.arange(2 * 24 * 3, dtype=np.float64).reshape(2, 24, 3)
    shared = pooled(table)
    np.testing.assert_array_equal(shared[0], table.sum(axis=0))
    np.testing.assert_array_equal(shared[1], shared[0])
