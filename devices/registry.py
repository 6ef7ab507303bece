"""Applying a registry file, or typed rows, to the database (reading it back: `registry_view`).

An import runs in one transaction under an advisory lock: rows are staged with COPY, then
each table is updated where something changed and inserted where missing. Blank cells
("not given") never overwrite what the registry already knows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time
from typing import Any

import psycopg
from psycopg import sql

from lovekey.devices.model import RegistryFile
from lovekey.errors import RegistryError

_IMPORT_LOCK = 0x4C4B5245474953  # "LKREGIS"


@dataclass(slots=True)
class ImportReport:
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(self.created.values()) or any(self.updated.values())

    def summary(self) -> str:
        created = sum(self.created.values())
        updated = sum(self.updated.values())
        detail = ", ".join(
            f"{table} +{self.created.get(table, 0)}/~{self.updated.get(table, 0)}"
            for table in dict.fromkeys([*self.created, *self.updated])
            if self.created.get(table) or self.updated.get(table)
        )
        return f"{created} created, {updated} updated" + (f" ({detail})" if detail else "")


# Per table: staging columns (name, type), key columns, and the columns an update may change.
# A staged NULL means "not given": the existing value is kept (COALESCE).
_TABLES: dict[str, dict[str, Any]] = {
    "community": {
        "columns": [("id", "text"), ("name", "text")],
        "defaults": {"name": "''"},
    },
    "grid": {
        "columns": [("id", "text"), ("community_id", "text"), ("name", "text")],
        "defaults": {"name": "''"},
    },
    "building": {
        "columns": [("id", "text"), ("grid_id", "text"), ("name", "text")],
        "defaults": {"name": "''"},
    },
    "unit": {
        "columns": [("id", "text"), ("building_id", "text"), ("name", "text")],
        "defaults": {"name": "''"},
    },
    "gateway": {"columns": [("id", "text")], "defaults": {}},
    "household": {
        "columns": [
            ("id", "text"),
            ("address", "text"),
            ("community_id", "text"),
            ("grid_id", "text"),
            ("building_id", "text"),
            ("unit_id", "text"),
        ],
        "defaults": {"address": "''"},
    },
    "resident": {
        "columns": [
            ("id", "text"),
            ("household_id", "text"),
            ("name", "text"),
            ("phone", "text"),
            ("language", "text"),
        ],
        "defaults": {"name": "''", "language": "'zh'"},
    },
    "device": {
        "columns": [
            ("id", "text"),
            ("kind", "text"),
            ("household_id", "text"),
            ("resident_id", "text"),
            ("gateway_id", "text"),
            ("report_interval_s", "integer"),
            ("external_id", "text"),
        ],
        "defaults": {},
    },
}


def apply_registry(conn: psycopg.Connection, registry: RegistryFile) -> ImportReport:
    """Write a validated registry in one transaction; return what was created and updated."""
    rows: dict[str, Iterable[Sequence[Any]]] = {
        "community": [(p.id, p.name) for p in registry.communities],
        "grid": [(p.id, p.parent_id, p.name) for p in registry.grids],
        "building": [(p.id, p.parent_id, p.name) for p in registry.buildings],
        "unit": [(p.id, p.parent_id, p.name) for p in registry.units],
        "gateway": [(g,) for g in registry.gateways],
        "household": [
            (h.id, h.address, h.community_id, h.grid_id, h.building_id, h.unit_id)
            for h in registry.households
        ],
        "resident": [(r.id, r.household_id, r.name, r.phone, r.language) for r in registry.residents],
        "device": [
            (d.id, d.kind, d.household_id, d.resident_id, d.gateway_id, d.report_interval_s, d.external_id)
            for d in registry.devices
        ],
    }
    # a file says nothing of digest opt-in or quiet hours: None keeps what is stored
    contacts = [
        (c.resident_id, c.role, c.position, c.name, c.phone, c.push_url, c.language, None, None, None)
        for c in registry.contacts
    ]
    return _write(conn, rows, contacts, registry.residents_with_contacts)


# --- typed rows, for code that registers residents without a file (tests, benchmarks, demo)


@dataclass(frozen=True, slots=True)
class CommunityRow:
    id: str
    name: str | None = None  # None: not given, keep what is stored


@dataclass(frozen=True, slots=True)
class GridRow:
    id: str
    community_id: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayRow:
    id: str


@dataclass(frozen=True, slots=True)
class HouseholdRow:
    id: str
    community_id: str | None = None
    grid_id: str | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class ResidentRow:
    id: str
    household_id: str
    name: str | None = None
    phone: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: str
    kind: str
    household_id: str
    gateway_id: str
    resident_id: str | None = None  # a device may serve a household, not one resident
    report_interval_s: int | None = None
    external_id: str | None = None  # its id at its source (docs/sources/); None: keep


@dataclass(frozen=True, slots=True)
class ContactRow:
    resident_id: str
    role: str
    name: str
    phone: str | None = None  # a push-only contact has no phone
    push_url: str | None = None
    language: str = "zh"
    position: int = 1
    digest_opt_in: bool | None = None  # None: not given
    quiet: tuple[time, time] | None = None  # local (start, end); None: not given


RegistryRow = CommunityRow | GridRow | GatewayRow | HouseholdRow | ResidentRow | DeviceRow | ContactRow


def upsert_rows(conn: psycopg.Connection, rows: Iterable[RegistryRow]) -> ImportReport:
    """Create or update typed registry rows in one transaction, exactly as an import would.

    The rows go through the import's staging and rules: None keeps what is stored, and a
    resident given any contact here ends with exactly the contacts given here. A row given
    twice (the same gateway for every device, say) is written once, as last given.
    """
    # keyed like the tables, so repeats collapse as the CSV parser collapses them
    tables: dict[str, dict[str, Sequence[Any]]] = {table: {} for table in _TABLES}
    contacts: dict[tuple[str, str, int], Sequence[Any]] = {}
    for row in rows:
        match row:
            case CommunityRow():
                tables["community"][row.id] = (row.id, row.name)
            case GridRow():
                tables["grid"][row.id] = (row.id, row.community_id, row.name)
            case GatewayRow():
                tables["gateway"][row.id] = (row.id,)
            case HouseholdRow():
                tables["household"][row.id] = (row.id, row.address, row.community_id, row.grid_id, None, None)
            case ResidentRow():
                tables["resident"][row.id] = (row.id, row.household_id, row.name, row.phone, row.language)
            case DeviceRow():
                tables["device"][row.id] = (
                    row.id,
                    row.kind,
                    row.household_id,
                    row.resident_id,
                    row.gateway_id,
                    row.report_interval_s,
                    row.external_id,
                )
            case ContactRow():
                quiet_start, quiet_end = row.quiet or (None, None)
                contacts[row.resident_id, row.role, row.position] = (
                    row.resident_id,
                    row.role,
                    row.position,
                    row.name,
                    row.phone,
                    row.push_url,
                    row.language,
                    row.digest_opt_in,
                    quiet_start,
                    quiet_end,
                )
    return _write(
        conn,
        {table: list(by_id.values()) for table, by_id in tables.items()},
        list(contacts.values()),
        frozenset(resident_id for resident_id, _, _ in contacts),
    )


def _write(
    conn: psycopg.Connection,
    rows: Mapping[str, Iterable[Sequence[Any]]],
    contacts: Sequence[Sequence[Any]],
    residents_with_contacts: frozenset[str],
) -> ImportReport:
    report = ImportReport()
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_IMPORT_LOCK,))
            for table, spec in _TABLES.items():
                created, updated = _upsert(conn, table, spec, rows[table])
                report.created[table] = created
                report.updated[table] = updated
            created, updated = _replace_contacts(conn, contacts, residents_with_contacts)
            report.created["contact"] = created
            report.updated["contact"] = updated
    except psycopg.Error as exc:
        raise RegistryError(f"registry import failed, nothing changed: {exc}".strip()) from exc
    return report


def _upsert(
    conn: psycopg.Connection, table: str, spec: dict[str, Any], rows: Iterable[Sequence[Any]]
) -> tuple[int, int]:
    columns: list[tuple[str, str]] = spec["columns"]
    defaults: dict[str, str] = spec["defaults"]
    stage = sql.Identifier(f"stage_{table}")
    target = sql.Identifier(table)
    names = [c for c, _ in columns]
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
            stage,
            sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns),
        )
    )
    with conn.cursor().copy(
        sql.SQL("COPY {} ({}) FROM STDIN").format(stage, sql.SQL(", ").join(map(sql.Identifier, names)))
    ) as copy:
        for row in rows:
            copy.write_row(row)

    value_columns = names[1:]
    updated = 0
    if value_columns:
        kept = [sql.SQL("COALESCE(s.{c}, t.{c})").format(c=sql.Identifier(c)) for c in value_columns]
        current = [sql.SQL("t.{}").format(sql.Identifier(c)) for c in value_columns]
        updated = conn.execute(
            sql.SQL(
                "UPDATE {target} AS t SET ({cols}) = ROW({kept}), updated_at = now()"
                " FROM {stage} AS s WHERE t.id = s.id AND ({kept}) IS DISTINCT FROM ({current})"
            ).format(
                target=target,
                stage=stage,
                cols=sql.SQL(", ").join(map(sql.Identifier, value_columns)),
                kept=sql.SQL(", ").join(kept),
                current=sql.SQL(", ").join(current),
            )
        ).rowcount
    inserted_values = [
        sql.SQL("COALESCE(s.{}, {})").format(sql.Identifier(c), sql.SQL(defaults[c]))
        if c in defaults
        else sql.SQL("s.{}").format(sql.Identifier(c))
        for c in names
    ]
    created = conn.execute(
        sql.SQL(
            "INSERT INTO {target} ({cols}) SELECT {values} FROM {stage} AS s"
            " WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE t.id = s.id)"
        ).format(
            target=target,
            stage=stage,
            cols=sql.SQL(", ").join(map(sql.Identifier, names)),
            values=sql.SQL(", ").join(inserted_values),
        )
    ).rowcount
    # dropped now, not only at commit: the caller's transaction may write the registry again
    conn.execute(sql.SQL("DROP TABLE {}").format(stage))
    return created, updated


def _replace_contacts(
    conn: psycopg.Connection,
    contacts: Sequence[Sequence[Any]],
    residents_with_contacts: frozenset[str],
) -> tuple[int, int]:
    """Contacts of residents whose rows carried contacts become exactly the ones given.

    `contacts` are (resident_id, role, position, name, phone, push_url, language,
    digest_opt_in, quiet_start, quiet_end); the last three None keep what is stored.
    """
    if not residents_with_contacts:
        return 0, 0
    conn.execute(
        "CREATE TEMP TABLE stage_contact (resident_id text, role text, position integer,"
        " name text, phone text, push_url text, language text, digest_opt_in boolean,"
        " quiet_start time, quiet_end time) ON COMMIT DROP"
    )
    with conn.cursor().copy(
        "COPY stage_contact (resident_id, role, position, name, phone, push_url, language,"
        " digest_opt_in, quiet_start, quiet_end) FROM STDIN"
    ) as copy:
        for contact in contacts:
            copy.write_row(contact)
    conn.execute("CREATE TEMP TABLE stage_contact_owner (resident_id text PRIMARY KEY) ON COMMIT DROP")
    with conn.cursor().copy("COPY stage_contact_owner (resident_id) FROM STDIN") as copy:
        for resident_id in residents_with_contacts:
            copy.write_row((resident_id,))
    deleted = conn.execute(
        """
        DELETE FROM contact AS c USING stage_contact_owner AS o
        WHERE c.resident_id = o.resident_id
          AND NOT EXISTS (SELECT 1 FROM stage_contact AS s
                          WHERE s.resident_id = c.resident_id AND s.role = c.role
                            AND s.position = c.position)
        """
    ).rowcount
    updated = conn.execute(
        """
        UPDATE contact AS c SET name = s.name, phone = s.phone, push_url = s.push_url,
               language = s.language,
               digest_opt_in = COALESCE(s.digest_opt_in, c.digest_opt_in),
               quiet_start = COALESCE(s.quiet_start, c.quiet_start),
               quiet_end = COALESCE(s.quiet_end, c.quiet_end),
               updated_at = now()
        FROM stage_contact AS s
        WHERE c.resident_id = s.resident_id AND c.role = s.role AND c.position = s.position
          AND (c.name, c.phone, c.push_url, c.language, c.digest_opt_in, c.quiet_start, c.quiet_end)
              IS DISTINCT FROM (s.name, s.phone, s.push_url, s.language,
                                COALESCE(s.digest_opt_in, c.digest_opt_in),
                                COALESCE(s.quiet_start, c.quiet_start),
                                COALESCE(s.quiet_end, c.quiet_end))
        """
    ).rowcount
    created = conn.execute(
        """
        INSERT INTO contact (resident_id, role, position, name, phone, push_url, language,
                             digest_opt_in, quiet_start, quiet_end)
        SELECT s.resident_id, s.role, s.position, s.name, s.phone, s.push_url, s.language,
               COALESCE(s.digest_opt_in, false), s.quiet_start, s.quiet_end
        FROM stage_contact AS s
        WHERE NOT EXISTS (SELECT 1 FROM contact AS c WHERE c.resident_id = s.resident_id
                          AND c.role = s.role AND c.position = s.position)
        """
    ).rowcount
    conn.execute("DROP TABLE stage_contact, stage_contact_owner")
    return created, updated + deleted
