"""Registry seeding for benchmarks and tests, through `devices.registry.upsert_rows`.

Every row goes through the registry's own import path, so seeded data obeys the same rules
(and the same defaults) as a registry file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import time
from typing import Any

import psycopg

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


@dataclass(frozen=True, slots=True)
class ContactSpec:
    role: str
    name: str
    phone: str | None = None
    push_url: str | None = None
    language: str = "zh"
    position: int = 1
    digest_opt_in: bool = False
    quiet: tuple[str, str] | None = None  # local ("22:00", "07:00")


def seed_resident(
    conn: psycopg.Connection[Any],
    resident_id: str,
    *,
    name: str = "",
    address: str = "",
    community_id: str | None = "C-1",
    grid_id: str | None = None,
    contacts: Sequence[ContactSpec] = (),
    meter_id: str | None = None,
    gateway_id: str = "GW-1",
) -> None:
    """Create (or update) community, grid, household H-<resident>, the resident, their
    contacts and a water meter reporting every 15 minutes."""
    household_id = f"H-{resident_id}"
    rows: list[RegistryRow] = []
    if community_id:
        rows.append(CommunityRow(community_id, community_id))
        if grid_id:
            rows.append(GridRow(grid_id, community_id))
    # "" is "not given": seeding a resident again keeps their name and address
    rows.append(
        HouseholdRow(household_id, community_id=community_id, grid_id=grid_id, address=address or None)
    )
    rows.append(ResidentRow(resident_id, household_id, name=name or None))
    rows.extend(
        ContactRow(
            resident_id,
            c.role,
            c.name,
            phone=c.phone,
            push_url=c.push_url,
            language=c.language,
            position=c.position,
            digest_opt_in=c.digest_opt_in,
            quiet=(time.fromisoformat(c.quiet[0]), time.fromisoformat(c.quiet[1])) if c.quiet else None,
        )
        for c in contacts
    )
    if meter_id:
        rows.append(GatewayRow(gateway_id))
        rows.append(
            DeviceRow(
                meter_id,
                "water_meter",
                household_id,
                gateway_id,
                resident_id=resident_id,
                report_interval_s=900,
            )
        )
    upsert_rows(conn, rows)


def register_devices(
    conn: psycopg.Connection[Any],
    devices: Iterable[tuple[str, str, str, str | None]],
    *,
    report_interval_s: int | None = None,
) -> dict[str, int]:
    """Register `(device_id, gateway_id, kind, resident_id)` rows; returns device id -> key.

    The gateway, a household named after the resident (or the device) and the resident are
    created when missing.
    """
    devices = list(devices)
    rows: list[RegistryRow] = []
    for device_id, gateway_id, kind, resident_id in devices:
        household_id = resident_id or f"H-{device_id}"
        rows += [GatewayRow(gateway_id), HouseholdRow(household_id)]
        if resident_id is not None:
            rows.append(ResidentRow(resident_id, household_id))
        rows.append(
            DeviceRow(
                device_id,
                kind,
                household_id,
                gateway_id,
                resident_id=resident_id,
                report_interval_s=report_interval_s,
            )
        )
    upsert_rows(conn, rows)
    found = conn.execute("SELECT id, key FROM device WHERE id = ANY(%s)", ([d[0] for d in devices],))
    return {device_id: key for device_id, key in found}
