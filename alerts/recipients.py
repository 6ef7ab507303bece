"""Who can be told about an alert: the resident's contacts by role, with community-level
contacts filling roles the resident has nobody in, and maintenance staff for device faults.

`load_routing()` reads what is needed for many alerts in a few queries (`load_routing_async()`
runs the same queries over an asynchronous connection, for the acknowledgement pages);
`recipients_for()` is the pure rule that picks the people for a role.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any

import psycopg

from lovekey.alerts.chains import RoleRef
from lovekey.vocabulary import (
    MAINTENANCE_KINDS,
    WELFARE_KINDS,
    AlertKind,
    AlertTier,
    ContactRole,
    ResidentStatus,
)


@dataclass(frozen=True, slots=True)
class Recipient:
    key: str  # the person by address: 'tel:+86...' or 'push:<hash>'
    ref: str  # the registry row: 'contact:12' or 'community_contact:3'
    role: str
    position: int
    name: str
    language: str
    phone: str | None
    push_urls: tuple[str, ...]
    quiet_start: time | None
    quiet_end: time | None

    def __repr__(self) -> str:  # phones and push URLs are personal data / secrets
        return f"Recipient({self.ref!r}, role={self.role!r}, position={self.position})"


@dataclass(frozen=True, slots=True)
class AlertRouting:
    """An alert with what routing and messages need to know about it."""

    id: int
    kind: str
    subject: str
    status: str
    since: datetime
    opened_at: datetime
    outcome: str | None
    stood_down_at: datetime | None
    resident_id: str | None
    resident_name: str
    resident_status: str | None
    away_until: datetime | None
    address: str
    community_ids: tuple[str, ...]
    grid_id: str | None
    community_rules: Mapping[str, Any]
    resident_rules: Mapping[str, Any]
    contacts: tuple[Recipient, ...] = ()
    community_contacts: tuple[tuple[str | None, str | None, Recipient], ...] = field(default=())
    tier: str = AlertTier.NEIGHBOUR
    resident_phone: str | None = None
    resident_language: str = "zh"
    # the community's check-in switch and quiet hours (None: the settings decide)
    check_in_enabled: bool | None = None
    check_in_quiet: tuple[time, time] | None = None
    # raised after the door reminder saw the resident go out (`detect.door_out_holds_neighbour`):
    # the check-in stage's silence does not wake the neighbour; the neighbour tier decides
    check_in_holds: bool = False
    # raised as a check-in although the detectors' neighbour tier had fired
    # (`detect.quiet_neighbour_asks_first`): in quiet hours the neighbour is told at once
    check_in_urgent: bool = False

    @property
    def display_name(self) -> str:
        """Who or what the alert is about, for a message."""
        if self.kind in MAINTENANCE_KINDS and self.kind != AlertKind.LEAK:
            return f"{self.subject} {self.resident_name}".strip()
        return self.resident_name or self.subject


def recipients_for(alert: AlertRouting, ref: RoleRef) -> list[Recipient]:
    """The people holding `ref` for this alert, in position order."""
    if ref.role == ContactRole.RESIDENT:
        return _the_resident(alert) if ref.position in (None, 1) else []
    if ref.role == ContactRole.MAINTENANCE:
        found = _community_level(alert, ContactRole.MAINTENANCE)
    elif alert.kind in MAINTENANCE_KINDS:
        return []  # device faults never go to neighbours or family, whatever the chain says
    else:
        found = sorted(
            (c for c in alert.contacts if c.role == ref.role), key=lambda c: c.position
        ) or _community_level(alert, ref.role)
    if ref.position is not None:
        found = [c for c in found if c.position == ref.position]
    return found


def available_roles(alert: AlertRouting) -> frozenset[str]:
    out: set[str] = set()
    for role in ContactRole:
        for c in recipients_for(alert, RoleRef(role)):
            out.add(role)
            out.add(f"{role}:{c.position}")
    return frozenset(out)


def _the_resident(alert: AlertRouting) -> list[Recipient]:
    """The resident on their own phone (the check-in stage): welfare alerts only."""
    if alert.kind not in WELFARE_KINDS or not alert.resident_id or not alert.resident_phone:
        return []
    return [
        Recipient(
            key=recipient_key(alert.resident_phone, ()),
            ref=f"resident:{alert.resident_id}",
            role=ContactRole.RESIDENT,
            position=1,
            name=alert.resident_name,
            language=alert.resident_language,
            phone=alert.resident_phone,
            push_urls=(),
            quiet_start=None,  # the stage has its own quiet hours (the community's)
            quiet_end=None,
        )
    ]


def _community_level(alert: AlertRouting, role: str) -> list[Recipient]:
    # most specific level first: this grid, this community, the whole district
    levels: tuple[list[Recipient], list[Recipient], list[Recipient]] = ([], [], [])
    for community_id, grid_id, contact in alert.community_contacts:
        if contact.role != role:
            continue
        if community_id is None:
            levels[2].append(contact)
        elif community_id in alert.community_ids and grid_id is None:
            levels[1].append(contact)
        elif community_id in alert.community_ids and grid_id == alert.grid_id:
            levels[0].append(contact)
    for level in levels:
        if level:
            return sorted(level, key=lambda c: c.position)
    return []


_ROUTING_ALERTS = """
    SELECT a.id, a.kind, a.subject, a.status, a.since, a.opened_at, a.outcome,
           a.stood_down_at, r.id, coalesce(r.name, ''), r.status, r.away_until,
           coalesce(h.address, ''), h.community_id, h.grid_id,
           coalesce(c.rules, '{}'), coalesce(r.rules, '{}'), a.gateway_id,
           a.tier, r.phone, coalesce(r.language, 'zh'), c.check_in_enabled,
           c.check_in_quiet_start, c.check_in_quiet_end,
           coalesce((a.details ->> 'door_out')::boolean, false),
           coalesce((a.details ->> 'neighbour_tier')::boolean, false)
    FROM alert a
    LEFT JOIN device d ON d.id = a.device_id
    LEFT JOIN resident r ON r.id = coalesce(a.resident_id, d.resident_id)
    LEFT JOIN household h ON h.id = coalesce(r.household_id, d.household_id)
    LEFT JOIN community c ON c.id = h.community_id
    WHERE a.id = ANY(%s)
    ORDER BY a.id
