"""The settings model.

Sources, lowest priority first: defaults below, the TOML file (`--config` or `LOVEKEY_CONFIG`),
then `LOVEKEY_*` environment variables. Nested fields use a double underscore:
`LOVEKEY_DETECT__LOW_USAGE_MIN_L=8`, `LOVEKEY_STORAGE__RETENTION_DAYS=90`.

Each package owns one section; nothing below reads the environment after `load_settings()`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lovekey.errors import SettingsError
from lovekey.redact import redact_url


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StorageSettings(_Section):
    retention_days: int = Field(400, ge=1)
    # size of one native partition or TimescaleDB chunk; retention drops whole ones
    partition_days: int = Field(7, ge=1, le=366)
    # native partitions are created this many intervals ahead of now
    partitions_ahead: int = Field(2, ge=1)
    timescaledb: Literal["auto", "on", "off"] = "auto"
    maintenance_interval_s: int = Field(3600, ge=10)


class MqttSettings(_Section):
    topic_prefix: str = "lovekey"
    client_id: str = "lovekey-ingest"
    keepalive_s: int = Field(30, ge=5)
    # how long the broker keeps our session (and queues QoS 1 messages) while we are away
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_has_no_wildcards(cls, value: str) -> str:
        if not value or any(c in value for c in "#+") or value.startswith("/"):
            raise ValueError("topic prefix must be non-empty, without wildcards or leading '/'")
        return value.rstrip("/")


class IngestSettings(_Section):
    batch_rows: int = Field(5000, ge=1)
    batch_ms: int = Field(200, ge=1)
    max_payload_bytes: int = Field(64 * 1024, ge=256)
    future_tolerance_s: int = Field(600, ge=0)
    # rejected payloads are kept up to this many bytes
    rejected_keep_bytes: int = Field(8192, ge=64)
    metrics_port: int | None = None
    summary_interval_s: int = Field(60, ge=1)


class DetectSettings(_Section):
    bucket_minutes: int = Field(15, ge=1, le=60)
    low_usage_min_l: float = Field(10.0, ge=0)
    low_usage_window_h: float = Field(12.0, gt=0)
    sweep_interval_s: int = Field(60, ge=1)


class AlertSettings(_Section):
    # links in messages point here; the console serves the ack pages
    public_base_url: str = "http://127.0.0.1:8000"
    token_ttl_s: int = Field(3 * 24 * 3600, ge=60)


class WebSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)


class RegistrySettings(_Section):
    # a phone written without a country code is taken to be in this country
    default_country_code: str = "86"

    @field_validator("default_country_code")
    @classmethod
    def _digits(cls, value: str) -> str:
        value = value.lstrip("+")
        if not value.isdigit() or not 1 <= len(value) <= 3:
            raise ValueError("a country calling code is 1 to 3 digits")
        return value


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("lovekey", appauthor=False))


class Settings(_Section):

    # None means: start the embedded PostgreSQL / local broker
    database_url: str | None = Field(None, repr=False)
    mqtt_url: str | None = Field(None, repr=False)
    timezone: str = "Asia/Shanghai"
    data_dir: Path = Field(default_factory=_default_data_dir)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    storage: StorageSettings = StorageSettings()
    mqtt: MqttSettings = MqttSettings()
    ingest: IngestSettings = IngestSettings()
    detect: DetectSettings = DetectSettings()
    alerts: AlertSettings = AlertSettings()
    web: WebSettings = WebSettings()
    registry: RegistrySettings = RegistrySettings()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("database_url must be a postgresql:// URL")
        return value or None

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in ("mqtt", "mqtts"):
            raise ValueError("mqtt_url must look like mqtt://user:pass@host:port")
        return value or None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def describe(self) -> dict[str, Any]:
        """A view safe for logs: URLs with passwords masked."""
        data = self.model_dump(mode="json")
        data["database_url"] = redact_url(self.database_url) if self.database_url else "embedded"
        data["mqtt_url"] = redact_url(self.mqtt_url) if self.mqtt_url else "embedded"
        return data


# Environment variables that configure the tooling around LoveKey, not the settings model.
_NOT_SETTINGS = ("LOVEKEY_CONFIG", "LOVEKEY_TEST_")


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings once: defaults, TOML file, `LOVEKEY_*` environment, then overrides.

    `path` falls back to `LOVEKEY_CONFIG`. `environ` defaults to the process environment;
    tests pass their own. `overrides` (for tests and the demo) win over everything.
    """
    import os

    env = os.environ if environ is None else environ
    path = path or env.get("LOVEKEY_CONFIG")
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise SettingsError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: invalid TOML: {exc}") from exc
    data = _deep_merge(data, environment_overrides(env))
    data = _deep_merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        source = f"{path} + environment" if path else "defaults + environment"
        raise SettingsError(f"invalid settings ({source}):\n{exc}") from exc


def environment_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`LOVEKEY_DETECT__LOW_USAGE_MIN_L=8` -> `{"detect": {"low_usage_min_l": "8"}}`."""
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith("LOVEKEY_") or key.startswith(_NOT_SETTINGS):
            continue
        path = key.removeprefix("LOVEKEY_").lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
