"""Reading a registry CSV file into a validated `RegistryFile` (no database here).

Two steps, as the file has two kinds of rule. Each line on its own is a `CsvLine`, a pydantic
model of its cells (ids, kind, phones, languages, contacts): what is wrong with a line is found
there and reported with its line number and column. The lines together must agree with one
another (one device per id, one name per resident, one parent per grid, ...): `_District` gathers
the good rows and checks that. The whole file is checked before anything is returned; every bad
line is collected and `ImportRejected` carries them all. See docs/registry.md for the format.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from lovekey.devices.csv_safety import unescape_cell
from lovekey.devices.model import (
    CONTACT_ROLES,
    DEVICE_KINDS,
    LANGUAGES,
    Contact,
    Device,
    Household,
    Place,
    RegistryFile,
    Resident,
)
from lovekey.devices.phone import normalize_phone
from lovekey.errors import ImportRejected

Problems = list[tuple[int, str]]  # (line number, reason), the header being line 1

# The longest a cell may be, in characters: names 100, addresses 200, a contact's Apprise URLs
# 2000 (tokens are long); ids are held to 64 by their own rule. Checked before anything else,
# so no error message repeats a huge cell.
_MAX_CHARS = {"address": 200, "push": 2000}
_MAX_CHARS_OTHERWISE = 100
# Python's csv parser raises on a cell longer than its field limit, a process-wide setting:
# set here, where registries are read, well above every cap so that an oversized cell is
# reported by its column; only a cell past this one stops the reading.
_CSV_FIELD_LIMIT = 1 << 20

# -- one row's cells --------------------------------------------------------------------------
# Every validator gets the cell already stripped and never blank: a blank cell means "not given"
# and is left out of the row, so a required one is reported as missing.

# Seven ids a row: checked by pydantic-core's own regex, without a call into Python for each;
# `_reason` words a mismatch the way a value_error of ours would be.
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"


def _one_of(choices: tuple[str, ...], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"{what} {value!r} (one of {', '.join(choices)})")
        return value

    return AfterValidator(check)


def _positive_whole(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise ValueError(f"{value!r} is not a positive whole number")
    return number


def _a_phone(value: str, info: ValidationInfo) -> str:
    country_code = (info.context or {}).get("default_country_code", "86")
    return normalize_phone(value, country_code)


def _apprise_urls(value: str) -> str:
    if not all("://" in url for url in value.split()):
        raise ValueError(f"{value!r} is not an Apprise URL (scheme://...)")
    return value


Id = Annotated[str, StringConstraints(pattern=_ID_PATTERN)]
# A device's id at its source: hex (DevEUI, CJ/T 188 address), digits (IMEI), or a Zigbee2MQTT
# friendly name, which may hold spaces and '/' but never an MQTT wildcard or a control character.
_EXTERNAL_ID_PATTERN = r"^[^\x00-\x1f\x7f+#]{1,64}$"
ExternalId = Annotated[str, StringConstraints(pattern=_EXTERNAL_ID_PATTERN)]
Phone = Annotated[str, AfterValidator(_a_phone)]
Language = Annotated[str, _one_of(LANGUAGES, "unknown language")]


class ContactCells(BaseModel):
    """The `contactN_*` cells of one row: whom to tell, N-th in the order of the columns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Annotated[str, _one_of(CONTACT_ROLES, "unknown role")]
    name: str = ""
    phone: Phone  # every contact must be reachable
    push: Annotated[str, AfterValidator(_apprise_urls)] | None = None
    language: Language = "zh"