"""
_GATEWAY_COMMUNITIES = """
    SELECT DISTINCT d.gateway_id, h.community_id
    FROM device d JOIN household h ON h.id = d.household_id
    WHERE d.gateway_id = ANY(%s) AND h.community_id IS NOT NULL
"""
_CONTACTS = """
    SELECT resident_id, id, role, position, name, phone, push_url, language,
           quiet_start, quiet_end
    FROM contact WHERE resident_id = ANY(%s)
"""
_COMMUNITY_CONTACTS = """
    SELECT community_id, grid_id, id, role, position, name, phone, push_url, language,
           quiet_start, quiet_end
    FROM community_contact
    WHERE community_id = ANY(%s) OR community_id IS NULL
"""


def load_routing(conn: psycopg.Connection[Any], alert_ids: Sequence[int]) -> list[AlertRouting]:
    """Alerts with their resident, place, rules and candidate contacts (4 queries)."""
    if not alert_ids:
        return []
    rows = conn.execute(_ROUTING_ALERTS, (list(alert_ids),)).fetchall()
    gateways = _offline_gateways(rows)
    served = _by_gateway(conn.execute(_GATEWAY_COMMUNITIES, (gateways,)) if gateways else [])
    resident_ids = _resident_ids(rows)
    contacts = _by_resident(conn.execute(_CONTACTS, (resident_ids,)) if resident_ids else [])
    community_contacts = _community_contacts(
        conn.execute(_COMMUNITY_CONTACTS, (_community_ids(rows, served),))
    )
    return _routing(rows, served, contacts, community_contacts)


async def load_routing_async(
    conn: psycopg.AsyncConnection[Any], alert_ids: Sequence[int]
) -> list[AlertRouting]:
    """`load_routing` over an asynchronous connection (the same 4 queries)."""
    if not alert_ids:
        return []
    rows = await (await conn.execute(_ROUTING_ALERTS, (list(alert_ids),))).fetchall()
    gateways = _offline_gateways(rows)
    served = _by_gateway(
        await (await conn.execute(_GATEWAY_COMMUNITIES, (gateways,))).fetchall() if gateways else []
    )
    resident_ids = _resident_ids(rows)
    contacts = _by_resident(
        await (await conn.execute(_CONTACTS, (resident_ids,))).fetchall() if resident_ids else []
    )
    cur = await conn.execute(_COMMUNITY_CONTACTS, (_community_ids(rows, served),))
    return _routing(rows, served, contacts, _community_contacts(await cur.fetchall()))


def _offline_gateways(rows: Sequence[Sequence[Any]]) -> list[str]:
    return sorted({r[17] for r in rows if r[1] == AlertKind.GATEWAY_OFFLINE and r[17]})


def _by_gateway(pairs: Iterable[Sequence[Any]]) -> dict[str, list[str]]:
    served: dict[str, list[str]] = {}
    for gateway_id, community_id in pairs:
        served.setdefault(gateway_id, []).append(community_id)
    return served


def _resident_ids(rows: Sequence[Sequence[Any]]) -> list[str]:
    return sorted({r[8] for r in rows if r[8]})


def _by_resident(contact_rows: Iterable[Sequence[Any]]) -> dict[str, list[Recipient]]:
    contacts: dict[str, list[Recipient]] = {}
    for row in contact_rows:
        contacts.setdefault(row[0], []).append(_recipient("contact", row[1:]))
    return contacts


def _community_ids(rows: Sequence[Sequence[Any]], served: Mapping[str, list[str]]) -> list[str]:
    return sorted({r[13] for r in rows if r[13]} | {c for cs in served.values() for c in cs})


def _community_contacts(
    contact_rows: Iterable[Sequence[Any]],
) -> list[tuple[str | None, str | None, Recipient]]:
    return [(row[0], row[1], _recipient("community_contact", row[2:])) for row in contact_rows]


def _routing(
    rows: Sequence[Sequence[Any]],
    served: Mapping[str, list[str]],
    contacts: Mapping[str, list[Recipient]],
    community_contacts: Sequence[tuple[str | None, str | None, Recipient]],
) -> list[AlertRouting]:
    out = []
    for r in rows:
        communities = tuple(served.get(r[17], [])) if r[1] == AlertKind.GATEWAY_OFFLINE else ()
        if r[13]:
            communities = (r[13], *communities)
        out.append(
            AlertRouting(
                id=r[0],
                kind=r[1],
                subject=r[2],
                status=r[3],
                since=r[4],
                opened_at=r[5],
                outcome=r[6],
                stood_down_at=r[7],
                resident_id=r[8],
                resident_name=r[9],
                resident_status=r[10],
                away_until=r[11] if r[10] == ResidentStatus.AWAY else None,
                address=r[12],
                community_ids=communities,
                grid_id=r[14],
                community_rules=r[15],
                resident_rules=r[16],
                contacts=tuple(contacts.get(r[8], ())) if r[8] else (),
                community_contacts=tuple(_relevant(community_contacts, communities)),
                tier=r[18],
                resident_phone=r[19] or None,
                resident_language=r[20],
                check_in_enabled=r[21],
                check_in_quiet=(r[22], r[23]) if r[22] is not None and r[23] is not None else None,
                check_in_holds=r[24],
                check_in_urgent=r[25],
            )
        )
    return out


def _relevant(
    community_contacts: Iterable[tuple[str | None, str | None, Recipient]],
    communities: Sequence[str],
) -> Iterable[tuple[str | None, str | None, Recipient]]:
    return (c for c in community_contacts if c[0] is None or c[0] in communities)


def recipient_key(phone: str | None, push_urls: Sequence[str]) -> str:
    """Who a message reaches, by address: the same neighbour listed for five residents is one
    recipient (for bundling, rate limits and de-duplication)."""
    if phone:
        return f"tel:{phone}"
    digest = hashlib.sha256("\n".join(sorted(push_urls)).encode()).hexdigest()[:16]
    return f"push:{digest}"


def _recipient(table: str, row: Sequence[Any]) -> Recipient:
    contact_id, role, position, name, phone, push_url, language, quiet_start, quiet_end = row
    push_urls = tuple((push_url or "").split())
    return Recipient(
        key=recipient_key(phone, push_urls),
        ref=f"{table}:{contact_id}",
        role=role,
        position=position,
        name=name,
        language=language,
        phone=phone or None,
        push_urls=push_urls,
        quiet_start=quiet_start,
        quiet_end=quiet_end,
    )
