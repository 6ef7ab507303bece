"""One more ask for a resident who answers late (the chain's `check_in_slow`): a resident who
answered "fine" after the first ask within `alerts.check_in_slow_days` is asked a fourth time
before the love-key holder is woken. On real PostgreSQL with the local fake SMS provider and a
fake clock, through the rig of the check-in stage's own tests; the chains' parsing without one."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from lovekey.alerts import check_in
from lovekey.alerts.chains import ChainBook, ChainError, ChainStep, RoleRef
from lovekey.alerts.store import AlertCandidate, history, raise_alerts
from lovekey.bench.support.seeding import ContactSpec, seed_resident
from lovekey.vocabulary import CheckInAnswer, ContactRole
from tests.fix_alerts import DeliveryRig, at_local
from tests.test_alert_check_in import (  # noqa: F401 - `rig` is the fixture, with its settings
    RESIDENT_SMS,
    answer_row,
    events,
    raise_tier,
    rig,
    stage,
)

# daytime, as every earlier check-in below: the stage's quiet hours (21:00-07:00) never interfere
T0 = at_local("2025-03-10 10:00")
BOOK = ChainBook.load()
# the default chain's stage without the default `check_in_slow`, for the parsing tests
BOOK_DEFAULT = {
    "steps": [{"notify": ["love_key_holder"], "wait_min": 10}],
    "check_in": [{"notify": ["resident"], "wait_min": 10, "channels": ["voice", "sms"]}],
}


def past_check_in(rig: DeliveryRig, asked: datetime, answered_after_min: int) -> None:  # noqa: F811
    """An earlier check-in of R-1 asked at `asked`, run as the worker runs it, and answered
    "fine" by reply `answered_after_min` minutes later (0-9: on the first ask)."""
    alert_id = raise_tier(rig, "check_in", asked)
    for minutes in range(0, answered_after_min + 1, 10):
        rig.run(asked + timedelta(minutes=minutes))
    with rig.conn.transaction():
        check_in.answer(
            rig.conn,
            alert_id,
            CheckInAnswer.FINE,
            by="王秀英",
            channel="sms",
            now=asked + timedelta(minutes=answered_after_min),
        )
    assert answer_row(rig, alert_id)[0] == "fine"  # type: ignore[index]
    rig.run(asked + timedelta(minutes=answered_after_min))
    rig.fake.clear()


def paths(rig: DeliveryRig) -> list[str]:  # noqa: F811
    return [r.path for r in rig.fake.received()]


def due_at(rig: DeliveryRig, alert_id: int) -> datetime | None:  # noqa: F811
    row = rig.conn.execute("SELECT escalation_due_at FROM alert WHERE id = %s", (alert_id,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def first_ask(rig: DeliveryRig, alert_id: int) -> dict[str, Any]:  # noqa: F811
    """The detail of the `escalated` event that asked the resident first."""
    (detail,) = [
        h["detail"]
        for h in history(rig.conn, alert_id)
        if h["event"] == "escalated" and h["detail"].get("check_in") == 0
    ]
    return detail  # type: ignore[no-any-return]


def resident_asks(rig: DeliveryRig, alert_id: int) -> list[tuple[int, list[str]]]:  # noqa: F811
    """The outbox rows that asked the resident: (the check-in step, the channels)."""
    return [
        (detail["check_in"], channels)
        for detail, channels in rig.conn.execute(
            "SELECT detail, channels FROM alert_outbox WHERE alert_id = %s AND role = 'resident' ORDER BY id",
            (alert_id,),
        )
    ]


def goes_to_the_neighbour_at_30(rig: DeliveryRig, alert_id: int) -> None:  # noqa: F811
    """The stage as for everyone: asked at 0, 10 and 20 minutes, the love-key holder at 30."""
    for minutes in (0, 10, 20):
        rig.run(T0 + timedelta(minutes=minutes))
    assert due_at(rig, alert_id) == T0 + timedelta(minutes=30)
    rig.run(T0 + timedelta(minutes=30))
    assert paths(rig) == [f"/{RESIDENT_SMS}"] * 3 + ["/push/lkh"]
    assert [step for step, _ in resident_asks(rig, alert_id)] == [0, 1, 2]
    assert stage(rig, alert_id) == "love_key_holder"
    assert "slow_answerer" not in first_ask(rig, alert_id)


# --- who answers late is asked once more -------------------------------------------------


def test_a_resident_who_answered_late_is_asked_a_fourth_time(rig: DeliveryRig) -> None:  # noqa: F811
    past_check_in(rig, T0 - timedelta(days=3), answered_after_min=12)  # on the second ask
    alert_id = raise_tier(rig, "check_in", T0)
    for minutes in (0, 10, 20):
        rig.run(T0 + timedelta(minutes=minutes))
    assert first_ask(rig, alert_id)["slow_answerer"] is True
    assert due_at(rig, alert_id) == T0 + timedelta(minutes=30)
    rig.run(T0 + timedelta(minutes=30))  # the fourth ask: a call, an SMS where no voice is set up
    assert paths(rig) == [f"/{RESIDENT_SMS}"] * 4
    assert resident_asks(rig, alert_id) == [(0, ["sms"]), (1, ["sms"]), (2, ["sms"]), (3, ["sms"])]
    assert stage(rig, alert_id) == "check_in"
    assert answer_row(rig, alert_id)[0] is None  # type: ignore[index]
    assert due_at(rig, alert_id) == T0 + timedelta(minutes=40)
    rig.run(T0 + timedelta(minutes=39))
    assert len(paths(rig)) == 4, "the neighbour waits for the fourth ask's answer"
    rig.run(T0 + timedelta(minutes=40))
    assert paths(rig)[4:] == ["/push/lkh"]
    assert stage(rig, alert_id) == "love_key_holder"
    assert answer_row(rig, alert_id)[0] == "none"  # type: ignore[index]
    assert events(rig, alert_id).count("check_in_ended") == 1
    # the chain goes on from there as always, 10 minutes later than for others
    rig.run(T0 + timedelta(minutes=50))
    assert sorted(paths(rig)[5:]) == ["/push/grid", "/sms/8613800000002"]


def test_a_fine_on_the_fourth_ask_wakes_nobody(rig: DeliveryRig) -> None:  # noqa: F811
    past_check_in(rig, T0 - timedelta(days=3), answered_after_min=33)  # after the stage had ended
    alert_id = raise_tier(rig, "check_in", T0)
    for minutes in (0, 10, 20, 30):
        rig.run(T0 + timedelta(minutes=minutes))
    with rig.conn.transaction():
        check_in.answer(
            rig.conn, alert_id, CheckInAnswer.FINE, by="王秀英", channel="sms", now=T0 + timedelta(minutes=34)
        )
    for minutes in (34, 40, 60):
        rig.run(T0 + timedelta(minutes=minutes))
    assert paths(rig) == [f"/{RESIDENT_SMS}"] * 4, "nobody else was told"
    assert answer_row(rig, alert_id)[0] == "fine"  # type: ignore[index]


def test_the_stage_keeps_its_fourth_ask_when_the_late_answer_leaves_the_window(
    rig: DeliveryRig,  # noqa: F811
) -> None:
    """Decided at the first ask and read back from its record: the one late answer is 28 days
    old 15 minutes into the stage, and the fourth ask still comes."""
    past_check_in(rig, T0 - timedelta(days=28) + timedelta(minutes=15), answered_after_min=12)
    alert_id = raise_tier(rig, "check_in", T0)
    for minutes in (0, 10, 20, 30):
        rig.run(T0 + timedelta(minutes=minutes))
    assert first_ask(rig, alert_id)["slow_answerer"] is True
    assert paths(rig) == [f"/{RESIDENT_SMS}"] * 4
    rig.run(T0 + timedelta(minutes=40))
    assert paths(rig)[4:] == ["/push/lkh"]


def test_one_pass_tells_the_late_answerer_from_the_others(rig: DeliveryRig) -> None:  # noqa: F811
    """Two residents' check-ins decided in the same passes: their past answers are read
    together, and only the late answerer's stage is longer."""
    seed_resident(
        rig.conn,
        "R-2",
        name="刘桂芳",
        contacts=[ContactSpec("love_key_holder", "赵叔", push_url=rig.fake.url("push/lkh2"))],
    )
    rig.conn.execute("UPDATE resident SET phone = '+8613700000002' WHERE id = 'R-2'")
    past_check_in(rig, T0 - timedelta(days=3), answered_after_min=12)  # R-1 answers late
    with rig.conn.transaction():
        slow, prompt = (
            raise_alerts(
                rig.conn,
                [AlertCandidate("low_usage", r, r, None, None, T0 - timedelta(hours=5), tier="check_in")],
                T0,
            ).opened[0]
            for r in ("R-1", "R-2")
        )
    for minutes in (0, 10, 20, 30):
        rig.run(T0 + timedelta(minutes=minutes))
    assert len(resident_asks(rig, slow)) == 4
    assert len(resident_asks(rig, prompt)) == 3
    assert paths(rig).count("/push/lkh2") == 1
    assert "/push/lkh" not in paths(rig)
    rig.run(T0 + timedelta(minutes=40))
    assert paths(rig)[-1] == "/push/lkh"