class CsvLine(BaseModel):
    """One line of the file: a device, and what the line says about its resident and home.

    Field names are the CSV columns (contacts aside: `contactN_role` is `contacts[N].role`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: Id
    gateway_id: Id
    resident_id: Id
    kind: Annotated[str, _one_of(DEVICE_KINDS, "unknown kind")]
    report_interval_s: Annotated[int, BeforeValidator(_positive_whole)] | None = None
    external_id: ExternalId | None = None
    resident_name: str | None = None
    resident_phone: Phone | None = None
    resident_language: Language | None = None
    household_id: str | None = None
    address: str | None = None
    community_id: Id | None = None
    community_name: str | None = None
    grid_id: Id | None = None
    grid_name: str | None = None
    building_id: Id | None = None
    building_name: str | None = None
    unit_id: Id | None = None
    unit_name: str | None = None
    contacts: dict[int, ContactCells] = {}

    @model_validator(mode="after")
    def _each_place_has_its_parent(self) -> CsvLine:
        for place_id, parent_id in _PARENT_ID.items():
            if getattr(self, place_id) is not None and getattr(self, parent_id) is None:
                raise ValueError(f"{place_id} given without {parent_id}")
        return self

    @property
    def household(self) -> str:
        """A resident given without a household gets one of their own, with their id."""
        return self.household_id or self.resident_id

    def contact_list(self) -> list[Contact]:
        """The row's contacts; within a role they are tried in the order of N."""
        contacts: list[Contact] = []
        positions: dict[str, int] = {}
        for cells in self.contacts.values():
            positions[cells.role] = positions.get(cells.role, 0) + 1
            contacts.append(
                Contact(
                    resident_id=self.resident_id,
                    role=cells.role,
                    position=positions[cells.role],
                    name=cells.name,
                    phone=cells.phone,
                    push_url=cells.push,
                    language=cells.language,
                )
            )
        return contacts


# the hierarchy from the top down: each level and the level it sits in
_LEVELS = ("community", "grid", "building", "unit")
_PARENT = {"grid": "community", "building": "grid", "unit": "building"}
_PARENT_ID = {f"{level}_id": f"{parent}_id" for level, parent in _PARENT.items()}
# (level, its id column, its name column, its parent's id column): spelled out once, not per row
_LEVEL_COLUMNS = tuple(
    (level, f"{level}_id", f"{level}_name", f"{_PARENT[level]}_id" if level in _PARENT else None)
    for level in _LEVELS
)
_CONTACT_COLUMN = re.compile(r"^contact(?P<n>[1-9]\d*)_(?P<field>role|name|phone|push|language)$")
REQUIRED = tuple(name for name, f in CsvLine.model_fields.items() if f.is_required())
OPTIONAL = tuple(
    name for name, f in CsvLine.model_fields.items() if not f.is_required() and name != "contacts"
)


@dataclass(frozen=True, slots=True)
class _Columns:
    """Where each cell of a line goes in a `CsvLine`, worked out once from the header."""

    plain: tuple[tuple[int, str], ...]  # (cell index, field)
    contacts: tuple[tuple[int, tuple[tuple[int, str], ...]], ...]  # (N, its cells), N ascending

    @classmethod
    def of(cls, header: list[str]) -> _Columns:
        plain: list[tuple[int, str]] = []
        slots: dict[int, list[tuple[int, str]]] = {}
        for index, column in enumerate(header):
            if match := _CONTACT_COLUMN.match(column):
                slots.setdefault(int(match["n"]), []).append((index, match["field"]))
            else:
                plain.append((index, column))
        return cls(tuple(plain), tuple((n, tuple(slots[n])) for n in sorted(slots)))

    def row(self, cells: list[str]) -> dict[str, Any]:
        """The filled cells of a line: blank means "not given", and most cells of a file are."""
        data: dict[str, Any] = {
            field: value for index, field in self.plain if (value := cells[index].strip())
        }
        contacts: dict[int, dict[str, str]] = {}
        for n, slot in self.contacts:
            if filled := {field: value for index, field in slot if (value := cells[index].strip())}:
                contacts[n] = filled
        data["contacts"] = contacts
        return data


def read_row(line: int, data: dict[str, Any], context: dict[str, str]) -> tuple[CsvLine | None, Problems]:
    """One line's filled cells (from `_Columns.row`) as a `CsvLine`, or every problem it has."""
    try:
        return CsvLine.model_validate(data, context=context), []
    except ValidationError as exc:
        return None, [(line, _reason(error)) for error in exc.errors(include_url=False)]


def _reason(error: Any) -> str:
    """`column: what is wrong`, in the file's own column names."""
    loc = error["loc"]
    column = (
        f"contact{loc[1]}_{loc[2]}" if loc[:1] == ("contacts",) and len(loc) == 3 else ".".join(map(str, loc))
    )
    if error["type"] == "missing":
        detail = "blank, but required"
    elif error["type"] == "value_error":
        detail = str(error["ctx"]["error"])  # our own words, without pydantic's "Value error, "
    elif error["type"] == "string_pattern_mismatch" and column == "external_id":
        detail = f"{error['input']!r} is not an id at a source (1-64 characters, no + # or controls)"
    elif error["type"] == "string_pattern_mismatch":  # only ids have a pattern
        detail = f"{error['input']!r} is not a valid id (letters, digits, _.:-)"
    else:
        detail = error["msg"]
    return f"{column}: {detail}" if column else detail


