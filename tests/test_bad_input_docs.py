"""docs/bad-input.md cannot rot: every test it names is collected by pytest under that node id,
every test written for it is named in it, and a row that says a kind is not handled names a
strict xfail (so the suite fails, and the row must change, the day the hole is closed)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "bad-input.md"
ROW = re.compile(r"^\| ([A-Z])-(\d{2}) \|")
REFERENCE = re.compile(r"`(tests/[\w/]+\.py::[^`]+)`")
COLUMNS = ("id", "origin", "input", "surface", "expected", "observed", "test")
MIN_ROWS = 75


@dataclass(frozen=True)
class Row:
    id: str
    cells: dict[str, str]
    tests: tuple[str, ...]


def rows() -> list[Row]:
    found = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not ROW.match(line):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        assert len(cells) == len(COLUMNS), line
        named = dict(zip(COLUMNS, cells, strict=True))
        found.append(Row(named["id"], named, tuple(REFERENCE.findall(named["test"]))))
    return found


@pytest.fixture(scope="module")
def collected() -> set[str]:
    """Node ids pytest collects from every file the table names."""
    files = sorted({ref.split("::", 1)[0] for row in rows() for ref in row.tests})
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-o",
            "addopts=",
            "-p",
            "no:cacheprovider",
            *files,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {line.strip() for line in done.stdout.splitlines() if "::" in line}


def test_every_row_is_complete_and_there_are_enough() -> None:
    table = rows()
    assert len(table) >= MIN_ROWS
    ids = [row.id for row in table]
    assert len(ids) == len(set(ids)), "a row id is used twice"
    for row in table:
        empty = [column for column, cell in row.cells.items() if not cell]
        assert not empty, f"{row.id}: empty {empty}"
        assert row.tests, f"{row.id}: names no test"
    summary = re.search(r"Summary: (\d+) rows", DOC.read_text(encoding="utf-8"))
    assert summary is not None
    assert int(summary[1]) == len(table), "the summary's count is not the table's"


def test_every_named_test_exists(collected: set[str]) -> None:
    missing = []
    for row in rows():
        for ref in row.tests:
            # a test function names all its parameter cases; a case is named exactly
            exists = ref in collected or any(node.startswith(ref + "[") for node in collected)
            if not exists:
                missing.append(f"{row.id}: {ref}")
    assert missing == []


def _bad_input_tests() -> dict[str, object]:
    """`tests/test_bad_input_x.py::name` -> function, for the tests written for the table."""
    tests = {}
    for path in sorted((ROOT / "tests").glob("test_bad_input_*.py")):
        if path.name == Path(__file__).name:
            continue
        module = importlib.import_module(f"tests.{path.stem}")
        for name, value in vars(module).items():
            if name.startswith("test_") and callable(value):
                tests[f"tests/{path.name}::{name}"] = value
    return tests


def test_every_test_written_for_the_table_is_in_it() -> None:
    named = {ref.split("[", 1)[0] for row in rows() for ref in row.tests}
    assert sorted(set(_bad_input_tests()) - named) == []


def test_rows_not_handled_name_a_strict_xfail_and_only_they_do() -> None:
    tests = _bad_input_tests()

    def strict_xfail(ref: str) -> bool:
        marks = getattr(tests.get(ref.split("[", 1)[0]), "pytestmark", [])
        return any(mark.name == "xfail" and mark.kwargs.get("strict") for mark in marks)

    for row in rows():
        open_hole = "NOT handled" in row.cells["observed"]
        assert open_hole == any(strict_xfail(ref) for ref in row.tests), row.id
    cited = {ref.split("[", 1)[0] for row in rows() for ref in row.tests}
    for ref in tests:
        if strict_xfail(ref):
            assert ref in cited
