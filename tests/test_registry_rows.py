"""`devices.registry.upsert_rows`: typed rows through the import's own path, on real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import time

import psycopg
import pytest

from lovekey.devices import apply_registry, parse_registry
from lovekey.devices.registry import (
    CommunityRow,
    ContactRow,
    DeviceRow,
    GatewayRow,
    GridRow,
    HouseholdRow,
    RegistryRow,
    ResidentRow,
    upsert_rows,
)
from lovekey.errors import RegistryError


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE contact, device, resident, household, unit, building, grid, community, gateway"
            " RESTART IDENTITY CASCADE"
        )
        yield conn


def household_r1(*contacts: ContactRow) -> list[RegistryRow]:
    return [
        CommunityRow("C-1", "大东社区"),
        GridRow("G-1", "C-1"),
        GatewayRow("GW-1"),
        HouseholdRow("H-1", community_id="C-1", grid_id="G-1", address="东一路 3 号"),
        ResidentRow("R-1", "H-1", name="王秀英"),
        DeviceRow("WM-1", "water_meter", "H-1", "GW-1", resident_id="R-1", report_interval_s=900),
        *contacts,
    ]


def test_rows_are_created_once_and_a_second_upsert_changes_nothing(conn: psycopg.Connection) -> None:
    rows = household_r1(ContactRow("R-1", "family", "王小明", phone="+8613800000002"))
    first = upsert_rows(conn, rows)
    assert first.created == {
        "community": 1,
        "grid": 1,
        "building": 0,
        "unit": 0,
        "gateway": 1,
        "household": 1,
        "resident": 1,
        "device": 1,
        "contact": 1,
    }
    assert not upsert_rows(conn, rows).changed
    assert conn.execute(
        "SELECT h.community_id, h.grid_id, h.address, r.name, d.report_interval_s"
        " FROM device d JOIN resident r ON r.id = d.resident_id JOIN household h ON h.id = d.household_id"
    ).fetchall() == [("C-1", "G-1", "东一路 3 号", "王秀英", 900)]


def test_none_keeps_what_is_stored(conn: psycopg.Connection) -> None:
    upsert_rows(conn, household_r1())
    report = upsert_rows(conn, [ResidentRow("R-1", "H-1", phone="+8613800000001"), CommunityRow("C-1")])
    assert report.updated["resident"] == 1
    assert report.updated["community"] == 0
    assert conn.execute("SELECT name, phone FROM resident").fetchall() == [("王秀英", "+8613800000001")]
    assert conn.execute("SELECT name FROM community").fetchall() == [("大东社区",)]


def test_contacts_given_replace_the_residents_contacts_with_their_preferences(
    conn: psycopg.Connection,
) -> None:
    upsert_rows(
        conn,
        household_r1(
            ContactRow("R-1", "love_key_holder", "李阿姨", push_url="json://127.0.0.1:9/push"),
            ContactRow("R-1", "family", "孙女", phone="+8613700000001", digest_opt_in=True),
            ContactRow("R-1", "family", "孙子", phone="+8613700000002", position=2),
        ),
    )
    upsert_rows(
        conn,
        [
            ContactRow("R-1", "family", "孙女", phone="+8613700000001", quiet=(time(22), time(7))),
            ContactRow("R-1", "emergency", "120", phone="+8613800000120"),
        ],
    )
    assert conn.execute(
        "SELECT role, position, name, phone, push_url, digest_opt_in, quiet_start, quiet_end"
        " FROM contact ORDER BY role, position"
    ).fetchall() == [
        ("emergency", 1, "120", "+8613800000120", None, False, None, None),
        # opted in before, not said now: still opted in
        ("family", 1, "孙女", "+8613700000001", None, True, time(22), time(7)),
    ]


def test_a_file_import_keeps_preferences_it_does_not_carry(conn: psycopg.Connection) -> None:
    upsert_rows(
        conn,
        household_r1(ContactRow("R-1", "family", "孙女", phone="+8613700000001", digest_opt_in=True)),
    )
    text = (
        "device_id,gateway_id,resident_id,kind,household_id,contact1_role,contact1_name,contact1_phone\n"
        "WM-1,GW-1,R-1,water_meter,H-1,family,孙女儿,13700000001\n"
    )
    apply_registry(conn, parse_registry(text, name="t.csv"))
    assert conn.execute("SELECT name, digest_opt_in FROM contact").fetchall() == [("孙女儿", True)]


def test_a_device_may_have_no_resident(conn: psycopg.Connection) -> None:
    upsert_rows(conn, [GatewayRow("GW-1"), HouseholdRow("H-9"), DeviceRow("WM-9", "gas", "H-9", "GW-1")])
    assert conn.execute("SELECT kind, resident_id FROM device").fetchall() == [("gas", None)]


def test_a_broken_row_changes_nothing(conn: psycopg.Connection) -> None:
    with pytest.raises(RegistryError, match="nothing changed"):
        upsert_rows(conn, [GatewayRow("GW-1"), DeviceRow("WM-9", "water_meter", "H-missing", "GW-1")])
    assert conn.execute("SELECT count(*) FROM gateway").fetchone() == (0,)


def test_several_upserts_in_one_transaction(conn: psycopg.Connection) -> None:
    with conn.transaction():
        upsert_rows(conn, household_r1(ContactRow("R-1", "family", "孙女", phone="+8613700000001")))
        upsert_rows(
            conn, [HouseholdRow("H-2"), ResidentRow("R-2", "H-2"), ContactRow("R-2", "family", "女儿")]
        )
    assert conn.execute("SELECT resident_id FROM contact ORDER BY 1").fetchall() == [("R-1",), ("R-2",)]


def test_a_row_given_twice_is_written_once_as_last_given(conn: psycopg.Connection) -> None:
    report = upsert_rows(
        conn,
        [
            GatewayRow("GW-1"),
            HouseholdRow("H-1", address="old"),
            GatewayRow("GW-1"),
            HouseholdRow("H-1", address="new"),
            ResidentRow("R-1", "H-1"),
            ContactRow("R-1", "family", "first"),
            ContactRow("R-1", "family", "second"),
        ],
    )
    assert (report.created["gateway"], report.created["household"], report.created["contact"]) == (1, 1, 1)
    assert conn.execute("SELECT address FROM household").fetchone() == ("new",)
    assert conn.execute("SELECT name FROM contact").fetchone() == ("second",)
