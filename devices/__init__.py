"""The device registry: who lives where, which devices they have, whom to call."""

from lovekey.devices.csvfile import parse_registry
from lovekey.devices.model import CONTACT_ROLES, DEVICE_KINDS, RegistryFile
from lovekey.devices.phone import normalize_phone
from lovekey.devices.registry import ImportReport, apply_registry
from lovekey.devices.registry_view import export_registry, list_devices

__all__ = [
    "CONTACT_ROLES",
    "DEVICE_KINDS",
    "ImportReport",
    "RegistryFile",
    "apply_registry",
    "export_registry",
    "list_devices",
    "normalize_phone",
    "parse_registry",
]
