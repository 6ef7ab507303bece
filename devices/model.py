"""The registry's vocabulary and the records an import carries."""

from __future__ import annotations

from dataclasses import dataclass

from lovekey.vocabulary import RESIDENT_CONTACT_ROLES, DeviceKind, Language

# What a registry CSV cell may hold, as the plain strings of lovekey.vocabulary (so messages and
# argparse choices print `water_meter`, not `DeviceKind.WATER_METER`).
DEVICE_KINDS: tuple[str, ...] = tuple(kind.value for kind in DeviceKind)
CONTACT_ROLES: tuple[str, ...] = tuple(role.value for role in RESIDENT_CONTACT_ROLES)
LANGUAGES: tuple[str, ...] = tuple(language.value for language in Language)


@dataclass(frozen=True, slots=True)
class Place:
    """A community, grid, building or unit: id, name (None = not given) and parent id."""

    id: str
    name: str | None
    parent_id: str | None


@dataclass(frozen=True, slots=True)
class Household:
    id: str
    address: str | None
    community_id: str | None
    grid_id: str | None
    building_id: str | None
    unit_id: str | None


@dataclass(frozen=True, slots=True)
class Resident:
    id: str
    household_id: str
    name: str | None
    phone: str | None
    language: str | None


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    gateway_id: str
    resident_id: str
    household_id: str
    kind: str
    report_interval_s: int | None
    # the device's id at its source (DevEUI, IMEI, CJ/T 188 address, ...): docs/sources/
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class Contact:
    resident_id: str
    role: str
    position: int
    name: str
    phone: str
    push_url: str | None
    language: str


@dataclass(frozen=True, slots=True)
class RegistryFile:
    """A parsed, validated registry file: everything in it is consistent."""

    communities: tuple[Place, ...]
    grids: tuple[Place, ...]
    buildings: tuple[Place, ...]
    units: tuple[Place, ...]
    gateways: tuple[str, ...]
    households: tuple[Household, ...]
    residents: tuple[Resident, ...]
    devices: tuple[Device, ...]
    # residents whose rows carried contacts: their contact list is replaced by these
    contacts: tuple[Contact, ...]
    residents_with_contacts: frozenset[str]


# The columns of a full-form registry file before its contacts, in the order an export writes
# them (docs/registry.md): one row per device, the resident and household repeated.
REGISTRY_COLUMNS = (
    "device_id",
    "gateway_id",
    "resident_id",
    "kind",
    "report_interval_s",
    "external_id",
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
