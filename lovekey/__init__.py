"""LoveKey: from the water meter on the wall to the neighbour's phone."""

from lovekey.errors import (
    DeliveryError,
    LoveKeyError,
    PayloadError,
    RegistryError,
    SettingsError,
    StorageError,
)

__all__ = [
    "DeliveryError",
    "LoveKeyError",
    "PayloadError",
    "RegistryError",
    "SettingsError",
    "StorageError",
    "__version__",
]

__version__ = "0.1.0"
