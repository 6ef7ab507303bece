"""Registry cells a spreadsheet will not run as formulas, and back.

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula to Excel,
LibreOffice and Google Sheets: a resident's name `=HYPERLINK(...)` in an exported registry runs
when a staff member opens the file. OWASP's remedy is a leading `'`, which a spreadsheet shows
as "text follows". `escape_cell` adds it (to a cell that already starts with `'` as well, so the
escape can be undone exactly) and `unescape_cell`, used by the importer, removes it: a value
exported and imported again is the value stored. The full-width `＝＋－＠` count too, as CJK
input methods type them and some spreadsheets read them as their ASCII twins.

A plain number (`+8613812345678`, `-5`) runs nothing: E.164 phones are exported as they are.
"""

from __future__ import annotations

import re

_FORMULA_START = frozenset("=+-@\t\r'＝＋－＠")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def escape_cell(cell: str) -> str:
    """`=1+1` -> `'=1+1`; `'x` -> `''x`; `+8613812345678` and `王秀英` unchanged."""
    if cell[:1] in _FORMULA_START and not _PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def unescape_cell(cell: str) -> str:
    """The reverse of `escape_cell`: one `'` before a formula character is dropped; a `'` before
    anything else (`'Tis`) is the value's own."""
    if cell[:1] == "'" and cell[1:2] in _FORMULA_START:
        return cell[1:]
    return cell