# --- and nobody else ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked_days_ago", "answered_after_min"),
    [
        (30, 12),  # late, but before the 28-day window
        (3, 4),  # in the window, on the first ask
        (3, 9),  # still before the second ask (its wait is 10 minutes)
    ],
)
def test_who_answered_in_time_or_long_ago_goes_to_the_neighbour_at_30(
    rig: DeliveryRig,  # noqa: F811
    asked_days_ago: int,
    answered_after_min: int,
) -> None:
    past_check_in(rig, T0 - timedelta(days=asked_days_ago), answered_after_min)
    past_check_in(rig, T0 - timedelta(days=2), answered_after_min=3)  # and on the first ask
    goes_to_the_neighbour_at_30(rig, raise_tier(rig, "check_in", T0))


def test_a_resident_never_asked_before_goes_to_the_neighbour_at_30(rig: DeliveryRig) -> None:  # noqa: F811
    goes_to_the_neighbour_at_30(rig, raise_tier(rig, "check_in", T0))


def test_check_in_slow_after_counts_the_late_answers(rig: DeliveryRig) -> None:  # noqa: F811
    rig.escalation = replace(
        rig.escalation, settings=rig.settings.alerts.model_copy(update={"check_in_slow_after": 2})
    )
    past_check_in(rig, T0 - timedelta(days=5), answered_after_min=12)
    first = raise_tier(rig, "check_in", T0)
    goes_to_the_neighbour_at_30(rig, first)  # one late "fine" of the two it takes
    # a "fine" after the neighbour was told: the second late one
    with rig.conn.transaction():
        check_in.answer(
            rig.conn, first, CheckInAnswer.FINE, by="王秀英", channel="sms", now=T0 + timedelta(minutes=31)
        )
    rig.run(T0 + timedelta(minutes=31))  # the neighbour's stand-down
    rig.fake.clear()
    later = T0 + timedelta(days=1)
    alert_id = raise_tier(rig, "check_in", later)
    for minutes in (0, 10, 20, 30):
        rig.run(later + timedelta(minutes=minutes))
    assert first_ask(rig, alert_id)["slow_answerer"] is True
    assert [step for step, _ in resident_asks(rig, alert_id)] == [0, 1, 2, 3]
    assert "/push/lkh" not in paths(rig)


