"""The simulator's check-in answers and door reminder triggers (issue 14)."""

from __future__ import annotations

import pytest

from lovekey.simulator.checkin import STAGE_S, CheckInModel, stage_s
from lovekey.simulator.door import DoorModel
from lovekey.vocabulary import CheckInAnswer

NOON = 1_772_337_600  # 2026-03-01 12:00 +08:00
DAY = 86400


def test_answers_match_seouls_first_attempt_and_final_miss_rates() -> None:
    """17 % of first attempts unanswered, about 2 % after the whole sequence (the sources
    in simulator/checkin.py); a resident on the floor never answers."""
    model = CheckInModel(seed=5)
    asks = [(f"R-{i:04d}", NOON + (i % 7) * DAY) for i in range(20_000)]
    first_missed = sum(1 for r, t in asks if model.answer(r, t)[1] > t + 60)
    unanswered = sum(1 for r, t in asks if model.answer(r, t)[0] == CheckInAnswer.NONE)
    assert 0.14 < first_missed / len(asks) < 0.20
    assert 0.012 < unanswered / len(asks) < 0.035
    down = CheckInModel(seed=5, spans={"R-0001": [("no_use", NOON - 3600, NOON + DAY)]})
    assert down.answer("R-0001", NOON) == (CheckInAnswer.NONE, NOON + STAGE_S)


def test_out_without_a_mobile_nobody_answers_and_the_sensitivity_row_loses_five_percent() -> None:
    spans = {f"R-{i:04d}": [("day_out", NOON - 3600, NOON + 3600)] for i in range(2000)}
    model = CheckInModel(seed=6, spans=spans)
    for r in list(spans)[:200]:
        answer, _ = model.answer(r, NOON)
        assert (answer == CheckInAnswer.FINE) <= model.carries_mobile(r)
    lossy = CheckInModel(seed=6, extra_unanswered=0.05)
    lost = sum(1 for i in range(10_000) if lossy.answer(f"R-{i:04d}", NOON)[0] == CheckInAnswer.NONE)
    assert 0.05 < lost / 10_000 < 0.09


def test_the_door_reminder_sees_leaving_and_returning_but_nobody_opens_to_a_visitor_from_the_floor() -> None:
    model = DoorModel(
        seed=7, share=1.0, miss_rate=0.0, dead_share=0.0, false_per_day=0.0, visitors_per_day=2.0
    )
    start, end = NOON - 12 * 3600, NOON + 30 * DAY
    out = model.passages("R-1", [("day_out", NOON, NOON + 6 * 3600)], start, end)
    assert NOON in out
    assert NOON + 6 * 3600 in out
    down = model.passages("R-1", [("no_use", start, end)], start, end)
    assert down == []  # no false triggers here, and no visitor let in
    assert not DoorModel(seed=7, share=0.0).passages("R-1", [], start, end)


def test_a_late_answerers_extra_asks_catch_some_of_what_three_miss_and_end_the_stage_later() -> None:
    """`check_in_slow`: a hard-to-reach resident (misses an ask 60 % of the time) leaves
    three asks unanswered 0.6^3 = 22 % of the time, four 0.6^4 = 13 %; the stage ends 10 min
    later for each extra ask, and `unanswered_chance` says the same as the answers drawn."""
    model = CheckInModel(seed=7, hard_to_reach_share=1.0)
    asks = [(f"R-{i:04d}", NOON + (i % 5) * DAY) for i in range(20_000)]
    three = sum(1 for r, t in asks if model.answer(r, t)[0] == CheckInAnswer.NONE) / len(asks)
    four = sum(1 for r, t in asks if model.answer(r, t, 1)[0] == CheckInAnswer.NONE) / len(asks)
    assert three == pytest.approx(0.216, abs=0.015)
    assert four == pytest.approx(0.1296, abs=0.012)
    assert model.unanswered_chance("R-0001", NOON, 1) == pytest.approx(0.6**4)
    fourth = [model.answer(r, t, 1)[1] - t for r, t in asks if model.answer(r, t)[0] == CheckInAnswer.NONE]
    assert set(fourth) == {STAGE_S + 60, STAGE_S + 600}  # answered on the 4th call, or never
    assert stage_s(2) == STAGE_S + 1200
