"""Bad registry files that test_registry.py and test_registry_limits.py do not try
(docs/bad-input.md, "Registry CSV"): a quote left open, NUL and other control characters, a
spreadsheet saved as GBK or as .xlsx, semicolons for commas, a header given twice, and files
that are empty, missing or only a header. Each is a clear problem with its line, no traceback,
and nothing imported (the import is all or nothing, on real PostgreSQL).
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from lovekey.cli import main
from lovekey.devices import parse_registry
from lovekey.errors import ImportRejected
from tests.conftest import DatabaseFactory

HEADER = "device_id,gateway_id,resident_id,kind,resident_name\n"


def problems(text: str) -> list[tuple[int, str]]:
    with pytest.raises(ImportRejected) as caught:
        parse_registry(text, name="bad.csv")
    return caught.value.problems


def test_a_quote_left_open_is_a_rejected_line_not_swallowed_devices() -> None:
    # before: the open quote took the next two lines into R-1's name; WM-2 and WM-3 were
    # silently left out of the import
    text = (
        HEADER
        + 'WM-1,GW-1,R-1,water_meter,"Wang\n'
        + "WM-2,GW-1,R-2,water_meter,Li\n"
        + "WM-3,GW-1,R-3,water_meter,Zhao\n"
    )
    assert problems(text) == [
        (2, "resident_name: holds a line break or another control character (a quote left open?)")
    ]


@pytest.mark.parametrize(
    ("name", "label"),
    [("Wang\x00Fang", "NUL"), ('"Wang\r\nFang"', "a line break in quotes"), ("Wang\x1bFang", "an escape")],
)
def test_control_characters_in_a_cell_are_a_rejected_line(name: str, label: str) -> None:
    text = HEADER + "WM-0,GW-1,R-0,water_meter,Li\n" + f"WM-1,GW-1,R-1,water_meter,{name}\n"
    assert problems(text) == [
        (3, "resident_name: holds a line break or another control character (a quote left open?)")
    ], label


def test_a_line_after_a_multi_line_record_keeps_its_own_number() -> None:
    text = HEADER + 'WM-1,GW-1,R-1,water_meter,"a\nb"\n' + "WM-2,GW-1,R-2,water_meter,ok,extra\n"
    assert [line for line, _ in problems(text)] == [2, 4]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [(1, "empty file: expected a header row")]),
        (HEADER, [(1, "no rows after the header")]),
        (
            HEADER.replace(",", ";") + "WM-1;GW-1;R-1;water_meter;x\n",
            [
                (1, "missing required column(s): device_id, gateway_id, resident_id, kind"),
                (
                    1,
                    "unknown column(s): device_id;gateway_id;resident_id;kind;resident_name"
                    " (see docs/registry.md)",
                ),
            ],
        ),
        (
            "device_id,device_id,gateway_id,resident_id,kind\nWM-1,WM-2,GW-1,R-1,gas\n",
            [(1, "column(s) given twice: device_id")],
        ),
    ],
    ids=["empty", "header only", "semicolons", "a column twice"],
)
def test_files_without_usable_rows_say_why(text: str, expected: list[tuple[int, str]]) -> None:
    assert problems(text) == expected


def test_a_utf8_byte_order_mark_from_a_spreadsheet_is_accepted() -> None:
    registry = parse_registry("\ufeff" + HEADER + "WM-1,GW-1,R-1,water_meter,王秀英\n")
    assert [d.id for d in registry.devices] == ["WM-1"]


@pytest.fixture
def cli_database(postgres_factory: DatabaseFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = postgres_factory.create("badinput_registry")
    monkeypatch.setenv("LOVEKEY_DATABASE_URL", url)
    monkeypatch.setenv("LOVEKEY_DATA_DIR", str(tmp_path / "data"))
    return url


def devices(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM device ORDER BY id")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (HEADER.encode() + "WM-1,GW-1,R-1,water_meter,王秀英\n".encode("gbk"), "cannot read"),
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xe3\x8f", "cannot read"),  # an .xlsx
        (HEADER.encode() + b"WM-1,GW-1,R-1,water_meter,Wang\x00Fang\n", "line 2: resident_name: holds"),
        (
            HEADER.encode() + b'WM-1,GW-1,R-1,water_meter,"Wang\nWM-2,GW-1,R-2,gas,Li\n',
            "line 2: resident_name",
        ),
        (None, "cannot read"),  # no such file
    ],
    ids=["GBK", "xlsx", "NUL", "open quote", "missing"],
)
def test_the_cli_refuses_unreadable_files_in_one_line_and_imports_nothing(
    cli_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    message: str,
) -> None:
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "WM-0,GW-1,R-0,water_meter,Li\n", encoding="utf-8")
    assert main(["devices", "import", str(good)]) == 0
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_bytes(content)
    capsys.readouterr()
    assert main(["devices", "import", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert devices(cli_database) == ["WM-0"]