# --- switched off -------------------------------------------------------------------------

OFF: dict[str, Any] = {"escalation": {"low_usage": {"check_in_slow": []}}}


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE resident SET rules = %s WHERE id = 'R-1'",
        "UPDATE community SET rules = %s WHERE id = 'C-1'",
    ],
    ids=["resident", "community"],
)
def test_check_in_slow_off_in_the_rules(rig: DeliveryRig, sql: str) -> None:  # noqa: F811
    past_check_in(rig, T0 - timedelta(days=3), answered_after_min=12)
    assert rig.conn.execute(sql, (json.dumps(OFF),)).rowcount == 1
    goes_to_the_neighbour_at_30(rig, raise_tier(rig, "check_in", T0))


def test_check_in_slow_after_0_is_never(rig: DeliveryRig) -> None:  # noqa: F811
    past_check_in(rig, T0 - timedelta(days=3), answered_after_min=12)
    rig.escalation = replace(
        rig.escalation, settings=rig.settings.alerts.model_copy(update={"check_in_slow_after": 0})
    )
    goes_to_the_neighbour_at_30(rig, raise_tier(rig, "check_in", T0))


def test_a_stage_switched_off_is_not_switched_back_on(rig: DeliveryRig) -> None:  # noqa: F811
    """`check_in = []` with the default `check_in_slow`: no ask at all, not one."""
    past_check_in(rig, T0 - timedelta(days=3), answered_after_min=12)
    rules: dict[str, Any] = {"escalation": {"low_usage": {"check_in": []}}}
    rig.conn.execute("UPDATE resident SET rules = %s WHERE id = 'R-1'", (json.dumps(rules),))
    alert_id = raise_tier(rig, "check_in", T0)
    rig.run(T0)
    assert paths(rig) == ["/push/lkh"]
    assert "check_in_skipped" in events(rig, alert_id)


