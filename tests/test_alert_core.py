"""The pure parts of alerts: next_step, chains, delivery policy, messages, tokens."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from lovekey.alerts.chains import ChainBook, ChainError, RoleRef
from lovekey.alerts.escalation import (
    AlertSnapshot,
    Done,
    Escalation,
    Notify,
    ResolveAway,
    StandDown,
    Wait,
    next_step,
)
from lovekey.alerts.policy import quiet_until, rate_limited_until, retry_delay_s
from lovekey.alerts.texts import (
    OUTCOME_TEXT,
    WHAT,
    AlertFacts,
    alert_message,
    check_in_call_text,
    check_in_message,
    fits_one_sms,
    sms_segment_limit,
)
from lovekey.alerts.tokens import make_token, parse_token, verify_token
from lovekey.errors import AckTokenError
from lovekey.vocabulary import AlertKind, AlertStatus, AlertTier, CheckInAnswer, Language, Outcome

T0 = datetime(2025, 3, 1, 1, 0, tzinfo=UTC)
ZONE = ZoneInfo("Asia/Shanghai")
ALL_ROLES = frozenset(
    {
        "love_key_holder",
        "love_key_holder:1",
        "family",
        "grid_worker",
        "community_staff",
        "emergency",
        "maintenance",
    }
)
BOOK = ChainBook.load()


def state(status: str = "open", **kw: object) -> AlertSnapshot:
    base: dict[str, object] = dict(
        id=1,
        kind="low_usage",
        status=AlertStatus(status),
        opened_at=T0,
        away_until=None,
        anyone_notified=False,
        stood_down=False,
        available_roles=ALL_ROLES,
    )
    base.update(kw)
    return AlertSnapshot(**base)  # type: ignore[arg-type]


def roles(decision: object) -> list[str]:
    assert isinstance(decision, Notify)
    return [str(r) for r in decision.roles]


class TestNextStep:
    chain = BOOK.chain_for("low_usage")

    def test_walks_the_default_chain_then_repeats(self) -> None:
        history: list[Escalation] = []
        now = T0
        seen = []
        for _ in range(6):
            decision = next_step(state(), history, self.chain, now)
            while isinstance(decision, Wait):
                now = decision.until
                decision = next_step(state(), history, self.chain, now)
            assert isinstance(decision, Notify)
            seen.append(((now - T0).total_seconds() / 60, roles(decision)))
            history.append(Escalation(decision.round, decision.step, now))
        assert seen == [
            (0, ["love_key_holder"]),
            (10, ["family", "grid_worker"]),
            (25, ["community_staff"]),
            (40, ["emergency"]),
            (70, ["grid_worker", "community_staff", "emergency"]),
            (100, ["grid_worker", "community_staff", "emergency"]),
        ]
        assert [e.round for e in history] == [0, 1, 2, 3, 4, 5]

    def test_waits_between_steps(self) -> None:
        history = [Escalation(0, 0, T0)]
        assert next_step(state(), history, self.chain, T0 + timedelta(minutes=9)) == Wait(
            T0 + timedelta(minutes=10)
        )

    def test_acknowledged_stops(self) -> None:
        history = [Escalation(0, 0, T0)]
        decision = next_step(state("acknowledged"), history, self.chain, T0 + timedelta(hours=5))
        assert decision == Done("acknowledged")

    def test_resolved_stands_down_once(self) -> None:
        resolved = state("resolved", anyone_notified=True)
        assert next_step(resolved, [], self.chain, T0) == StandDown()
        done = state("resolved", anyone_notified=True, stood_down=True)
        assert next_step(done, [], self.chain, T0) == Done("resolved")
        assert next_step(state("resolved"), [], self.chain, T0) == Done("resolved")

    def test_skips_steps_nobody_holds(self) -> None:
        only_staff = state(available_roles=frozenset({"community_staff", "emergency"}))
        decision = next_step(only_staff, [], self.chain, T0)
        assert isinstance(decision, Notify)
        assert (decision.step, decision.skipped, roles(decision)) == (2, (0, 1), ["community_staff"])

    def test_partly_held_step_notifies_who_there_is(self) -> None:
        no_family = state(available_roles=ALL_ROLES - {"family"})
        decision = next_step(no_family, [Escalation(0, 0, T0)], self.chain, T0 + timedelta(minutes=10))
        assert roles(decision) == ["grid_worker"]

    def test_nobody_at_all(self) -> None:
        assert next_step(state(available_roles=frozenset()), [], self.chain, T0) == Done("no_recipients")

    def test_away_resident_is_suppressed_for_low_usage_only(self) -> None:
        away = state(away_until=T0 + timedelta(days=2))
        assert next_step(away, [], self.chain, T0) == ResolveAway(T0 + timedelta(days=2))
        smoke = BOOK.chain_for("smoke")
        assert isinstance(
            next_step(state(kind="smoke", away_until=T0 + timedelta(days=2)), [], smoke, T0), Notify
        )
        over = state(away_until=T0 - timedelta(minutes=1))
        assert isinstance(next_step(over, [], self.chain, T0), Notify)

    def test_life_safety_tiers_at_once(self) -> None:
        decision = next_step(state(kind="gas"), [], BOOK.chain_for("gas"), T0)
        assert roles(decision) == ["love_key_holder", "family", "grid_worker", "community_staff"]

    def test_delay_before_first_step(self) -> None:
        book = ChainBook(
            {"default": {"steps": [{"notify": ["family"], "wait_min": 5}], "delay_min": 3}}, "test"
        )
        chain = book.chain_for("low_usage")
        assert next_step(state(), [], chain, T0) == Wait(T0 + timedelta(minutes=3))

    def test_no_repeat_means_chain_exhausted(self) -> None:
        book = ChainBook({"default": {"steps": [{"notify": ["family"], "wait_min": 5}]}}, "t")
        decision = next_step(state(), [Escalation(0, 0, T0)], book.chain_for("x"), T0 + timedelta(hours=1))
        assert decision == Done("chain_exhausted")


class TestCheckIn:
    chain = BOOK.chain_for("low_usage")
    asked = ALL_ROLES | {"resident"}

    def ask(self, **kw: object) -> AlertSnapshot:
        base: dict[str, object] = {"tier": AlertTier.CHECK_IN, "available_roles": self.asked}
        base.update(kw)
        return state(**base)

    def test_call_call_again_text_then_the_neighbour(self) -> None:
        history: list[Escalation] = []
        now = T0
        seen = []
        for _ in range(5):
            decision = next_step(self.ask(), history, self.chain, now)
            while isinstance(decision, Wait):
                now = decision.until
                decision = next_step(self.ask(), history, self.chain, now)
            assert isinstance(decision, Notify)
            seen.append(
                ((now - T0).total_seconds() / 60, roles(decision), decision.check_in, decision.ends_check_in)
            )
            history.append(Escalation(decision.round, decision.step, now, decision.check_in))
        assert seen == [
            (0, ["resident"], 0, False),
            (10, ["resident"], 1, False),
            (20, ["resident"], 2, False),
            (30, ["love_key_holder"], None, True),
            (40, ["family", "grid_worker"], None, False),
        ]
        assert [s.channels for s in self.chain.check_in] == [("voice", "sms"), ("voice", "sms"), ("sms",)]

    def test_need_help_or_the_neighbour_tier_go_on_at_once(self) -> None:
        history = [Escalation(0, None, T0, 0)]
        for snapshot in (
            self.ask(check_in_answer=CheckInAnswer.NEED_HELP),
            self.ask(tier=AlertTier.NEIGHBOUR),
        ):
            decision = next_step(snapshot, history, self.chain, T0 + timedelta(minutes=1))
            assert isinstance(decision, Notify)
            assert (roles(decision), decision.ends_check_in) == (["love_key_holder"], True)

    def test_the_neighbour_tier_never_asks(self) -> None:
        decision = next_step(self.ask(tier=AlertTier.NEIGHBOUR), [], self.chain, T0)
        assert roles(decision) == ["love_key_holder"]

    def test_who_cannot_be_asked_goes_straight_to_the_neighbour(self) -> None:
        for snapshot, reason in (
            (self.ask(check_in_blocked="off"), "off"),
            (self.ask(check_in_blocked="no_phone"), "no_phone"),
            (self.ask(available_roles=ALL_ROLES), "no_phone"),  # nobody holds 'resident'
        ):
            decision = next_step(snapshot, [], self.chain, T0)
            assert isinstance(decision, Notify)
            assert (roles(decision), decision.step, decision.check_in_skipped) == (
                ["love_key_holder"],
                0,
                reason,
            )

    def test_quiet_hours_wait(self) -> None:
        morning = T0 + timedelta(hours=6)
        assert next_step(self.ask(check_in_quiet_until=morning), [], self.chain, T0) == Wait(morning)
        # mid-stage too: the next call waits for the morning
        history = [Escalation(0, None, T0, 0)]
        later = T0 + timedelta(minutes=10)
        assert next_step(self.ask(check_in_quiet_until=morning), history, self.chain, later) == Wait(morning)

    def test_life_safety_and_device_faults_have_no_stage(self) -> None:
        for kind in ("smoke", "gas", "sos", "leak", "meter_silent"):
            assert BOOK.chain_for(kind).check_in == ()
        decision = next_step(self.ask(kind="sos"), [], BOOK.chain_for("sos"), T0)
        assert "resident" not in roles(decision)

    def test_a_community_can_switch_the_stage_off_in_its_chain(self) -> None:
        chain = BOOK.chain_for("low_usage", {"escalation": {"low_usage": {"check_in": []}}})
        decision = next_step(self.ask(), [], chain, T0)
        assert isinstance(decision, Notify)
        assert (roles(decision), decision.check_in_skipped) == (["love_key_holder"], "off")

    @pytest.mark.parametrize(
        "check_in",
        [
            [{"notify": ["family"], "wait_min": 10}],
            [{"notify": ["resident"], "wait_min": 10, "channels": ["push"]}],
            [{"notify": ["resident"], "wait_min": 0}],
            [{"notify": ["resident"], "wait_min": 10, "channels": []}],
            {"notify": ["resident"]},
        ],
    )
    def test_bad_check_in_steps_are_refused(self, check_in: object) -> None:
        with pytest.raises(ChainError):
            ChainBook({"default": BOOK_DEFAULT, "low_usage": {"check_in": check_in}}, "test")

    def test_the_resident_is_not_a_step_role(self) -> None:
        with pytest.raises(ChainError, match="check_in"):
            ChainBook({"default": {"steps": [{"notify": ["resident"], "wait_min": 5}]}}, "test")

    def test_check_in_call_asks_for_key_1_or_2(self) -> None:
        assert "请按1" in check_in_call_text("王秀英", language="zh")
        assert "Press 1 if you are fine, 2 if you need help" in check_in_call_text("Wang", language="en")

    def test_check_in_message_asks_for_1_or_2(self) -> None:
        for lang in ("zh", "en"):
            sms = check_in_message("王秀英", language=lang, link="https://lk.example/a/x", sms=True)
            assert "1" in sms.body
            assert "2" in sms.body
            assert "https://lk.example/a/x" in sms.body


class TestChains:
    def test_overrides_per_community_and_resident(self) -> None:
        community = {"escalation": {"low_usage": {"steps": [{"notify": ["grid_worker"], "wait_min": 5}]}}}
        resident = {"escalation": {"low_usage": {"suppress_when_away": False}}}
        chain = BOOK.chain_for("low_usage", community, resident)
        assert [str(r) for r in chain.steps[0].roles] == ["grid_worker"]
        assert chain.steps[0].wait_s == 300
        assert chain.suppress_when_away is False
        assert BOOK.chain_for("low_usage").suppress_when_away is True

    def test_device_faults_cannot_name_neighbours(self) -> None:
        with pytest.raises(ChainError, match="maintenance"):
            BOOK.chain_for(
                "meter_silent",
                {"escalation": {"meter_silent": {"steps": [{"notify": ["love_key_holder"], "wait_min": 5}]}}},
            )

    @pytest.mark.parametrize(
        "table",
        [
            {"steps": []},
            {"steps": [{"notify": ["neighbour"], "wait_min": 5}]},
            {"steps": [{"notify": ["family"], "wait_min": -1}]},
            {"steps": [{"notify": ["family"]}], "repeat": {"notify": ["family"], "every_min": 0}},
            {"colour": "red"},
        ],
    )
    def test_bad_tables_are_refused(self, table: dict[str, object]) -> None:
        with pytest.raises(ChainError):
            ChainBook({"default": BOOK_DEFAULT, "low_usage": table}, "test")

    def test_role_positions(self) -> None:
        assert RoleRef.parse("love_key_holder:2") == RoleRef("love_key_holder", 2)
        with pytest.raises(ChainError):
            RoleRef.parse("family:0")


BOOK_DEFAULT = {"steps": [{"notify": ["family"], "wait_min": 5}]}


class TestPolicy:
    def test_backoff_doubles_to_a_cap(self) -> None:
        delays = [retry_delay_s(n, base_s=10, max_s=60) for n in range(1, 6)]
        assert delays == [10, 20, 40, 60, 60]

    def test_quiet_hours_across_midnight(self) -> None:
        start, end = time(22, 0), time(7, 0)
        at = datetime(2025, 3, 1, 23, 30, tzinfo=ZONE)
        assert quiet_until(at, start, end, ZONE) == datetime(2025, 3, 2, 7, 0, tzinfo=ZONE)
        early = datetime(2025, 3, 2, 6, 0, tzinfo=ZONE)
        assert quiet_until(early, start, end, ZONE) == datetime(2025, 3, 2, 7, 0, tzinfo=ZONE)
        assert quiet_until(datetime(2025, 3, 2, 7, 0, tzinfo=ZONE), start, end, ZONE) is None
        assert quiet_until(at, None, None, ZONE) is None
        lunch = quiet_until(datetime(2025, 3, 2, 12, 30, tzinfo=ZONE), time(12), time(14), ZONE)
        assert lunch == datetime(2025, 3, 2, 14, 0, tzinfo=ZONE)

    def test_rate_limit(self) -> None:
        sent = [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)]
        now = T0 + timedelta(minutes=3)
        assert rate_limited_until(sent[:2], now, limit=3, window_s=600) is None
        assert rate_limited_until(sent, now, limit=3, window_s=600) == T0 + timedelta(minutes=10)
        assert rate_limited_until(sent, T0 + timedelta(minutes=11), limit=3, window_s=600) is None


class TestMessages:
    link = "https://lk.cn/a/3kf.lx3k2a.AbCdEfGhIjKl"

    def facts(self, **kw: object) -> AlertFacts:
        base: dict[str, object] = dict(
            alert_id=42,
            kind="low_usage",
            name="王秀英",
            address="幸福里3-2-101",
            since=datetime(2025, 3, 1, 8, 0, tzinfo=ZONE),
        )
        base.update(kw)
        return AlertFacts(**base)  # type: ignore[arg-type]

    def test_segment_rules(self) -> None:
        assert sms_segment_limit("hello") == ("gsm7", 5, 160)
        assert sms_segment_limit("a{b}") == ("gsm7", 6, 160)
        assert sms_segment_limit("王") == ("ucs2", 1, 70)
        assert sms_segment_limit("😀") == ("ucs2", 2, 70)

    @pytest.mark.parametrize("language", ["zh", "en"])
    def test_sms_has_name_what_since_link_in_one_segment(self, language: str) -> None:
        now = datetime(2025, 3, 1, 12, 0, tzinfo=ZONE)
        body = alert_message(
            [self.facts()], language=language, link=self.link, sms=True, zone=ZONE, now=now
        ).body
        assert fits_one_sms(body)
        assert "王秀英" in body
        assert self.link in body
        assert "08:00" in body

    def test_english_sms_keeps_more_detail_in_gsm7(self) -> None:
        now = datetime(2025, 3, 1, 12, 0, tzinfo=ZONE)
        body = alert_message(
            [self.facts(name="Mary Smith", address="12 Elm St")],
            language="en",
            link=self.link,
            sms=True,
            zone=ZONE,
            now=now,
        ).body
        assert sms_segment_limit(body)[0] == "gsm7"
        assert "12 Elm St" in body
        assert "reply 1" in body.lower()

    def test_long_address_drops_detail_but_never_the_link(self) -> None:
        now = datetime(2025, 3, 1, 12, 0, tzinfo=ZONE)
        facts = self.facts(name="欧阳秀英", address="沈阳市大东区某某街道幸福里社区三号楼二单元一零一室")
        body = alert_message([facts], language="zh", link=self.link, sms=True, zone=ZONE, now=now).body
        assert self.link in body
        assert fits_one_sms(body)

    def test_push_has_title_and_full_text(self) -> None:
        now = datetime(2025, 3, 2, 12, 0, tzinfo=ZONE)
        message = alert_message([self.facts()], language="zh", link=self.link, sms=False, zone=ZONE, now=now)
        assert "王秀英" in message.title
        assert "3月1日08:00" in message.body
        assert "幸福里3-2-101" in message.body


class TestTokens:
    secret = b"0123456789abcdef0123456789abcdef"
    exp = datetime(2025, 3, 4, tzinfo=UTC)

    def token(self, **kw: object) -> str:
        args: dict[str, object] = dict(
            outbox_id=1234, alert_id=77, recipient_key="tel:+86138", expires_at=self.exp
        )
        args.update(kw)
        return make_token(self.secret, **args)  # type: ignore[arg-type]

    def test_round_trip_and_short(self) -> None:
        token = self.token()
        assert len(token) <= 24
        parts = parse_token(token)
        assert parts.outbox_id == 1234
        verify_token(self.secret, parts, alert_id=77, recipient_key="tel:+86138", now=T0)

    def test_other_alert_or_recipient_is_refused(self) -> None:
        parts = parse_token(self.token())
        with pytest.raises(AckTokenError, match="forged"):
            verify_token(self.secret, parts, alert_id=78, recipient_key="tel:+86138", now=T0)
        with pytest.raises(AckTokenError, match="forged"):
            verify_token(self.secret, parts, alert_id=77, recipient_key="tel:+86139", now=T0)

    def test_tampering_is_refused(self) -> None:
        token = self.token()
        head, exp, mac = token.split(".")
        for forged in (
            f"{head}x.{exp}.{mac}",
            f"{head}.{exp}z.{mac}",
            f"{head}.{exp}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",
        ):
            with pytest.raises(AckTokenError):
                verify_token(
                    self.secret, parse_token(forged), alert_id=77, recipient_key="tel:+86138", now=T0
                )
        with pytest.raises(AckTokenError, match="forged"):
            verify_token(
                b"another-secret-another-secret!!!",
                parse_token(token),
                alert_id=77,
                recipient_key="tel:+86138",
                now=T0,
            )

    def test_expiry(self) -> None:
        parts = parse_token(self.token())
        with pytest.raises(AckTokenError, match="expired"):
            verify_token(self.secret, parts, alert_id=77, recipient_key="tel:+86138", now=self.exp)

    @pytest.mark.parametrize("bad", ["", "abc", "a.b", "a.b.c.d", "zz!.1.x", "1." + "9" * 70])
    def test_malformed(self, bad: str) -> None:
        with pytest.raises(AckTokenError):
            parse_token(bad)


def test_every_kind_and_outcome_has_a_text_in_every_language() -> None:
    for lang in Language:
        assert sorted(WHAT[lang]) == sorted(AlertKind), lang
        assert sorted(OUTCOME_TEXT[lang]) == sorted(Outcome), lang
