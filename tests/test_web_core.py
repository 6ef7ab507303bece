"""The console's pure parts, without a server: hourly usage and the rule, scoping predicates,
language choice and catalogue, reports, absences, passwords and session deadlines."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Network, ip_network
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from lovekey.errors import ConsoleError
from lovekey.vocabulary import (
    AlertKind,
    AlertStatus,
    CheckInAnswer,
    ConsoleRole,
    ContactRole,
    DeviceKind,
    EventType,
    Outcome,
    ResidentStatus,
)
from lovekey.web import i18n
from lovekey.web.actions import check_absence
from lovekey.web.auth import (
    Session,
    Staff,
    client_address,
    hash_password,
    same_token,
    session_expired,
    verify_password,
)
from lovekey.web.queries import urgency_tier
from lovekey.web.reports import bar_chart, build_report, month_range, nice_ceiling, report_csv
from lovekey.web.scope import Scope
from lovekey.web.usage import HourlyUsage, chart_start, hourly_usage
from lovekey.web.users import check_password

ZONE = ZoneInfo("Asia/Shanghai")
START = datetime(2025, 3, 10, 0, 0, tzinfo=ZONE)
HOUR = 3600.0


def usage(
    dev: list[int],
    ts_h: list[float],
    total: list[float],
    *,
    hours: int = 24,
    now_h: float = 24,
    min_l: float = 10.0,
    window_h: float = 12.0,
) -> HourlyUsage:
    """hourly_usage with times given in hours from START."""
    s = START.timestamp()
    return hourly_usage(
        np.array(dev),
        np.array([s + h * HOUR for h in ts_h]),
        np.array(total, dtype=float),
        start=START,
        hours=hours,
        now=START + timedelta(hours=now_h),
        min_l=min_l,
        window_h=window_h,
    )


# ------------------------------------------------------------------------------ usage


def test_deltas_land_in_the_hour_the_later_reading_closes() -> None:
    # readings at 00:00, 00:30, 01:00 (closes hour 0), 01:15, 02:00 (closes hour 1)
    u = usage([0] * 5, [0, 0.5, 1.0, 1.25, 2.0], [100, 102, 105, 106, 110])
    assert u.usage_l[:3].tolist() == [5.0, 5.0, 0.0]
    assert u.usage_l.sum() == 10.0


def test_a_total_going_down_is_a_new_baseline_not_negative_use() -> None:
    u = usage([0] * 4, [0.5, 1.5, 2.5, 3.5], [500, 510, 3, 7])  # meter swapped before 02:30
    assert u.usage_l[:4].tolist() == [0.0, 10.0, 0.0, 4.0]
    assert (u.usage_l >= 0).all()


def test_meters_are_added_but_never_differenced_against_each_other() -> None:
    u = usage([0, 0, 1, 1], [0.5, 1.5, 0.5, 1.5], [100, 103, 900, 904])
    assert u.usage_l[1] == 7.0
    assert u.usage_l.sum() == 7.0


def test_readings_after_now_are_ignored() -> None:
    u = usage([0, 0, 0], [0.5, 1.5, 2.5], [0, 4, 40], now_h=2.0)
    assert u.usage_l.sum() == 4.0


def test_window_sums_and_the_rule_need_readings_at_both_ends() -> None:
    # readings every hour from -12 h: 2 L an hour, then nothing used from 06:00 on
    ts = [float(h) for h in range(-12, 25)]
    totals = [2.0 * min(h, 6) + 100 for h in range(-12, 25)]
    u = usage([0] * len(ts), ts, totals)
    assert u.window_l[0] == 24.0  # the 12 hours before 01:00 at 2 L an hour
    assert u.window_l[11] == 12.0  # 00:00-12:00: 6 hours of use
    assert u.window_l[17] == 0.0
    assert u.below_rule.tolist() == [w < 10 for w in u.window_l]
    assert u.covered.all()
    # the same meter, silent since 08:00: "no data" is not "no use"
    silent = usage([0] * 21, ts[:21], totals[:21])
    assert silent.covered[:8].all()
    assert not silent.covered[10:].any()
    assert not silent.below_rule[10:].any()


def test_chart_start_is_a_local_hour_and_ends_with_the_hour_of_now() -> None:
    now = datetime(2025, 3, 10, 14, 37, tzinfo=UTC)  # 22:37 in Shanghai
    start = chart_start(now, ZONE, 168)
    assert start == datetime(2025, 3, 3, 23, 0, tzinfo=ZONE)
    assert start + timedelta(hours=167) <= now < start + timedelta(hours=168)


# ------------------------------------------------------------------------------ scope


def render(composable: object) -> str:
    return composable.as_string(None)  # type: ignore[attr-defined, no-any-return]


def test_scope_predicates() -> None:
    grid = Scope(ConsoleRole.GRID_WORKER, ("G-1", "G-2"))
    assert render(grid.household("h")) == '"h"."grid_id" = ANY(%(scope_ids)s::text[])'
    assert grid.params == {"scope_ids": ["G-1", "G-2"]}
    community = Scope(ConsoleRole.COMMUNITY_STAFF, community_ids=("C-1",))
    assert render(community.household("x")) == '"x"."community_id" = ANY(%(scope_ids)s::text[])'
    admin = Scope(ConsoleRole.ADMIN)
    # a role read back from staff_user is a plain string; the scope holds the member
    assert Scope("admin").role is ConsoleRole.ADMIN  # type: ignore[arg-type]
    assert render(admin.household("h")) == "TRUE"
    assert render(admin.alert("a", "h")) == "TRUE"
    assert admin.params == {}
    alert = render(grid.alert("a", "h"))
    assert '"a"."gateway_id" IS NOT NULL' in alert
    assert alert.count("%(scope_ids)s") == 2


@pytest.mark.parametrize(
    ("role", "grids", "communities"),
    [
        ("grid_worker", (), ()),
        ("grid_worker", ("G",), ("C",)),
        ("community_staff", ("G",), ()),
        ("admin", ("G",), ()),
        ("janitor", (), ()),
    ],
)
def test_scope_rejects_bad_combinations(
    role: str, grids: tuple[str, ...], communities: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by case
        Scope(role, grids, communities)  # type: ignore[arg-type]


def test_urgency_tiers() -> None:
    assert [
        urgency_tier(k)
        for k in ("sos", "gas", "smoke", "low_usage", "running_tap", "leak", "meter_silent", "something_new")
    ] == [0, 0, 0, 1, 1, 2, 2, 2]


# ---------------------------------------------------------------------------- language


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("en-US,en;q=0.9", "en"),
        ("fr-FR,en;q=0.5,zh;q=0.4", "en"),
        ("fr-FR", "zh"),
        ("", "zh"),
        (None, "zh"),
        ("en;q=0,zh;q=0.1", "zh"),
        ("EN-gb", "en"),
        ("zh;q=0.5,en;q=0.5", "zh"),
        ("en;q=bad,zh;q=0.2", "zh"),
    ],
)
def test_accept_language(header: str | None, expected: str) -> None:
    assert i18n.negotiate(header, default="zh") == expected


def test_preference_beats_cookie_beats_browser() -> None:
    assert i18n.choose("en", "zh", "zh-CN", default="zh") == "en"
    assert i18n.choose(None, "en", "zh-CN", default="zh") == "en"
    assert i18n.choose(None, "xx", "en", default="zh") == "en"
    assert i18n.choose(None, None, None, default="en") == "en"


def test_catalogue_is_complete_in_both_languages() -> None:
    placeholders = re.compile(r"\{(\w+)")
    for key, (en, zh) in i18n.CATALOGUE.items():
        assert en.strip(), key
        assert zh.strip(), key
        assert set(placeholders.findall(en)) == set(placeholders.findall(zh)), key
    templates = Path(__file__).resolve().parent.parent / "web" / "templates"
    used = set()
    for path in templates.glob("*.html"):
        used |= set(re.findall(r"_\('([a-z0-9_]+)'\s*[,)]", path.read_text(encoding="utf-8")))
    dynamic = {
        "kind_": tuple(AlertKind),
        "status_": tuple(AlertStatus),
        "outcome_": tuple(Outcome),
        "role_": tuple(ConsoleRole),
        "contact_": tuple(ContactRole),
        "check_in_answer_": tuple(CheckInAnswer),
        "resident_": tuple(ResidentStatus),
        "device_": tuple(DeviceKind),
        "event_": tuple(EventType),
        "error_": ("bad_request", "not_signed_in", "forbidden", "not_found", "conflict", "invalid", "error"),
    }
    used |= {prefix + value for prefix, values in dynamic.items() for value in values}
    assert sorted(used - set(i18n.CATALOGUE)) == []


def test_relative_times() -> None:
    now = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    assert i18n.relative(now - timedelta(minutes=5), now, "en") == "5 min ago"
    assert i18n.relative(now - timedelta(minutes=5), now, "zh") == "5分钟前"
    assert i18n.relative(now + timedelta(hours=3), now, "en") == "in 3 h"
    assert i18n.relative(now - timedelta(days=3), now, "zh") == "3天前"


def test_translate_formats_values() -> None:
    assert i18n.translate("en", "told_people", n=2, rounds=1) == "Told 2 people in 1 round(s)"
    assert i18n.translate("zh", "told_people", n=2, rounds=1) == "已通知2人（1轮）"
    assert i18n.translate("en", "no_such_key") == "no_such_key"


# ----------------------------------------------------------------------------- reports


def test_month_range() -> None:
    now = datetime(2025, 1, 15, 20, 0, tzinfo=UTC)  # 2025-01-16 04:00 in Shanghai
    start, end = month_range(now, ZONE, 3)
    assert (start, end) == (datetime(2024, 11, 1, tzinfo=ZONE), datetime(2025, 2, 1, tzinfo=ZONE))


def test_report_from_grouped_rows_and_its_csv() -> None:
    jan = datetime(2025, 1, 1, tzinfo=ZONE)
    feb = datetime(2025, 2, 1, tzinfo=ZONE)
    rows = {
        "households": [{"community_id": "C-1", "households": 4}, {"community_id": "C-2", "households": 0}],
        "by_kind": [
            {"community_id": "C-1", "month": jan, "kind": "low_usage", "n": 3},
            {"community_id": "C-1", "month": feb, "kind": "sos", "n": 1},
            {"community_id": "C-2", "month": feb, "kind": "low_usage", "n": 2},
        ],
        "by_outcome": [
            {"community_id": "C-1", "month": jan, "outcome": "resident_ok", "n": 2},
            {"community_id": "C-1", "month": jan, "outcome": "needed_help", "n": 1},
            {"community_id": "C-2", "month": feb, "outcome": "false_data", "n": 2},
        ],
        "ack": [
            {
                "community_id": "C-1",
                "month": jan,
                "all_communities": False,
                "alerts": 3,
                "acknowledged": 3,
                "ack_p50_s": 600.0,
                "ack_p90_s": 1800.0,
            },
            {
                "community_id": None,
                "month": jan,
                "all_communities": True,
                "alerts": 3,
                "acknowledged": 3,
                "ack_p50_s": 600.0,
                "ack_p90_s": 1800.0,
            },
        ],
    }
    report = build_report(rows, start=jan, end=datetime(2025, 3, 1, tzinfo=ZONE), zone=ZONE)
    c1_jan = report.rows[0]
    assert (c1_jan.community_id, c1_jan.month, c1_jan.alerts, c1_jan.false_alarms) == ("C-1", "2025-01", 3, 2)
    assert c1_jan.false_alarm_rate == 0.5
    assert report.rows[2].false_alarm_rate is None  # C-2 has no households left
    assert report.totals_by_kind() == {"low_usage": 5, "sos": 1}
    assert report.by_month() == {"2025-01": {"low_usage": 3, "sos": 0}, "2025-02": {"low_usage": 2, "sos": 1}}
    assert report.false_alarm_rate_by_community() == {"C-1": 2 / (4 * 2)}
    assert report.ack_by_month == {"2025-01": (600.0, 1800.0, 3)}
    table = list(csv.DictReader(io.StringIO(report_csv(report))))
    assert [(r["community_id"], r["month"], r["alerts"]) for r in table] == [
        ("C-1", "2025-01", "3"),
        ("C-1", "2025-02", "1"),
        ("C-2", "2025-02", "2"),
    ]
    assert (table[0]["ack_p50_min"], table[0]["outcome_resident_ok"], table[0]["kind_low_usage"]) == (
        "10.0",
        "2",
        "3",
    )
    assert table[0]["false_alarm_rate_per_household_month"] == "0.500000"


def test_bar_chart_scales_to_a_nice_maximum() -> None:
    chart = bar_chart([("a", [10.0, 5.0]), ("b", [0.0, 40.0])], series=["x", "y"], height=220)
    assert chart.ticks[-1][1] == 50.0
    bottom = chart.plot_bottom
    heights = {(b.group, b.series): b.height for b in chart.bars}
    assert heights[("b", 1)] == pytest.approx((bottom - 10) * 40 / 50)
    assert heights[("a", 0)] == pytest.approx(heights[("b", 1)] / 4)
    assert heights[("b", 0)] == 0
    assert [nice_ceiling(v) for v in (0, 0.3, 7, 10, 11, 260)] == [0, 0.5, 10, 10, 20, 500]


# --------------------------------------------------------------- absences, passwords, sessions


def test_absence_checks() -> None:
    now = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    assert check_absence(now + timedelta(days=2), "  in   hospital ", now) == "in hospital"
    for until, reason in [
        (now - timedelta(minutes=1), "x"),
        (now + timedelta(days=400), "x"),
        (now + timedelta(days=1), "   "),
        (datetime(2025, 3, 12), "x"),
    ]:
        with pytest.raises(ConsoleError):
            check_absence(until, reason, now)


def test_password_hashes() -> None:
    hashed = hash_password("a good long secret")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "a good long secret") == (True, False)
    assert verify_password(hashed, "a good long secreT") == (False, False)
    assert verify_password(None, "anything") == (False, False)
    assert verify_password("not a hash", "anything") == (False, False)
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd")
    assert not same_token("", "")
    assert not same_token("abc", None)


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("1234567890", "at least 12"),  # accepted as an admin password once
        ("123456789012", "digits"),
        ("0000000000000000", "digits"),
        ("password1234", "common"),
        ("Qwertyuiop123", "common"),  # case does not help
        ("xxxxxxxxxxxxxx", "different characters"),
        ("wang.lei-2026-spring", "user name"),
        ("my WANG.LEI password", "user name"),
        (" leading space here", "spaces"),
    ],
)
def test_weak_passwords_are_refused(password: str, why: str) -> None:
    with pytest.raises(ConsoleError, match=why):
        check_password(password, "wang.lei")


@pytest.mark.parametrize("password", ["correct horse battery", "长城外古道边芳草碧连天涯", "k9#Tz!q2Lw@8"])
def test_good_passwords_pass(password: str) -> None:
    check_password(password, "wang.lei")


PROXIES = (ip_network("127.0.0.1"), ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "proxies", "client"),
    [
        ("203.0.113.5", None, (), "203.0.113.5"),
        # no trusted proxy configured: the header is whatever the client wrote
        ("203.0.113.5", "198.51.100.9", (), "203.0.113.5"),
        # nor is it believed from a peer that is not a trusted proxy
        ("203.0.113.5", "198.51.100.9", PROXIES, "203.0.113.5"),
        ("127.0.0.1", "198.51.100.9", PROXIES, "198.51.100.9"),
        # a client that sends its own X-Forwarded-For cannot choose its address
        ("127.0.0.1", "1.2.3.4, 198.51.100.9", PROXIES, "198.51.100.9"),
        # through two trusted proxies
        ("127.0.0.1", "198.51.100.9, 10.1.2.3", PROXIES, "198.51.100.9"),
        ("127.0.0.1", None, PROXIES, "127.0.0.1"),
        (None, "198.51.100.9", PROXIES, None),
    ],
)
def test_client_address_believes_forwarded_for_only_from_trusted_proxies(
    peer: str | None, forwarded_for: str | None, proxies: tuple[IPv4Network, ...], client: str | None
) -> None:
    assert client_address(peer, forwarded_for, proxies) == client


def test_session_deadlines() -> None:
    t = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    session = Session(
        Staff(1, "u", "", None, Scope(ConsoleRole.ADMIN)),
        b"",
        "csrf",
        t,
        t + timedelta(minutes=50),
        t + timedelta(hours=8),
    )
    idle = 3600
    assert not session_expired(session, t + timedelta(minutes=100), idle_s=idle)
    assert session_expired(session, t + timedelta(minutes=110), idle_s=idle)
    assert session_expired(session, t + timedelta(hours=8), idle_s=10**9)


def test_device_lists_merge_per_community_candidates() -> None:
    from lovekey.web.queries import _first

    summary = [
        {"silent": [["B", None], ["A", 1000.0]]},
        {"silent": [["D", 500.0], ["C", 2000.0], ["E", 500.0]]},
        {"silent": None},
    ]
    assert _first(summary, "silent", 4) == ["B", "D", "E", "A"]
    assert all("silent" not in row for row in summary)


def test_the_chart_leaves_out_a_stored_rise_faster_than_a_pipe_can_deliver() -> None:
    # issue 16, finding 3: a stored +5e11 L step drew a 1e12 L bar
    from lovekey.web.queries import without_jumps

    device = np.array([0, 0, 0, 0, 1, 1])
    ts = np.array([0.0, 900, 1800, 2700, 0, 900])
    total = np.array([100.0, 110, 110 + 5e11, 115 + 5e11, 7e11, 7e11 + 20])
    assert without_jumps(device, ts, total, max_flow_lpm=60.0).tolist() == [
        100,
        110,
        110,
        115,
        7e11,
        7e11 + 20,
    ]