# -- the rows together ------------------------------------------------------------------------


@dataclass(slots=True)
class _Merged:
    """Values of one entity gathered from several rows; the first line that set each is kept."""

    values: dict[str, str] = field(default_factory=dict)
    line_of: dict[str, int] = field(default_factory=dict)

    def merge(self, line: int, column: str, value: str | None, problems: Problems) -> None:
        if value is None:
            return
        known = self.values.get(column)
        if known is None:
            self.values[column] = value
            self.line_of[column] = line
        elif known != value:
            problems.append(
                (line, f"{column} {value!r} disagrees with {known!r} on line {self.line_of[column]}")
            )


@dataclass(slots=True)
class _District:
    """What the good rows say together; `add` reports where a row contradicts an earlier one."""

    places: dict[str, dict[str, _Merged]] = field(default_factory=lambda: {k: {} for k in _LEVELS})
    households: dict[str, _Merged] = field(default_factory=dict)
    residents: dict[str, _Merged] = field(default_factory=dict)
    devices: dict[str, tuple[int, Device]] = field(default_factory=dict)
    gateways: dict[str, None] = field(default_factory=dict)
    contacts: dict[str, tuple[int, list[Contact]]] = field(default_factory=dict)
    # (gateway id, external id in lower case) -> line: a source's ids name one device each
    external_ids: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, line: int, row: CsvLine, problems: Problems) -> None:
        if row.device_id in self.devices:
            first = self.devices[row.device_id][0]
            problems.append((line, f"device_id: duplicate device {row.device_id!r} (first on line {first})"))
            return
        if row.external_id is not None:
            # case is ignored, as the ingester ignores it (a DevEUI is written either way)
            at_source = (row.gateway_id, row.external_id.lower())
            if at_source in self.external_ids:
                first = self.external_ids[at_source]
                problems.append(
                    (
                        line,
                        f"external_id: {row.external_id!r} already names a device of gateway"
                        f" {row.gateway_id!r} (line {first})",
                    )
                )
                return
            self.external_ids[at_source] = line
        device = Device(
            id=row.device_id,
            gateway_id=row.gateway_id,
            resident_id=row.resident_id,
            household_id=row.household,
            kind=row.kind,
            report_interval_s=row.report_interval_s,
            external_id=row.external_id,
        )
        self.devices[row.device_id] = (line, device)
        self.gateways[row.gateway_id] = None

        for level, id_column, name_column, parent_id_column in _LEVEL_COLUMNS:
            place_id: str | None = getattr(row, id_column)
            if place_id is None:
                continue
            place = self.places[level].get(place_id) or self.places[level].setdefault(place_id, _Merged())
            place.merge(line, name_column, getattr(row, name_column), problems)
            if parent_id_column:
                place.merge(line, f"{level} {place_id} parent", getattr(row, parent_id_column), problems)

        household = self.households.setdefault(row.household, _Merged())
        for column in ("address", "community_id", "grid_id", "building_id", "unit_id"):
            household.merge(line, column, getattr(row, column), problems)

        resident = self.residents.setdefault(row.resident_id, _Merged())
        resident.merge(line, "household_id", row.household, problems)
        resident.merge(line, "resident_name", row.resident_name, problems)
        resident.merge(line, "resident_phone", row.resident_phone, problems)
        resident.merge(line, "resident_language", row.resident_language, problems)

        # a resident's contacts may be given on any one of their rows, or the same on several
        contacts = row.contact_list()
        if not contacts:
            return
        if row.resident_id not in self.contacts:
            self.contacts[row.resident_id] = (line, contacts)
        elif self.contacts[row.resident_id][1] != contacts:
            first = self.contacts[row.resident_id][0]
            problems.append((line, f"contacts of resident {row.resident_id!r} differ from line {first}"))

    def registry(self) -> RegistryFile:
        def places(level: str) -> tuple[Place, ...]:
            return tuple(
                Place(
                    id=pid,
                    name=m.values.get(f"{level}_name"),
                    parent_id=m.values.get(f"{level} {pid} parent"),
                )
                for pid, m in self.places[level].items()
            )

        return RegistryFile(
            communities=places("community"),
            grids=places("grid"),
            buildings=places("building"),
            units=places("unit"),
            gateways=tuple(self.gateways),
            households=tuple(
                Household(
                    id=hid,
                    address=m.values.get("address"),
                    community_id=m.values.get("community_id"),
                    grid_id=m.values.get("grid_id"),
                    building_id=m.values.get("building_id"),
                    unit_id=m.values.get("unit_id"),
                )
                for hid, m in self.households.items()
            ),
            residents=tuple(
                Resident(
                    id=rid,
                    household_id=m.values["household_id"],
                    name=m.values.get("resident_name"),
                    phone=m.values.get("resident_phone"),
                    language=m.values.get("resident_language"),
                )
                for rid, m in self.residents.items()
            ),
            devices=tuple(device for _, device in self.devices.values()),
            contacts=tuple(c for _, listed in self.contacts.values() for c in listed),
            residents_with_contacts=frozenset(self.contacts),
        )


