"""The registry read back: the full CSV export and the device list.

Both only read. `export_registry` writes the form `apply_registry` takes, so an export
imported again changes nothing; `list_devices` answers `lovekey devices list` with each
device's resident and health.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import psycopg
from psycopg import sql

from lovekey.devices.csv_safety import escape_cell
from lovekey.devices.model import REGISTRY_COLUMNS

_EXPORT_QUERY = """
SELECT d.id, d.gateway_id, d.resident_id, d.kind, d.report_interval_s, d.external_id,
       r.name, r.phone, r.language,
       h.id, h.address,
       h.community_id, c.name, h.grid_id, g.name, h.building_id, b.name, h.unit_id, u.name,
       COALESCE((SELECT json_agg(json_build_array(k.role, k.name, k.phone, k.push_url, k.language)
                                 ORDER BY k.role, k.position)
                 FROM contact AS k WHERE k.resident_id = r.id), '[]'::json)
FROM device AS d
JOIN resident AS r ON r.id = d.resident_id
JOIN household AS h ON h.id = d.household_id
LEFT JOIN community AS c ON c.id = h.community_id
LEFT JOIN grid AS g ON g.id = h.grid_id
LEFT JOIN building AS b ON b.id = h.building_id
LEFT JOIN unit AS u ON u.id = h.unit_id
ORDER BY d.resident_id, d.id
"""


def export_registry(conn: psycopg.Connection) -> str:
    """The whole registry in the full CSV form; importing it back changes nothing."""
    rows = conn.execute(_EXPORT_QUERY).fetchall()
    most_contacts = max((len(row[-1]) for row in rows), default=0)
    header = list(REGISTRY_COLUMNS)
    for n in range(1, most_contacts + 1):
        header += [f"contact{n}_{f}" for f in ("role", "name", "phone", "push", "language")]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells = ["" if v is None else str(v) for v in row[:-1]]
        for role, name, phone, push, language in row[-1]:
            cells += [role, name, phone or "", push or "", language]
        cells += [""] * (len(header) - len(cells))
        writer.writerow([escape_cell(cell) for cell in cells])  # no formulas for spreadsheets
    return out.getvalue()


_LIST_QUERY = sql.SQL(
    """
    SELECT d.id AS device_id, d.kind, d.gateway_id, d.resident_id, r.name AS resident_name,
           d.household_id, h.community_id, h.grid_id, r.status AS resident_status,
           d.report_interval_s, d.last_seen, d.battery_v, gw.online AS gateway_online
    FROM device AS d
    LEFT JOIN resident AS r ON r.id = d.resident_id
    JOIN household AS h ON h.id = d.household_id
    JOIN gateway AS gw ON gw.id = d.gateway_id
    WHERE ({kind}::text IS NULL OR d.kind = {kind})
      AND ({gateway}::text IS NULL OR d.gateway_id = {gateway})
      AND ({resident}::text IS NULL OR d.resident_id = {resident})
      AND ({community}::text IS NULL OR h.community_id = {community})
    ORDER BY d.resident_id, d.id
    LIMIT {limit}
    """
)


def list_devices(
    conn: psycopg.Connection,
    *,
    kind: str | None = None,
    gateway_id: str | None = None,
    resident_id: str | None = None,
    community_id: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Devices with their resident and health, as JSON-ready dicts."""
    from psycopg.rows import dict_row

    query = _LIST_QUERY.format(
        kind=sql.Literal(kind),
        gateway=sql.Literal(gateway_id),
        resident=sql.Literal(resident_id),
        community=sql.Literal(community_id),
        limit=sql.Literal(limit) if limit is not None else sql.SQL("ALL"),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query).fetchall()
    for row in rows:
        if row["last_seen"] is not None:
            row["last_seen"] = row["last_seen"].isoformat()
    return rows
