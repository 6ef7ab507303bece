"""The settings model, read by pydantic-settings.

Sources, lowest priority first: defaults below, the TOML file (`--config` or `LOVEKEY_CONFIG`),
`LOVEKEY_*` environment variables, then keyword overrides given to `load_settings()`. Nested
fields use a double underscore: `LOVEKEY_DETECT__LOW_USAGE_MIN_L=8`; a dict or list setting
takes JSON: `LOVEKEY_ALERTS__ROLE_CHANNELS='{"family": ["sms"]}'`.

Each package owns one section; nothing below reads the environment after `load_settings()`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from datetime import datetime, time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import platformdirs
import pydantic_settings
from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

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
    # MQTT 5 Receive Maximum: QoS 1 messages the broker may have in flight to us unacknowledged;
    # acks follow commits, so this is the window that keeps a batch of 5,000 rows flowing
    receive_maximum: int = Field(20_000, ge=1, le=65_535)
    # the largest MQTT packet (topic, header and payload) anyone may send: the broker's
    # `max_packet_size` in the files `lovekey broker-config` writes (a client sending more is
    # disconnected before the broker holds it), and the Maximum Packet Size the ingester asks
    # for (MQTT 5), so a bigger message never reaches a LoveKey process. Larger than
    # ingest.max_payload_bytes, so a payload a little too big still arrives and is kept as
    # `payload_too_large` for an operator to see.
    max_packet_bytes: int = Field(256 * 1024, ge=1024, le=268_435_455)
    # TLS for `mqtts://` URLs: the CA that signed the broker's certificate (unset: the system's
    # CAs), and this client's own certificate and key when the broker asks for one
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = Field(None, repr=False)
    # where `lovekey broker-config` writes the broker's password file, ACL and config snippet,
    # and where `lovekey gateways credentials ...` rewrites them after every change
    broker_files_dir: Path | None = None

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_has_no_wildcards(cls, value: str) -> str:
        if not value or any(c in value for c in "#+") or value.startswith("/"):
            raise ValueError("topic prefix must be non-empty, without wildcards or leading '/'")
        return value.rstrip("/")


# litres a minute a household water pipe can deliver, with margin (a DN20 pipe at 4 bar
# gives about 40); ingest.max_flow_lpm's default, and the detectors' when not told
MAX_FLOW_LPM_DEFAULT = 60.0


class IngestSettings(_Section):
    batch_rows: int = Field(5000, ge=1)
    batch_ms: int = Field(200, ge=1)
    max_payload_bytes: int = Field(64 * 1024, ge=256)
    future_tolerance_s: int = Field(600, ge=0)
    # rejected payloads are kept up to this many bytes
    rejected_keep_bytes: int = Field(8192, ge=64)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    summary_interval_s: int = Field(60, ge=1)
    # the `away` button marks a resident away for this long unless `home` comes first
    away_default_h: float = Field(168.0, gt=0)
    # the in-memory registry is reloaded this often; an unknown id is looked up again
    # (one query per batch for all such ids) at most every `registry_miss_retry_s`
    registry_refresh_s: float = Field(60.0, gt=0)
    registry_miss_retry_s: float = Field(5.0, ge=0)
    # device.last_seen is written when it moved by at least this much (or battery changed)
    last_seen_resolution_s: float = Field(60.0, ge=0)
    # messages received but not yet committed, held in memory at most (the broker keeps the rest)
    max_pending_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024)
    # database retry back-off: doubles from retry_min_s up to retry_max_s, with jitter
    retry_min_s: float = Field(0.2, gt=0)
    retry_max_s: float = Field(15.0, gt=0)
    # plausibility: a household pipe (DN15-DN20) delivers a few dozen litres a minute at
    # most; a meter's total rising faster than this since its previous reading is rejected
    # (implausible_jump), and a stored rise that fast is not counted as use by the detectors
    max_flow_lpm: float = Field(MAX_FLOW_LPM_DEFAULT, gt=0)
    # meters whose newest (ts, total) is remembered to judge the next reading (16 B each),
    # loaded at start from the readings of the last `flow_memory_lookback_h`
    flow_memory_devices: int = Field(5_000_000, ge=0)
    flow_memory_lookback_h: float = Field(48.0, ge=0)


class DetectSettings(_Section):
    """Detector defaults. The rule thresholds marked (overridable) may be overridden per
    community and per resident in their `rules` jsonb: `{"detect": {"low_usage_min_l": 5}}`."""

    bucket_minutes: int = Field(15, ge=1, le=60)
    low_usage_min_l: float = Field(10.0, ge=0)  # (overridable) the field rule: < 10 L ...
    low_usage_window_h: float = Field(12.0, gt=0)  # (overridable) ... in 12 h of known data
    low_usage_clear_l: float = Field(15.0, gt=0)  # (overridable) clears it (>= 1.5 x min)
    # learned: fire only once the dry run is also longer than the resident's longest normal
    # one at that time of day (+ margin, at most the cap); off: the plain field rule
    low_usage_learn: bool = True
    # and only once no bucket has had water use (>= use_min_l) for this long: a morning's 9 L
    # before a day out is not a resident in trouble (0: the plain field rule)
    low_usage_min_dry_h: float = Field(13.0, ge=0)
    # ... or longer, up to the cap, where this quantile of everyone's dry runs starting at
    # that time of day is longer (a day out that runs late); None: off
    low_usage_population_quantile: float | None = Field(None, gt=0.5, le=1.0)
    low_usage_margin_min: float = Field(60.0, ge=0)
    low_usage_cap_h: float = Field(24.0, ge=0)
    # the door reminder: a passage with no water after it is probably the resident going
    # out; the learned rules (not the floor) then count the dry run from this long after it
    door_out_grace_h: float = Field(3.0, ge=0)
    # the floor (issue 17): a resident whose own ordinary days never tripped the plain field
    # rule (< low_usage_min_l in low_usage_window_h of known data) on any learned day of the
    # last `floor_history_days`, with at least `floor_min_days` such days learned, is flagged
    # the moment the field rule would flag them, under the learned rules. It asks the resident
    # first (the check-in tier); the learned rules still wake the neighbour. 12 days: the
    # newest learned day is 1-2 days old, so the days judged lie within the 14 days before.
    # One day is enough: back from ten days away, a resident the field rule never fired on in
    # the days they were home is one it is quiet for (a frugal one trips it on their first day)
    floor_enabled: bool = True
    floor_history_days: int = Field(12, ge=1, le=90)
    floor_min_days: int = Field(1, ge=1)
    sweep_interval_s: int = Field(60, ge=1)
    # usage history held in memory per meter (a ring of buckets); covers every window
    ring_hours: int = Field(56, ge=14, le=24 * 14)
    # a bucket counts as "water used" from this many litres (a hand wash, a kettle)
    use_min_l: float = Field(0.5, gt=0)
    # a delta spanning longer than this keeps its litres but its timing is unknown
    max_spread_h: float = Field(6.0, gt=0)
    # deltas spanning longer than this cannot show continuous flow (running tap, leak)
    flow_span_max_s: int = Field(3900, ge=60)
    running_tap_min_lpm: float = Field(1.8, gt=0)  # (overridable) a tap left open: 2 L/min+
    running_tap_limit_h: float = Field(2.0, gt=0)  # (overridable)
    running_tap_clear_min: float = Field(30.0, gt=0)  # below the rate this long clears it
    leak_limit_h: float = Field(24.0, gt=0)  # (overridable) flow never zero this long
    leak_dry_l: float = Field(0.05, ge=0)  # an hour with at most this is "no flow"
    leak_clear_h: float = Field(1.0, gt=0)
    # routine_break: each resident's own pattern of water use by time of day
    routine_enabled: bool = True  # (overridable)
    routine_day_start_h: float = Field(4.0, ge=0, lt=24)
    routine_history_days: int = Field(28, ge=7, le=90)
    routine_min_days: int = Field(14, ge=3)
    routine_quantile: float = Field(0.95, gt=0.5, le=1.0)
    routine_slack_min: float = Field(30.0, ge=0)  # tolerated shift of the daily pattern
    routine_margin_min: float = Field(60.0, ge=0)  # (overridable) unusual for this long
    routine_min_gap_min: float = Field(120.0, ge=0)  # never alert on a shorter gap
    routine_clear_l: float = Field(5.0, gt=0)
    # only at times of day when the resident's usual dry run is at most this (awake, at home)
    routine_active_max_h: float = Field(3.0, gt=0)
    # and only once the dry run is longer than this quantile of everyone's dry runs that
    # started at the same time of day (errands, days out: learned from the district); None: off
    routine_population_quantile: float | None = Field(0.9995, gt=0.5, le=1.0)
    # the check-in tier of routine_break (issue 14): the resident alone is asked once the dry
    # run is longer than their own pattern and than this quantile of the district's dry runs
    # starting at that time of day (None: their own pattern only); the neighbour waits for
    # routine_population_quantile. Off: one tier, as before
    routine_check_in_enabled: bool = True
    routine_check_in_population_quantile: float | None = Field(0.995, gt=0.5, le=1.0)
    # ... learned separately for this many groups of residents, by how busy their days are
    routine_population_groups: int = Field(1, ge=1, le=16)
    # a day is learned from once complete data for it can have arrived (a daily meter sends
    # yesterday's hourly values after midnight, up to 4 h late)
    routine_summary_lag_h: float = Field(30.0, ge=0)
    # meter_silent / gateway_offline: the device's report_interval_s (or this) plus a grace
    default_report_interval_s: int = Field(900, ge=1)
    # generous: messages held up for an hour or two by a busy network are not a broken meter
    silent_grace_s: int = Field(3 * 3600, ge=0)
    silent_grace_fraction: float = Field(0.5, ge=0)  # of the interval, if more than the grace
    gateway_grace_s: int = Field(900, ge=0)  # after its own `offline` status
    # every meter on a gateway that reports at least this often quiet for its interval plus
    # this grace: the gateway is offline (needs two such meters; one is not evidence)
    gateway_judge_interval_s: int = Field(3600, ge=60)
    gateway_silent_grace_s: int = Field(1800, ge=0)
    # smoke/gas/sos: LISTEN on lovekey_events, and poll device_event this often as a fallback
    events_poll_s: float = Field(1.0, gt=0)
    # rows are fetched by received_at; re-read this far back for transactions committed late
    received_overlap_s: int = Field(300, ge=0)
    # /metrics, /healthz and /readyz of `lovekey detect` (unset: not served)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"


def _default_role_channels() -> dict[str, list[Literal["push", "sms"]]]:
    return {"default": ["push", "sms"], "emergency": ["sms", "push"]}


class AlertSettings(_Section):
    # links in messages point here; the console serves the ack pages
    public_base_url: str = "http://127.0.0.1:8000"
    token_ttl_s: int = Field(3 * 24 * 3600, ge=60)
    # signs acknowledgement links; unset: one is generated once and kept in the database
    ack_secret: str | None = Field(None, repr=False, min_length=16)
    # escalation chains (TOML); unset: the packaged alerts/chains.toml
    chains_file: Path | None = None
    # Apprise URL template of the SMS gateway, with {phone} (E.164), {phone_digits} and
    # {idempotency_key}; e.g. "json://sms.example.com/send?:to={phone}". Unset: no SMS channel.
    sms_url: str | None = Field(None, repr=False)
    # channels tried in order per contact role ("default" for roles not listed): "push" is each
    # of the contact's Apprise push URLs, "sms" the gateway above
    role_channels: dict[str, list[Literal["push", "sms"]]] = Field(default_factory=_default_role_channels)
    # inbound-SMS webhook path token (the gateway posts replies to /alerts/sms/{token}); unset: off
    inbound_sms_token: str | None = Field(None, repr=False, min_length=8)
    # worker: how often to look for due escalations and queued notifications without a NOTIFY
    escalation_interval_s: float = Field(10.0, gt=0)
    # alerts decided per escalation transaction: smaller commits let dispatch start sooner
    escalation_batch: int = Field(100, ge=1, le=10_000)
    poll_interval_s: float = Field(2.0, gt=0)
    # the check-in stage (docs/alerts.md): used where a community does not say otherwise
    # (community.check_in_enabled), and never in these local night hours (a community's own
    # check_in_quiet_start/_end win); start == end: no quiet hours
    check_in_enabled: bool = True
    check_in_quiet_start: time = time(21, 0)
    check_in_quiet_end: time = time(7, 0)
    # json:// targets (webhooks, a JSON SMS gateway) over kept-alive connections, the rest
    # through Apprise; false: everything through Apprise (which honours HTTP(S)_PROXY)
    keepalive_webhooks: bool = True
    # worker processes that dispatch (the first also escalates): a json:// send costs about
    # 0.3 ms of CPU, one through Apprise about 1.6 ms, so a burst needs more than one core
    processes: int = Field(2, ge=1, le=32)
    dispatchers: int = Field(4, ge=1, le=64)  # concurrent claim/send/record loops each
    batch_size: int = Field(50, ge=1, le=1000)  # notifications claimed per loop at once
    send_threads: int = Field(16, ge=1, le=256)  # sends in flight (blocking calls)
    # retries on one channel, doubling from retry_base_s up to retry_max_s, then the next channel
    max_attempts_per_channel: int = Field(3, ge=1)
    retry_base_s: float = Field(10.0, gt=0)
    retry_max_s: float = Field(300.0, gt=0)
    # per recipient: more than this many messages within the window are held and bundled
    rate_limit_messages: int = Field(3, ge=1)
    rate_limit_window_s: int = Field(600, ge=1)
    # the daily all-is-well digest (only to family contacts who opted in) is checked this often
    digest_interval_s: int = Field(300, ge=10)
    # /metrics, /healthz and /readyz of `lovekey alerts worker` (unset: not served)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"


class WebSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # a staff session ends this long after sign-in, or after this long without a request
    session_ttl_s: int = Field(12 * 3600, ge=60)
    session_idle_s: int = Field(3600, ge=60)
    # cookies are Secure (sent over HTTPS only); true only for plain-HTTP use on one machine
    # (`lovekey demo` sets it: it serves on 127.0.0.1 over http)
    insecure_cookies: bool = False
    # sign-in for a name from one client address is refused after this many failures within
    # the window (per name *and* address, so a stranger cannot lock the real user out) ...
    login_max_failures: int = Field(5, ge=1)
    login_lockout_s: int = Field(900, ge=1)
    # ... and a client address that failed this often within the window, whatever the names,
    # is answered 429 before any password is hashed
    login_address_max_failures: int = Field(20, ge=1)
    # argon2 hashes and verifications (each ~tens of ms of a core, 64 MiB) run at once in one
    # console process (default: the cores of the reference machine); a sign-in that waits
    # longer than hash_wait_s for a turn is answered 429 with Retry-After
    max_concurrent_hashes: int = Field(2, ge=1)
    hash_wait_s: float = Field(5.0, gt=0)
    # proxies whose X-Forwarded-For names the client (addresses or networks); none: the peer
    # address is the client's, and X-Forwarded-For is ignored
    trusted_proxies: tuple[IPvAnyNetwork, ...] = ()
    # serve the OpenAPI schema (/api/openapi.json) and Swagger UI (/api/docs) to signed-in staff
    api_docs: bool = False
    # language when neither the staff member nor the browser says (Accept-Language)
    default_language: Literal["zh", "en"] = "zh"
    # device health: a device is silent when last_seen is older than report_interval_s plus
    # this grace; a battery below low_battery_v is low
    silent_grace_s: int = Field(3600, ge=0)
    low_battery_v: float = Field(3.3, gt=0)
    # database connections held by one console process
    pool_max_size: int = Field(8, ge=1, le=100)


class RegistrySettings(_Section):
    # a phone written without a country code is taken to be in this country
    default_country_code: str = "86"

    @field_validator("default_country_code")
    @classmethod
    def _digits(cls, value: str) -> str:
        value = value.lstrip("+")
        if not value.isdigit() or not 1 <= len(value) <= 3:
            raise ValueError("a country calling code is 1 to 3 digits")
        if phonenumbers.region_code_for_country_code(int(value)) == phonenumbers.UNKNOWN_REGION:
            raise ValueError(f"no country has the calling code +{value}")
        return value


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("lovekey", appauthor=False))


class Settings(BaseSettings):
    """Everything LoveKey reads from its configuration; build it with `load_settings()`."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="LOVEKEY_",
        env_nested_delimiter="__",
    )

    # None means: start the embedded PostgreSQL / local broker
    database_url: str | None = Field(None, repr=False)
    mqtt_url: str | None = Field(None, repr=False)
    timezone: str = "Asia/Shanghai"
    data_dir: Path = Field(default_factory=_default_data_dir)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "json": one JSON object per log line (for a log collector); "text": readable lines
    log_format: Literal["text", "json"] = "text"

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """`Settings()` alone: keywords, then the process environment as `load_settings` reads
        it; no .env or secrets directory. The TOML file comes only through `load_settings`."""
        return init_settings, EnvironmentSource(settings_cls, os.environ)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def parse_time(self, text: str) -> datetime:
        """An RFC 3339 time from a command line; one without an offset is read in `timezone`."""
        try:
            value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise SettingsError(f"not an RFC 3339 time: {text!r}") from exc
        return value if value.tzinfo else value.replace(tzinfo=self.zone)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with some values replaced (nested sections merge key by key), validated.

        The environment is not read again: the copy differs from this object only by `overrides`.
        """
        sources = (
            InitSettingsSource(Settings, init_kwargs=overrides),
            InitSettingsSource(Settings, init_kwargs=self.model_dump()),
        )
        return _build(sources, overrides, "override")

    def describe(self) -> dict[str, Any]:
        """A view safe for logs: URLs with passwords masked."""
        data = self.model_dump(mode="json")
        data["database_url"] = redact_url(self.database_url) if self.database_url else "embedded"
        data["mqtt_url"] = redact_url(self.mqtt_url) if self.mqtt_url else "embedded"
        return data


# Environment variables that configure the tooling around LoveKey, not the settings model.
_NOT_SETTINGS = ("LOVEKEY_CONFIG", "LOVEKEY_TEST_")


class EnvironmentSource(EnvSettingsSource):
    """`LOVEKEY_*` variables read from `environ` (tests pass their own mapping).

    pydantic-settings skips a variable that names no field; a top-level typo such as
    `LOVEKEY_DATABSE_URL` is passed on instead, so `extra="forbid"` refuses it as the TOML file's
    unknown keys are refused. (A typo inside a section is already refused by that section.)
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ  # read by _load_env_vars(), which the base __init__ calls
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        prefix = self.env_prefix.lower()
        tooling = tuple(name.lower() for name in _NOT_SETTINGS)
        for key, value in self.env_vars.items():
            if not key.startswith(prefix) or key.startswith(tooling):
                continue
            name = key.removeprefix(prefix).split(self.env_nested_delimiter or "__")[0]
            if name not in self.settings_cls.model_fields:
                data[name] = value
        return data


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
    env = os.environ if environ is None else environ
    path = path or env.get("LOVEKEY_CONFIG")
    sources: list[PydanticBaseSettingsSource] = [
        InitSettingsSource(Settings, init_kwargs=overrides),
        EnvironmentSource(Settings, env),
    ]
    if path:
        if not Path(path).is_file():
            raise SettingsError(f"config file not found: {path}")
        try:
            sources.append(TomlConfigSettingsSource(Settings, toml_file=Path(path)))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: invalid TOML: {exc}") from exc
    return _build(tuple(sources), overrides, f"{path} + environment" if path else "defaults + environment")


def _build(
    sources: tuple[PydanticBaseSettingsSource, ...], overrides: dict[str, Any], origin: str
) -> Settings:
    """Merge `sources` (highest priority first) the way pydantic-settings does, and validate.

    `_build_sources` is pydantic-settings' own way in for sources built at run time (its
    `CliApp` uses it); `settings_customise_sources` only sees the class, not this call's file.
    """
    try:
        return Settings(_build_sources=(sources, overrides))
    except ValidationError as exc:
        raise SettingsError(f"invalid settings ({origin}):\n{_problems(exc)}") from None
    except pydantic_settings.SettingsError as exc:  # a value that should be JSON is not
        raise SettingsError(f"invalid settings ({origin}): {exc} (write a dict or list as JSON)") from None


def _problems(exc: ValidationError) -> str:
    """One line per problem, naming the setting but never its value.

    pydantic's own message repeats each input, and an input may be a URL with a password
    (`LOVEKEY_MQTT_URL=http://user:secret@broker`) or a token.
    """
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)
