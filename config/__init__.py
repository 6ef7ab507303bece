"""Settings: one frozen object built once in the entry point and passed down explicitly."""

from lovekey.config.settings import (
    AlertSettings,
    DetectSettings,
    IngestSettings,
    MqttSettings,
    ProviderSettings,
    RegistrySettings,
    Settings,
    StorageSettings,
    WebSettings,
    load_settings,
)

__all__ = [
    "AlertSettings",
    "DetectSettings",
    "IngestSettings",
    "MqttSettings",
    "ProviderSettings",
    "RegistrySettings",
    "Settings",
    "StorageSettings",
    "WebSettings",
    "load_settings",
]
