"""Reading a registry CSV file into a validated `RegistryFile` (no database here).

The whole file is checked before anything is returned: every bad line is collected with its
number and reason, and `ImportRejected` carries them all. See docs/registry.md for the format.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

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

REQUIRED = ("device_id", "gateway_id", "resident_id", "kind")
OPTIONAL = (
    "report_interval_s",
    "resident_name",
    "resident_phone",
    "resident_language",
    "household_id",
    "address",
    "community_id",
    "community_name",
    "grid_id",
    "grid_name",
    "building_id",
    "building_name",
    "unit_id",
    "unit_name",
)
CONTACT_FIELDS = ("role", "name", "phone", "push", "language")
_CONTACT_COLUMN = re.compile(r"^contact(?P<n>[1-9]\d*)_(?P<field>role|name|phone|push|language)$")
# (level, id column, name column, parent id column) from the top of the hierarchy down
_LEVELS = (
    ("community", "community_id", "community_name", None),
    ("grid", "grid_id", "grid_name", "community_id"),
    ("building", "building_id", "building_name", "grid_id"),
    ("unit", "unit_id", "unit_name", "building_id"),
)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")


@dataclass(slots=True)
class _Merged:
    """Values of one entity gathered from several rows; the first line that set each is kept."""

    values: dict[str, str] = field(default_factory=dict)
    line_of: dict[str, int] = field(default_factory=dict)

    def merge(self, line: int, column: str, value: str | None, problems: list[tuple[int, str]]) -> None:
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


def parse_registry(
    source: str | Iterable[str], *, name: str = "<registry>", default_country_code: str = "86"
) -> RegistryFile:
    """Parse and validate; raise ImportRejected listing every problem when there is any."""
    text = source if isinstance(source, str) else "".join(source)
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    problems: list[tuple[int, str]] = []
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ImportRejected(name, [(1, "empty file: expected a header row")]) from None

    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in REQUIRED and c not in OPTIONAL and not _CONTACT_COLUMN.match(c)]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if missing:
        problems.append((1, f"missing required column(s): {', '.join(missing)}"))
    if unknown:
        problems.append((1, f"unknown column(s): {', '.join(unknown)} (see docs/registry.md)"))
    if duplicated:
        problems.append((1, f"column(s) given twice: {', '.join(duplicated)}"))
    if problems:
        raise ImportRejected(name, problems)

    slot_numbers = sorted({int(m["n"]) for c in header if (m := _CONTACT_COLUMN.match(c))})
    contact_slots = [(n, tuple(f"contact{n}_{f}" for f in CONTACT_FIELDS)) for n in slot_numbers]
    places: dict[str, dict[str, _Merged]] = {k: {} for k in ("community", "grid", "building", "unit")}
    households: dict[str, _Merged] = {}
    residents: dict[str, _Merged] = {}
    devices: dict[str, tuple[int, Device]] = {}
    gateways: dict[str, None] = {}
    contacts: dict[str, list[tuple[int, Contact]]] = {}
    contact_lines: dict[str, int] = {}

    line = 1
    for cells in reader:
        line = reader.line_num
        if not "".join(cells).strip():
            continue  # blank lines are allowed
        if len(cells) != len(header):
            problems.append((line, f"{len(cells)} cells but the header has {len(header)}"))
            continue
        # only filled cells: blank means "not given", and most cells of a full file are blank
        row = {k: v for k, c in zip(header, cells, strict=True) if (v := c.strip())}
        before = len(problems)

        for column in REQUIRED:
            value = row.get(column)
            if value is None:
                problems.append((line, f"{column} is blank"))
            elif column != "kind" and not _ID.match(value):
                problems.append((line, f"{column} {value!r} is not a valid id (letters, digits, _.:-)"))
        kind = row.get("kind")
        if kind is not None and kind not in DEVICE_KINDS:
            problems.append((line, f"unknown kind {kind!r} (one of {', '.join(DEVICE_KINDS)})"))
        interval: int | None = None
        if row.get("report_interval_s") is not None:
            try:
                interval = int(row["report_interval_s"] or "")
                if interval <= 0:
                    raise ValueError
            except ValueError:
                problems.append(
                    (line, f"report_interval_s {row['report_interval_s']!r} is not a positive whole number")
                )
        resident_phone = None
        if row.get("resident_phone"):
            try:
                resident_phone = normalize_phone(row["resident_phone"] or "", default_country_code)
            except ValueError as exc:
                problems.append((line, f"resident_phone: {exc}"))
        for column in ("resident_language",):
            if row.get(column) and row[column] not in LANGUAGES:
                problems.append((line, f"{column} {row[column]!r} is not one of {', '.join(LANGUAGES)}"))
        for _, id_column, _, parent_column in _LEVELS:
            value = row.get(id_column)
            if value is None:
                continue
            if not _ID.match(value):
                problems.append((line, f"{id_column} {value!r} is not a valid id"))
            if parent_column and parent_column not in row:
                problems.append((line, f"{id_column} given without {parent_column}"))

        row_contacts: list[Contact] = []
        positions: dict[str, int] = {}  # order within each role, in column order
        for n, columns in contact_slots:
            if not any(c in row for c in columns):
                continue
            cell = {f: row.get(c) for f, c in zip(CONTACT_FIELDS, columns, strict=True)}
            role = cell["role"]
            if role is None:
                problems.append((line, f"contact{n} has no role"))
                continue
            if role not in CONTACT_ROLES:
                problems.append((line, f"contact{n}_role {role!r} is not one of {', '.join(CONTACT_ROLES)}"))
                continue
            if cell["phone"] is None:
                problems.append((line, f"contact{n} ({role}) has no phone"))
                continue
            try:
                phone = normalize_phone(cell["phone"], default_country_code)
            except ValueError as exc:
                problems.append((line, f"contact{n}_phone: {exc}"))
                continue
            language = cell["language"] or "zh"
            if language not in LANGUAGES:
                problems.append(
                    (line, f"contact{n}_language {language!r} is not one of {', '.join(LANGUAGES)}")
                )
                continue
            push = cell["push"]
            if push is not None and not all("://" in url for url in push.split()):
                problems.append((line, f"contact{n}_push {push!r} is not an Apprise URL (scheme://...)"))
                continue
            positions[role] = positions.get(role, 0) + 1
            row_contacts.append(
                Contact(
                    resident_id=row["resident_id"],
                    role=role,
                    position=positions[role],
                    name=cell["name"] or "",
                    phone=phone,
                    push_url=push,
                    language=language,
                )
            )

        if len(problems) > before:
            continue  # the row's own cells are bad; do not let them trip consistency checks

        device_id = row["device_id"]
        resident_id = row["resident_id"]
        household_id = row.get("household_id") or resident_id
        if device_id in devices:
            problems.append((line, f"duplicate device {device_id!r} (first on line {devices[device_id][0]})"))
            continue
        devices[device_id] = (
            line,
            Device(
                id=device_id,
                gateway_id=row["gateway_id"],
                resident_id=resident_id,
                household_id=household_id,
                kind=kind or "",
                report_interval_s=interval,
            ),
        )
        gateways[row["gateway_id"]] = None

        for level, id_column, name_column, parent_column in _LEVELS:
            place_id = row.get(id_column)
            if place_id is None:
                continue
            known = places[level]
            merged = known.get(place_id) or known.setdefault(place_id, _Merged())
            merged.merge(line, name_column, row.get(name_column), problems)
            if parent_column:
                merged.merge(line, f"{level} {place_id} parent", row.get(parent_column), problems)

        household = households.get(household_id) or households.setdefault(household_id, _Merged())
        for column in ("address", "community_id", "grid_id", "building_id", "unit_id"):
            household.merge(line, column, row.get(column), problems)

        resident = residents.get(resident_id) or residents.setdefault(resident_id, _Merged())
        resident.merge(line, "household_id", household_id, problems)
        resident.merge(line, "resident_name", row.get("resident_name"), problems)
        resident.merge(line, "resident_phone", resident_phone, problems)
        resident.merge(line, "resident_language", row.get("resident_language"), problems)

        if row_contacts:
            listed = [(line, c) for c in row_contacts]
            if resident_id in contacts:
                first = [c for _, c in contacts[resident_id]]
                if first != row_contacts:
                    problems.append(
                        (
                            line,
                            f"contacts of resident {resident_id!r} differ from line"
                            f" {contact_lines[resident_id]}",
                        )
                    )
            else:
                contacts[resident_id] = listed
                contact_lines[resident_id] = line

    if line == 1 and not devices and not problems:
        problems.append((1, "no rows after the header"))
    if problems:
        problems.sort(key=lambda p: p[0])
        raise ImportRejected(name, problems)

    def place_tuple(level: str, parent_level: str | None) -> tuple[Place, ...]:
        return tuple(
            Place(
                id=pid,
                name=m.values.get(f"{level}_name"),
                parent_id=m.values.get(f"{level} {pid} parent") if parent_level else None,
            )
            for pid, m in places[level].items()
        )

    return RegistryFile(
        communities=place_tuple("community", None),
        grids=place_tuple("grid", "community"),
        buildings=place_tuple("building", "grid"),
        units=place_tuple("unit", "building"),
        gateways=tuple(gateways),
        households=tuple(
            Household(
                id=hid,
                address=m.values.get("address"),
                community_id=m.values.get("community_id"),
                grid_id=m.values.get("grid_id"),
                building_id=m.values.get("building_id"),
                unit_id=m.values.get("unit_id"),
            )
            for hid, m in households.items()
        ),
        residents=tuple(
            Resident(
                id=rid,
                household_id=m.values["household_id"],
                name=m.values.get("resident_name"),
                phone=m.values.get("resident_phone"),
                language=m.values.get("resident_language"),
            )
            for rid, m in residents.items()
        ),
        devices=tuple(d for _, d in devices.values()),
        contacts=tuple(c for listed in contacts.values() for _, c in listed),
        residents_with_contacts=frozenset(contacts),
    )
