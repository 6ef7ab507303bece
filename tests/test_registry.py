"""Registry import/export on real PostgreSQL and TimescaleDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from lovekey.cli import main
from lovekey.devices import apply_registry, export_registry, list_devices, normalize_phone, parse_registry
from lovekey.errors import ImportRejected
from tests.conftest import DatabaseFactory

MINIMAL = """device_id,gateway_id,resident_id,kind
WM-1,GW-1,R-1,water_meter
SOS-1,GW-1,R-1,sos_button
WM-2,GW-2,R-2,water_meter
"""

FULL = """device_id,gateway_id,resident_id,kind,report_interval_s,resident_name,resident_phone,household_id,address,community_id,community_name,grid_id,grid_name,building_id,building_name,unit_id,unit_name,contact1_role,contact1_name,contact1_phone,contact1_push,contact2_role,contact2_name,contact2_phone,contact2_push,contact3_role,contact3_name,contact3_phone,contact3_push
WM-10,GW-1,R-10,water_meter,900,王秀英,138 0000 0010,H-10,东一路 3 号 2 单元 401,C-1,大东社区,G-1,一网格,B-1,3 号楼,U-1,2 单元,love_key_holder,李大姐,+86 139-0000-0001,,love_key_holder,张师傅,13900000002,,grid_worker,刘网格,13900000003,json://127.0.0.1:9/hook
SMK-10,GW-1,R-10,smoke,3600,,,H-10,,,,,,,,,,,,,,,,,,,,,
WM-11,GW-1,R-11,water_meter,86400,Li Ming,+8613800000011,H-11,东一路 3 号 2 单元 402,C-1,大东社区,G-1,一网格,B-1,3 号楼,U-1,2 单元,family,Li Wei,+44 7911 123456,,,,,,,,,
"""


@pytest.fixture(scope="module", params=["postgres", "timescaledb"])
def registry_url(request: pytest.FixtureRequest) -> str:
    name = "postgres_factory" if request.param == "postgres" else "timescale_factory"
    factory: DatabaseFactory = request.getfixturevalue(name)
    return factory.create("registry")


@pytest.fixture
def conn(registry_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(registry_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE contact, device, resident, household, unit, building, grid, community, gateway"
            " RESTART IDENTITY CASCADE"
        )
        yield conn


def _counts(conn: psycopg.Connection) -> dict[str, int]:
    tables = (
        "community",
        "grid",
        "building",
        "unit",
        "gateway",
        "household",
        "resident",
        "device",
        "contact",
    )
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}  # noqa: S608


def test_minimal_form_creates_resident_and_household(conn: psycopg.Connection) -> None:
    report = apply_registry(conn, parse_registry(MINIMAL))
    assert report.created["device"] == 3
    assert report.created["resident"] == 2
    assert report.created["household"] == 2
    assert report.created["gateway"] == 2
    row = conn.execute(
        "SELECT r.household_id, r.status, d.gateway_id, d.kind FROM device d JOIN resident r"
        " ON r.id = d.resident_id WHERE d.id = 'SOS-1'"
    ).fetchone()
    assert row == ("R-1", "active", "GW-1", "sos_button")
    keys = [r[0] for r in conn.execute("SELECT key FROM device ORDER BY key")]
    assert len(set(keys)) == 3  # every device gets its own dense integer key


def test_full_form_carries_hierarchy_and_contacts(conn: psycopg.Connection) -> None:
    apply_registry(conn, parse_registry(FULL))
    household = conn.execute(
        "SELECT address, community_id, grid_id, building_id, unit_id FROM household WHERE id = 'H-10'"
    ).fetchone()
    assert household == ("东一路 3 号 2 单元 401", "C-1", "G-1", "B-1", "U-1")
    assert conn.execute("SELECT community_id, name FROM grid").fetchall() == [("C-1", "一网格")]
    resident = conn.execute("SELECT name, phone FROM resident WHERE id = 'R-10'").fetchone()
    assert resident == ("王秀英", "+8613800000010")
    contacts = conn.execute(
        "SELECT role, position, name, phone, push_url FROM contact WHERE resident_id = 'R-10'"
        " ORDER BY role, position"
    ).fetchall()
    assert contacts == [
        ("grid_worker", 1, "刘网格", "+8613900000003", "json://127.0.0.1:9/hook"),
        ("love_key_holder", 1, "李大姐", "+8613900000001", None),
        ("love_key_holder", 2, "张师傅", "+8613900000002", None),
    ]
    assert conn.execute("SELECT phone FROM contact WHERE resident_id = 'R-11'").fetchone() == (
        "+447911123456",
    )
    interval = conn.execute("SELECT report_interval_s FROM device WHERE id = 'SMK-10'").fetchone()
    assert interval == (3600,)


def test_importing_the_same_file_twice_is_a_no_op(conn: psycopg.Connection) -> None:
    first = apply_registry(conn, parse_registry(FULL))
    before = _counts(conn)
    stamps = conn.execute("SELECT id, updated_at FROM device ORDER BY id").fetchall()
    second = apply_registry(conn, parse_registry(FULL))
    assert first.changed
    assert not second.changed, second.summary()
    assert second.summary().startswith("0 created, 0 updated")
    assert _counts(conn) == before
    assert conn.execute("SELECT id, updated_at FROM device ORDER BY id").fetchall() == stamps


def test_reimport_with_changes_updates_in_place(conn: psycopg.Connection) -> None:
    apply_registry(conn, parse_registry(FULL))
    contact_ids = dict(conn.execute("SELECT phone, id FROM contact WHERE resident_id = 'R-10'").fetchall())
    keys = dict(conn.execute("SELECT id, key FROM device").fetchall())
    changed = (
        FULL.replace("WM-10,GW-1,", "WM-10,GW-9,")  # device moves to another gateway
        .replace("138 0000 0010", "138 0000 9999")  # new phone
        .replace("love_key_holder,张师傅,13900000002,", ",,,")  # second key holder removed
        .replace("一网格", "第一网格")  # grid renamed
    )
    report = apply_registry(conn, parse_registry(changed))
    assert report.updated["device"] == 1
    assert report.created["gateway"] == 1
    assert report.updated["resident"] == 1
    assert report.updated["grid"] == 1
    assert report.updated["contact"] == 1  # one deleted
    assert conn.execute("SELECT gateway_id FROM device WHERE id = 'WM-10'").fetchone() == ("GW-9",)
    assert conn.execute("SELECT phone FROM resident WHERE id = 'R-10'").fetchone() == ("+8613800009999",)
    assert conn.execute("SELECT name FROM grid WHERE id = 'G-1'").fetchone() == ("第一网格",)
    after = dict(conn.execute("SELECT phone, id FROM contact WHERE resident_id = 'R-10'").fetchall())
    assert "+8613900000002" not in after
    assert after["+8613900000001"] == contact_ids["+8613900000001"]  # kept, same row
    assert dict(conn.execute("SELECT id, key FROM device").fetchall()) == keys  # keys never change


def test_blank_cells_do_not_erase_known_values(conn: psycopg.Connection) -> None:
    apply_registry(conn, parse_registry(FULL))
    # the minimal form names R-10's meter again but says nothing of names, hierarchy or contacts
    report = apply_registry(
        conn,
        parse_registry(
            "device_id,gateway_id,resident_id,kind,household_id\nWM-10,GW-1,R-10,water_meter,H-10\n"
        ),
    )
    assert not report.changed, report.summary()
    assert conn.execute("SELECT name FROM resident WHERE id = 'R-10'").fetchone() == ("王秀英",)
    assert conn.execute("SELECT count(*) FROM contact WHERE resident_id = 'R-10'").fetchone() == (3,)


def test_export_then_import_changes_nothing(conn: psycopg.Connection) -> None:
    apply_registry(conn, parse_registry(FULL))
    apply_registry(conn, parse_registry(MINIMAL))
    exported = export_registry(conn)
    assert exported.splitlines()[0].startswith("device_id,gateway_id,resident_id,kind")
    report = apply_registry(conn, parse_registry(exported))
    assert not report.changed, report.summary()
    assert len(exported.splitlines()) == 1 + 6


BAD = """device_id,gateway_id,resident_id,kind,resident_phone,contact1_role,contact1_phone
WM-1,GW-1,R-1,water_meter,13800000001,,
WM-2,GW-1,R-2,toaster,,,
WM-1,GW-1,R-3,water_meter,,,
WM-4,GW-1,R-4,water_meter,138-CALL-ME,,
WM-5,,R-5,smoke,,,
WM-6,GW-1,R-6,gas,,neighbour,13800000006
WM-7,GW-1,R-7,gas,,family,
WM-8,GW-1,R-1,smoke,13999999999,,
WM-9,GW-1,R-9
"""


def test_a_bad_file_lists_every_bad_line_and_changes_nothing(conn: psycopg.Connection) -> None:
    apply_registry(conn, parse_registry(MINIMAL))
    before = _counts(conn)
    with pytest.raises(ImportRejected) as caught:
        apply_registry(conn, parse_registry(BAD, name="bad.csv"))
    problems = caught.value.problems
    lines = [n for n, _ in problems]
    assert lines == [3, 4, 5, 6, 7, 8, 9, 10]
    reasons = dict(problems)
    assert (
        reasons[3]
        == "kind: unknown kind 'toaster' (one of water_meter, smoke, gas, sos_button, away_button, door_sensor)"
    )
    assert reasons[4] == "device_id: duplicate device 'WM-1' (first on line 2)"
    assert reasons[5].startswith("resident_phone: malformed phone '138-*****ME'")
    assert reasons[6] == "gateway_id: blank, but required"
    assert reasons[7].startswith("contact1_role: unknown role 'neighbour'")
    assert reasons[8] == "contact1_phone: blank, but required"
    assert reasons[9] == "resident_phone '+8613999999999' disagrees with '+8613800000001' on line 2"
    assert reasons[10] == "3 cells but the header has 7"
    assert "bad.csv" in str(caught.value)
    assert _counts(conn) == before


def test_every_bad_cell_of_a_row_is_reported_with_its_line_and_column() -> None:
    text = (
        "device_id,gateway_id,resident_id,kind,report_interval_s,resident_phone,grid_id,"
        "contact1_role,contact1_phone,contact1_push,contact2_role,contact2_phone,contact2_language\n"
        "WM 1,GW-1,R-1,meter,-5,1381234567,,family,138123456789,http//x,,,fr\n"  # line 2
        "WM-2,GW-1,R-2,water_meter,ten,,G-1,,,,,,\n"  # line 3
        "WM-3,GW-1,R-3,water_meter,900,+86 138 0000 0003,,grid_worker,13800000004,,,,\n"  # good
    )
    with pytest.raises(ImportRejected) as caught:
        parse_registry(text)
    reasons = [(n, why.split(":")[0]) for n, why in caught.value.problems]
    assert reasons == [
        (2, "device_id"),
        (2, "kind"),
        (2, "report_interval_s"),
        (2, "resident_phone"),
        (2, "contact1_phone"),
        (2, "contact1_push"),
        (2, "contact2_role"),
        (2, "contact2_phone"),
        (2, "contact2_language"),
        (3, "report_interval_s"),  # the cell stops the row, so its grid is not checked yet
    ]
    assert "'1381****67'" in caught.value.problems[3][1]  # the number is shown redacted
    assert "1381234567" not in str(caught.value)


def test_a_place_needs_its_parent() -> None:
    with pytest.raises(ImportRejected) as caught:
        parse_registry(
            "device_id,gateway_id,resident_id,kind,community_id,unit_id\nWM-1,GW-1,R-1,gas,C-1,U-1\n"
        )
    assert caught.value.problems == [(2, "unit_id given without building_id")]


def test_a_mistyped_mobile_is_a_rejected_line() -> None:
    text = (
        "device_id,gateway_id,resident_id,kind,resident_phone\n"
        "WM-1,GW-1,R-1,water_meter,13812345678\n"
        "WM-2,GW-1,R-2,water_meter,1381234567\n"  # a digit short: the old check let it through
        "WM-3,GW-1,R-3,water_meter,024-2345-6789\n"
    )
    with pytest.raises(ImportRejected) as caught:
        parse_registry(text)
    assert [(n, why.split(" '")[0]) for n, why in caught.value.problems] == [
        (3, "resident_phone: invalid phone")
    ]


def test_rows_become_devices_residents_and_contacts_in_column_order() -> None:
    text = (
        "device_id,gateway_id,resident_id,kind,report_interval_s,contact3_role,contact3_phone,"
        "contact1_role,contact1_phone,contact2_role,contact2_phone\n"
        "WM-1,GW-1,R-1,water_meter,900,family,13700000003,family,13700000001,grid_worker,13600000002\n"
        "SOS-1,GW-1,R-1,sos_button,,,,,,,\n"
    )
    registry = parse_registry(text)
    assert [(d.id, d.household_id, d.report_interval_s) for d in registry.devices] == [
        ("WM-1", "R-1", 900),
        ("SOS-1", "R-1", None),
    ]
    assert [(c.role, c.position, c.phone, c.language) for c in registry.contacts] == [
        ("family", 1, "+8613700000001", "zh"),
        ("grid_worker", 1, "+8613600000002", "zh"),
        ("family", 2, "+8613700000003", "zh"),
    ]
    assert registry.residents_with_contacts == {"R-1"}


def test_missing_required_column_is_reported_on_the_header() -> None:
    with pytest.raises(ImportRejected) as caught:
        parse_registry("device_id,gateway_id,kind\nWM-1,GW-1,water_meter\n")
    assert caught.value.problems == [(1, "missing required column(s): resident_id")]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("13812345678", "+8613812345678"),  # a mobile, written as people write it
        ("+86 138 1234 5678", "+8613812345678"),
        ("+86-138-1234-5678", "+8613812345678"),
        ("0086 138 1234 5678", "+8613812345678"),  # the international prefix dialled from China
        ("138.1234.5678", "+8613812345678"),
        ("19912345678", "+8619912345678"),  # a newer 199 mobile range
        ("024-2345-6789", "+862423456789"),  # a Shenyang landline, trunk 0 dropped
        ("(024) 2345 6789", "+862423456789"),
        ("010 1234 5678", "+861012345678"),  # Beijing
        ("400 123 4567", "+864001234567"),  # a national service number: valid, can be called
        ("+852 9123 4567", "+85291234567"),  # Hong Kong mobile
        ("+44 7911 123456", "+447911123456"),  # a UK mobile, family abroad
    ],
)
def test_phones_become_e164(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("1381234567", "invalid phone"),  # a mobile one digit short: possible length, no such number
        ("138123456789", "invalid phone"),  # one digit too many
        ("12345678901", "invalid phone"),  # 11 digits, but no mobile range starts 12
        ("2345 6789", "invalid phone"),  # a Shenyang landline without its area code
        ("086 13812345678", "invalid phone"),  # a stray trunk 0 before the country code
        ("+44 7700 900123", "invalid phone"),  # UK numbers reserved for drama, never in use
        ("+1234567890123456", "invalid phone"),  # longer than E.164 allows
        ("12", "invalid phone"),
        ("", "malformed phone"),
        ("+999 1234 5678", "malformed phone"),  # no such country code
        ("138-CALL-ME", "malformed phone"),  # phonenumbers would read the letters as a keypad
        ("+86 138 1234 5678 x12", "malformed phone"),  # an extension cannot take an SMS
    ],
)
def test_bad_phones_are_refused(raw: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        normalize_phone(raw)
    digits = "".join(c for c in raw if c.isdigit())
    if len(digits) > 6:
        assert digits not in "".join(c for c in str(caught.value) if c.isdigit())  # redacted


def test_national_numbers_take_the_default_country() -> None:
    assert normalize_phone("7911 123456", "44") == "+447911123456"
    assert normalize_phone("+86 138 1234 5678", "44") == "+8613812345678"  # its own code wins
    with pytest.raises(ValueError, match="invalid phone"):
        normalize_phone("13812345678", "44")


def test_cli_import_list_export(
    registry_url: str,
    conn: psycopg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LOVEKEY_DATABASE_URL", registry_url)
    good = tmp_path / "district.csv"
    good.write_text(FULL, encoding="utf-8")
    assert main(["devices", "import", str(good)]) == 0
    assert "created" in capsys.readouterr().out
    assert main(["devices", "import", str(good)]) == 0
    assert "0 created, 0 updated" in capsys.readouterr().out

    bad = tmp_path / "bad.csv"
    bad.write_text(BAD, encoding="utf-8")
    assert main(["devices", "import", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "8 problem(s), nothing imported" in err
    assert "line 10:" in err

    assert main(["devices", "list", "--json", "--kind", "water_meter"]) == 0
    import json

    listed = json.loads(capsys.readouterr().out)
    assert sorted(d["device_id"] for d in listed) == ["WM-10", "WM-11"]
    assert list_devices(conn, resident_id="R-10", kind="smoke")[0]["device_id"] == "SMK-10"

    out = tmp_path / "export.csv"
    assert main(["devices", "export", "--out", str(out)]) == 0
    assert main(["devices", "import", str(out)]) == 0
    assert "0 created, 0 updated" in capsys.readouterr().out


@pytest.mark.parametrize("bad_id", ["WM 1", "-WM1", "WM/1", "设备1", "W" * 65, "WM1\t2"])
def test_a_bad_id_is_reported_in_our_words(bad_id: str) -> None:
    with pytest.raises(ImportRejected) as caught:
        parse_registry(f'device_id,gateway_id,resident_id,kind\n"{bad_id}",GW-1,R-1,gas\n')
    assert caught.value.problems == [(2, f"device_id: {bad_id!r} is not a valid id (letters, digits, _.:-)")]


def test_an_id_of_64_letters_digits_and_marks_is_good() -> None:
    good = "W" + "m_.:-1" * 10 + "xyz"
    assert [
        d.id for d in parse_registry(f"device_id,gateway_id,resident_id,kind\n{good},G,R,gas\n").devices
    ] == [good]