# --- the chains file --------------------------------------------------------------------

RESIDENT_STEP = {"notify": ["resident"], "wait_min": 10, "channels": ["voice", "sms"]}


def test_the_default_is_one_more_call_for_welfare_kinds() -> None:
    for kind in ("low_usage", "routine_break", "running_tap"):
        assert BOOK.chain_for(kind).check_in_slow == (
            ChainStep((RoleRef(ContactRole.RESIDENT),), 600, ("voice", "sms")),
        )


def test_check_in_slow_is_overridden_like_every_key() -> None:
    two = {"escalation": {"low_usage": {"check_in_slow": [RESIDENT_STEP, {**RESIDENT_STEP, "wait_min": 5}]}}}
    chain = BOOK.chain_for("low_usage", two)
    assert [s.wait_s for s in chain.check_in_slow] == [600, 300]
    assert BOOK.chain_for("low_usage", None, OFF).check_in_slow == ()
    assert len(BOOK.chain_for("low_usage").check_in) == 3  # the stage itself is untouched


@pytest.mark.parametrize(
    "check_in_slow",
    [
        [{"notify": ["love_key_holder"], "wait_min": 10}],
        [{"notify": ["resident", "family"], "wait_min": 10}],
        [{"notify": ["resident"], "wait_min": 10, "channels": ["push"]}],
        [{"notify": ["resident"], "wait_min": 0}],
        [{"notify": ["resident"], "wait_min": 10, "channels": []}],
        [{"notify": ["resident"], "wait_min": 10, "colour": "red"}],
        {"notify": ["resident"]},
    ],
)
def test_bad_check_in_slow_steps_are_refused(check_in_slow: object) -> None:
    with pytest.raises(ChainError, match="check_in_slow"):
        ChainBook({"default": BOOK_DEFAULT, "low_usage": {"check_in_slow": check_in_slow}}, "test")
    with pytest.raises(ChainError, match="check_in_slow"):  # in a community's rules too
        BOOK.chain_for("low_usage", {"escalation": {"low_usage": {"check_in_slow": check_in_slow}}})
    with pytest.raises(ChainError, match="check_in_slow"):  # and for a kind that never uses it
        BOOK.chain_for("sos", {"escalation": {"sos": {"check_in_slow": check_in_slow}}})


@pytest.mark.parametrize("kind", ["smoke", "gas", "sos", "leak", "meter_silent", "gateway_offline"])
def test_life_safety_and_device_faults_never_get_it(kind: str) -> None:
    """As `check_in`: whatever the file or the rules say, these chains have no stage."""
    assert BOOK.chain_for(kind).check_in_slow == ()
    rules = {"escalation": {kind: {"check_in": [RESIDENT_STEP], "check_in_slow": [RESIDENT_STEP]}}}
    chain = BOOK.chain_for(kind, rules)
    assert (chain.check_in, chain.check_in_slow) == ((), ())


def test_the_resident_is_still_not_a_step_role() -> None:
    with pytest.raises(ChainError, match="check_in_slow"):
        ChainBook({"default": {"steps": [{"notify": ["resident"], "wait_min": 5}]}}, "test")