# -- the file ---------------------------------------------------------------------------------


def parse_registry(
    source: str | Iterable[str], *, name: str = "<registry>", default_country_code: str = "86"
) -> RegistryFile:
    """Parse and validate; raise ImportRejected listing every problem when there is any."""
    text = source if isinstance(source, str) else "".join(source)
    unreadable: Problems = []
    lines = _lines(text, unreadable)
    try:
        _, cells = next(lines)
    except StopIteration:
        raise ImportRejected(name, unreadable or [(1, "empty file: expected a header row")]) from None
    header = [h.strip() for h in cells]
    if problems := _header_problems(header):
        raise ImportRejected(name, problems)

    columns = _Columns.of(header)
    caps = [_cap(column) for column in header]
    smallest_cap = min(caps, default=0)
    # the country a number without its own code belongs to is a setting, passed as context
    context = {"default_country_code": default_country_code}
    district = _District()
    rows = 0
    for line, cells in lines:
        if len(cells) != len(header):
            if not "".join(cells).strip():
                continue  # blank lines are allowed
            problems.append((line, f"{len(cells)} cells but the header has {len(header)}"))
            continue
        if max(map(len, cells), default=0) > smallest_cap and (
            too_long := _too_long(line, header, caps, cells)
        ):
            problems += too_long
            rows += 1
            continue
        if "'" in "".join(cells):  # `'=...` is how an export keeps formulas out of spreadsheets
            cells = [unescape_cell(cell.strip()) for cell in cells]
        data = columns.row(cells)
        if len(data) == 1 and not data["contacts"]:
            continue  # a line of blank cells is a blank line
        rows += 1
        row, row_problems = read_row(line, data, context)
        problems += row_problems
        if row is not None:  # a row with bad cells is not checked against the others
            district.add(line, row, problems)

    problems += unreadable
    if not rows and not problems:
        problems.append((1, "no rows after the header"))
    if problems:
        problems.sort(key=lambda p: p[0])
        raise ImportRejected(name, problems)
    return district.registry()


def _lines(text: str, unreadable: Problems) -> Iterator[tuple[int, list[str]]]:
    """`(line number, cells)` of each CSV record; a quoted cell may span lines. A cell past the
    parser's limit ends the reading with a problem added to `unreadable`."""
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        for cells in reader:
            yield reader.line_num, cells
    except csv.Error as exc:  # with the default dialect, only "field larger than field limit"
        unreadable.append((reader.line_num, f"too long to read ({exc}); the rest of the file was not read"))


def _cap(column: str) -> int:
    """The most characters a cell of `column` may hold."""
    match = _CONTACT_COLUMN.match(column)
    return _MAX_CHARS.get(match["field"] if match else column, _MAX_CHARS_OTHERWISE)


def _too_long(line: int, header: list[str], caps: list[int], cells: list[str]) -> Problems:
    """A problem for each cell longer than its column's cap (checked before any parsing)."""
    return [
        (line, f"{column}: too long ({len(cell.strip())} characters, at most {cap})")
        for column, cap, cell in zip(header, caps, cells, strict=True)
        if len(cell) > cap and len(cell.strip()) > cap
    ]


def _header_problems(header: list[str]) -> Problems:
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in REQUIRED and c not in OPTIONAL and not _CONTACT_COLUMN.match(c)]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    problems: Problems = []
    if missing:
        problems.append((1, f"missing required column(s): {', '.join(missing)}"))
    if unknown:
        problems.append((1, f"unknown column(s): {', '.join(unknown)} (see docs/registry.md)"))
    if duplicated:
        problems.append((1, f"column(s) given twice: {', '.join(duplicated)}"))
    return problems
