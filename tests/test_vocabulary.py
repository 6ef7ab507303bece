"""The vocabulary module and the database's CHECK constraints name the same words."""

from __future__ import annotations

import re
from enum import StrEnum

import psycopg
import pytest

from lovekey import vocabulary as v

# (table, column) -> the enum whose values the column's CHECK (column IN (...)) must list
CHECKED_COLUMNS: dict[tuple[str, str], type[StrEnum] | tuple[StrEnum, ...]] = {
    ("resident", "status"): v.ResidentStatus,
    ("resident", "language"): v.Language,
    ("device", "kind"): v.DeviceKind,
    ("contact", "role"): v.RESIDENT_CONTACT_ROLES,
    ("contact", "language"): v.Language,
    ("community_contact", "role"): v.COMMUNITY_CONTACT_ROLES,
    ("device_event", "type"): v.EventType,
    ("alert", "status"): v.AlertStatus,
    ("alert", "outcome"): v.Outcome,
    ("alert_outbox", "purpose"): v.OutboxPurpose,
    ("alert_outbox", "state"): v.OutboxState,
    ("delivery_attempt", "result"): v.AttemptResult,
    ("staff_user", "role"): v.ConsoleRole,
    ("alert", "tier"): v.AlertTier,
    ("check_in_answer", "answer"): v.CheckInAnswer,
    ("check_in_answer", "part_of_day"): v.PartOfDay,
}


def _allowed_values(conn: psycopg.Connection[tuple[str]], table: str, column: str) -> set[str]:
    """The words in the one CHECK constraint of `table` that reads `column IN (...)`."""
    rows = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c'",
        (table,),
    ).fetchall()
    # PostgreSQL prints `col IN ('a', 'b')` back as `(col = ANY (ARRAY['a'::text, 'b'::text]))`
    pattern = re.compile(rf"\({column} = ANY \(ARRAY\[(.*?)\]\)\)")
    found = [m.group(1) for (definition,) in rows if (m := pattern.search(definition))]
    assert len(found) == 1, f"{table}.{column}: expected one IN-list CHECK, got {rows}"
    return set(re.findall(r"'([^']*)'::text", found[0]))


@pytest.mark.parametrize(("table", "column"), list(CHECKED_COLUMNS))
def test_check_constraint_lists_the_vocabulary(database_url: str, table: str, column: str) -> None:
    expected = {str(member) for member in CHECKED_COLUMNS[(table, column)]}
    with psycopg.connect(database_url) as conn:
        assert _allowed_values(conn, table, column) == expected


def test_every_alert_kind_fits_the_alert_kind_check(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        for kind in v.AlertKind:
            ok = conn.execute(
                "SELECT %s ~ substring(pg_get_constraintdef(oid) FROM $$~ '([^']*)'$$)"
                " FROM pg_constraint WHERE conrelid = 'alert'::regclass AND contype = 'c'"
                " AND pg_get_constraintdef(oid) LIKE '%%kind ~%%'",
                (str(kind),),
            ).fetchone()
            assert ok == (True,), kind


def test_groupings_partition_the_alert_kinds() -> None:
    groups = (v.WELFARE_KINDS, v.LIFE_SAFETY_KINDS, v.MAINTENANCE_KINDS)
    assert sorted(k for g in groups for k in g) == sorted(v.AlertKind)
    assert {str(e) for e in v.LIFE_SAFETY_EVENTS} == {str(k) for k in v.LIFE_SAFETY_KINDS}


def test_part_of_day_covers_every_hour() -> None:
    parts = [v.PartOfDay.of_hour(h) for h in range(24)]
    assert parts[0] == parts[5] == v.PartOfDay.NIGHT
    assert parts[6] == parts[11] == v.PartOfDay.MORNING
    assert parts[12] == parts[17] == v.PartOfDay.AFTERNOON
    assert parts[18] == parts[23] == v.PartOfDay.EVENING
