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
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import platformdirs
import pydantic_settings
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
    model_validator,
)
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
    # readings older than this many days are packed into compact history (docs/storage.md);
    # the detectors' learning reads through storage.history, so it may reach further back
    hot_days: int = Field(35, ge=1)
    # meters per packing transaction: about 0.2 s and 200,000 readings at 15 minutes
    pack_batch_meters: int = Field(2000, ge=1)


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


class ReceiveSettings(_Section):
    """`lovekey receive`: the HTTP server the carrier platforms push to (`[[sources]]` of the
    HTTP kinds say which paths it serves; docs/sources/)."""

    host: str = "127.0.0.1"
    port: int = Field(8090, ge=0, le=65535)
    # requests in progress at once; past this the server answers 503 and the platform retries
    max_connections: int = Field(4096, ge=1)
    # a larger request body is answered 413 and kept (cut) in rejected_input
    max_body_bytes: int = Field(64 * 1024, ge=256)
    # rows written in one transaction at most; the requests waiting meanwhile share the next
    commit_rows: int = Field(5000, ge=1)
    # database writers, each with its own connection. One is the fastest here: two writers
    # halve each commit and contend for the same cores (measured with `lovekey bench receive
    # --committers`); more may pay where the database has cores of its own to spare (each
    # then judges plausibility against the readings it wrote itself and those loaded at start)
    committers: int = Field(1, ge=1, le=8)
    # refused pushes (forged, unreadable) kept in rejected_input per source and minute at most:
    # anyone can post to the URL; past this they are answered and counted, not stored
    refused_kept_per_minute: int = Field(600, ge=0)
    # in-flight requests are given this long to finish when the receiver stops
    shutdown_grace_s: float = Field(3.0, gt=0)


# detect.routine_check_in_schedule_h's default: hours of dry run by the local hour it began
CHECK_IN_SCHEDULE_H: tuple[float, ...] = (
    *(0.0, 12.0, 7.0, 7.5, 6.5, 0.0),  # 00-05
    *(0.0, 0.0, 0.0, 0.0, 4.5, 4.5),  # 06-11
    *(5.0, 5.0, 4.5, 4.0, 4.0, 4.0),  # 12-17
    *(4.0, 16.0, 0.0, 11.5, 12.0, 0.0),  # 18-23
)
# detect.routine_check_in_schedule_home_h's default: the same, and after 6 h for dry runs
# begun 05:00-09:59, which a working door reminder that saw nobody leave says are not days out
CHECK_IN_SCHEDULE_HOME_H: tuple[float, ...] = (
    *(0.0, 12.0, 7.0, 7.5, 6.5, 6.0),  # 00-05
    *(6.0, 6.0, 6.0, 6.0, 4.5, 4.5),  # 06-11
    *CHECK_IN_SCHEDULE_H[12:],
)


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
    # no learned limit is longer (nobody's routine goes a whole day without water), and past
    # it no passage at the door excuses the dry run any more (0: no cap)
    low_usage_cap_h: float = Field(24.0, ge=0)
    # the door reminder: a passage with no water after it is probably the resident going
    # out; routine_break's tiers and low_usage's neighbour tier then count the dry run from
    # this long after it
    door_out_grace_h: float = Field(3.0, ge=0)
    # ... but an outing lasts hours: this long after such a passage, with still no water,
    # the dry run counts from the passage itself (the resident was last seen then)
    door_out_max_h: float = Field(12.0, gt=0)
    # the door puts off low_usage's check-in tier too (True). False (the default): low_usage,
    # the net under the learned tiers, asks the resident on water alone, as the floor does;
    # only its neighbour tier waits for the door. A passage is weak evidence (a visitor, a
    # draught): on evaluate's seed 23 a draught seven hours into a fall put the dry run off
    # until after the resident was found (docs/detection.md, "The net judges water alone")
    door_delays_low_usage: bool = False
    # a passage this long before the end of the bucket that held the last use still counts
    # as after it: the bucket (15 min) lumps a use made on the way out into a bucket that
    # closes after the passage (a meter with hourly values can lump a whole hour: a district
    # of those would want 60)
    door_out_slack_min: float = Field(15.0, ge=0, le=180)
    # where a household has a door reminder and no passage was seen since the last water use
    # (the resident is home and silent), routine_break's check-in tier asks once the dry run
    # is longer (judged as that tier judges: on the resident's own pattern too only with
    # routine_check_in_own) than this (lower) quantile of the district's dry runs
    # starting then: a resident at home answers (None, the default: as everyone,
    # routine_check_in_population_quantile). 0.98 is 1.4-1.7 h faster for them and costs
    # about 0.03 false neighbour alerts a month (days out whose leaving the door missed):
    # docs/detection.md, "The door household's check-in tier"
    door_home_check_in_quantile: float | None = Field(None, gt=0.5, le=1.0)
    # ... or, with the check-in schedule, a schedule of its own for them (24 values by the
    # local hour the dry run began, as routine_check_in_schedule_h; [] (empty): none). A dry
    # morning the door saw nobody leave in is not a day out, so the default asks about dry
    # runs begun 05:00-09:59 after 6 h (the main schedule never does); an hour where this is
    # 0 or later than the main schedule keeps the main schedule's ask. On tuning seeds (20x)
    # door households reached the neighbour in 5.53 / 5.85 / 5.74 h instead of 5.58 / 5.90 /
    # 6.80 h, for 0.012-0.020 more false neighbour alerts a month; after 5 h instead, 0.09 on
    # the default mix and 3.0 check-ins (docs/detection.md, "The door's home schedule")
    routine_check_in_schedule_home_h: list[Annotated[float, Field(ge=0, le=72)]] = Field(
        default_factory=lambda: list(CHECK_IN_SCHEDULE_HOME_H), max_length=24
    )
    # a reminder that has sensed nobody for this long (a dead battery, taken down, a resident
    # who never goes out) says nothing about who is home: its household is asked as a
    # water-only one until it senses someone again
    door_alive_h: float = Field(72.0, gt=0, le=24 * 14)
    # a check-in raised after a passage with no water since (probably out) is marked
    # `door_out`: unanswered, it does not wake the neighbour; the neighbour tier decides.
    # Trades a resident who came back unseen and fell (they wait for the neighbour tier). On
    # by default since the check-in schedule: a passage out moves the dry run's start into
    # the hours the schedule asks soonest, and unanswered those check-ins woke neighbours
    # 0.16 times a household-month (0.08 held; docs/detection.md, "The check-in schedule")
    door_out_holds_neighbour: bool = True
    # ... and is raised at all (True). False (the default): the check-in tier does not ask a
    # resident the door saw go out with no water since; the neighbour tier alone decides, as
    # it did when such a check-in went unanswered (door_out_holds_neighbour). Those check-ins
    # were 0.3 a household-month of door households' 2.5-2.8 and changed no other figure on
    # tuning seeds 2 (20x) and 3 (docs/detection.md, "The door's home schedule")
    door_out_check_in: bool = False
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
    # a bucket counts as "water used" from this many litres (a glass of water, a hand wash):
    # at 0.5 L a frugal resident's every draw was "no use", a fall went unseen (seed 33).
    # Above a known leak, use needs more (`detectors.ring.LEAK_USE_MIN_L`)
    use_min_l: float = Field(0.2, gt=0)
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
    # starting at that time of day (None: their own pattern only), where no schedule is set
    # (routine_check_in_schedule_h below); the neighbour waits for
    # routine_population_quantile. Off: one tier, as before
    routine_check_in_enabled: bool = True
    routine_check_in_population_quantile: float | None = Field(0.995, gt=0.5, le=1.0)
    # ... and only where the dry run is also over the resident's own pattern (True). False
    # (the default): any resident with a learned pattern is asked on the district's level
    # (or the schedule below) alone, also at hours their own pattern is off (asleep, or
    # usually out). With the quantile at 0.995, off reached water-only households 1.2 h
    # sooner (8.8 h against 10.0 h, seed 2 with 20x no-use) for about 0.02 more false
    # neighbour alerts a month; with the schedule, on, the two hold at different hours (the
    # own pattern in the busy mornings, the schedule in the afternoons) and everything waited
    # 9.6 h, as before the schedule (docs/detection.md, "The check-in schedule")
    routine_check_in_own: bool = False
    # the check-in tier by the local hour a dry run began, in place of the district's
    # quantile (routine_check_in_population_quantile): 24 values, from 00:00, each the hours
    # of dry run after which the resident is asked (0: never for dry runs begun that hour).
    # The default was chosen by `python -m lovekey.evaluation.world_bound` on a simulated
    # district's ordinary days with placed incidents (seed 3, one extra ask for late
    # answerers; docs/detection.md, "The check-in schedule" and "Late answerers"): ask after
    # 4-5 h of no water for dry runs begun 10:00-18:59, after 6.5-7.5 h for those begun
    # 02:00-04:59, and not in the morning (05:00-09:59, the days out) or most of the
    # evening. It is the default since visits that find a resident well teach the tier
    # (check_in_found_fine_nth; "Found well"); before, it took the default mix over 0.1
    # false neighbour alerts. [] (empty): the district's quantile, as before
    routine_check_in_schedule_h: list[Annotated[float, Field(ge=0, le=72)]] = Field(
        default_factory=lambda: list(CHECK_IN_SCHEDULE_H), max_length=24
    )

    # a second schedule for residents who carry a mobile when they go out
    # (`routine_check_in_mobile` true for them, usually in `resident.rules` as
    # {"detect": {"routine_check_in_mobile": true}}): they answer from outside, so a check-in
    # during a day out costs them a call, not their neighbour's sleep, and they can be asked
    # sooner. [] (empty, the default): the schedule above for everyone. Asking them also for
    # dry runs begun 07:00-09:59 (5.5, 5.5, 5.0 h) reached water-only households 0.03-0.36 h
    # sooner on untuned seeds (20x) for 0.6 more check-ins a month, and took the default mix
    # over 0.1 false neighbour alerts (docs/detection.md, "Who carries a mobile"): not a default
    routine_check_in_schedule_mobile_h: list[Annotated[float, Field(ge=0, le=72)]] = Field(
        default_factory=list, max_length=24
    )
    # the resident carries a mobile they answer when out (a registry fact, overridable per
    # community and resident); chooses routine_check_in_schedule_mobile_h where it is set
    routine_check_in_mobile: bool = False

    @field_validator(
        "routine_check_in_schedule_h",
        "routine_check_in_schedule_mobile_h",
        "routine_check_in_schedule_home_h",
    )
    @classmethod
    def _a_whole_day(cls, hours: list[float]) -> list[float]:
        if hours and len(hours) != 24:
            raise ValueError(f"24 values, one per hour from 00:00, or none; got {len(hours)}")
        return hours

    # a resident's check-in tier waits, in each part of the day, for a dry run longer than the
    # n-th longest dry stretch they answered "fine" at there in the last routine_history_days
    # (1: the longest; 4, the default: a stretch they have shown four times, a habit, not a
    # one-off). With the schedule (seed 2, 20x) a neighbour was reached in 5.4 h with 2.7
    # check-ins a month when nothing was learned, 7.0 h with 1.9 from the longest, 5.5 h with
    # 2.3 from the second longest; with the late answerers' extra ask (tuning seeds 2/5/6,
    # 20x) 6.0/6.3/6.0 h from the second, 6.0/5.8/5.9 h from the fourth (docs/detection.md)
    check_in_fine_nth: int = Field(4, ge=1, le=10)
    # a check-in left unanswered whose alert a person then resolved as a false alarm they saw
    # for themselves (outcome resident_ok or away: the neighbour found the resident well, or
    # out) counts as a "fine" for that part of the day, at the dry stretch up to when they
    # found them, at most `check_in_found_fine_within_h` after the resident was asked (a
    # visit recorded days later says nothing about that evening): the n-th longest such
    # stretch of the last routine_history_days holds the check-in tier back there as an
    # answer would (0: not learned). Residents who leave the phone at home are most of the
    # repeated false neighbour alerts (docs/detection.md, "Found well")
    check_in_found_fine_nth: int = Field(1, ge=0, le=10)
    check_in_found_fine_within_h: float = Field(1.5, ge=0, le=24)
    # low_usage's and routine_break's neighbour tier, when it fires before the resident was
    # asked, asks them first (a check-in: the neighbour 30 min later if nobody answers; at
    # once in the stage's quiet hours or for a resident who cannot be asked) instead of
    # waking the neighbour at once. Measured on the tuning seeds 2, 3, 5 (docs/detection.md,
    # "Water-only timing"): false neighbour alerts 0.068-0.086 -> 0.041-0.052 a
    # household-month for water-only households (0.046-0.047 -> 0.021-0.030 with the door;
    # 0.062-0.067 with 5 % unanswered), the median to the neighbour within 0.2 h of before.
    # False: the neighbour at once, as before
    quiet_neighbour_asks_first: bool = True
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


def _default_role_channels() -> dict[str, list[Literal["push", "sms", "voice"]]]:
    return {"default": ["push", "sms"], "emergency": ["sms", "push"]}


ProviderKind = Literal["aliyun_sms", "tencent_sms", "aliyun_voice", "tencent_voice", "apprise"]


class ProviderSettings(_Section):
    """One SMS or voice provider under `[alerts.providers.<name>]` (see docs/alerts.md).

    Templates: `templates."<message>.<language>"` is the template id the provider approved,
    for the messages `alert`, `urgent`, `help`, `bundle`, `stand_down`, `digest`, `check_in`
    (SMS) and `call`, `check_in_call` (voice; `call_bye` is the closing words an Alibaba IVR
    call speaks after a key)."""

    kind: ProviderKind
    # Alibaba Cloud AccessKey ID / Tencent Cloud SecretId, and the secret that goes with it
    access_key_id: str | None = Field(None, repr=False)
    access_key_secret: str | None = Field(None, repr=False)
    # the API's URL; unset: the provider's public endpoint (tests and on-premise proxies set it)
    endpoint: str | None = None
    region: str | None = None  # Tencent Cloud region (default ap-guangzhou)
    sign_name: str | None = None  # the approved SMS signature, without 【】
    app_id: str | None = None  # Tencent SmsSdkAppId / VoiceSdkAppid
    caller_number: str | None = None  # Alibaba voice: the purchased number shown to the callee
    templates: dict[str, str] = Field(default_factory=dict)
    play_times: int = Field(2, ge=1, le=3)  # a voice message is read this many times
    key_timeout_ms: int = Field(10_000, ge=1000, le=60_000)  # Alibaba IVR: wait for a key
    # the receipts/replies callback URL carries this secret (neither provider signs callbacks)
    callback_secret: str | None = Field(None, repr=False, min_length=16)
    # messages to one number through this provider within an hour (the provider's own
    # per-number limit; the next channel is tried rather than being throttled)
    per_number_per_hour: int | None = Field(None, ge=1)
    # Alibaba Cloud SMS: numbers sent together in one SendBatchSms (unset: 100, the API's
    # limit; 1: one SendSms a message, which Alibaba advises for time-sensitive messages)
    batch_max: int | None = Field(None, ge=1, le=100)
    timeout_s: float = Field(5.0, gt=0)
    # the longest template variable the provider accepts on this account (unset: the
    # provider's default, Alibaba 35 and Tencent 12 characters); longer values are shortened
    variable_max_chars: int | None = Field(None, ge=1, le=500)
    # kind = "apprise": the Apprise URL template, with {phone} like alerts.sms_url
    url: str | None = Field(None, repr=False)


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
    # "voice" is a call through `voice_providers`; a key "role/class" (class: welfare,
    # life_safety, maintenance) overrides a role's order for one class of alert
    role_channels: dict[str, list[Literal["push", "sms", "voice"]]] = Field(
        default_factory=_default_role_channels
    )
    # SMS and voice providers by name (`[alerts.providers.<name>]`), and the order each channel
    # tries them in: the first, and the next when it is down or refuses (fallback A -> B)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    sms_providers: list[str] = Field(default_factory=list)
    voice_providers: list[str] = Field(default_factory=list)
    # how a resident is named in a template message (a neighbour's SMS is personal data):
    # "full_name", "surname_title" (王奶奶 / Mrs Wang) or "household" (the household number)
    resident_naming: Literal["full_name", "surname_title", "household"] = "full_name"
    # the generic inbound-SMS webhook also requires an HMAC-SHA256 signature made with this
    # key (headers X-LoveKey-Timestamp and X-LoveKey-Signature; see docs/alerts.md)
    inbound_sms_hmac_key: str | None = Field(None, repr=False, min_length=16)
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
    # a resident who answered "fine" this many times within the last check_in_slow_days days,
    # each only after the first ask's wait (hard of hearing, often away from the phone), is
    # asked the chain's `check_in_slow` steps too before the neighbour is woken; 0: never
    check_in_slow_after: int = Field(1, ge=0)
    check_in_slow_days: int = Field(28, ge=1)
    # json:// targets (webhooks, a JSON SMS gateway) over kept-alive connections, the rest
    # through Apprise; false: everything through Apprise (which honours HTTP(S)_PROXY)
    keepalive_webhooks: bool = True
    # worker processes, each escalating and dispatching (digests and the purge: the first
    # only): a burst's escalation and sends need more than one core (a json:// send costs
    # about 0.1 ms of CPU over the kept-alive client, one through Apprise about 1.6 ms)
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
    # resolved alerts, their history and notifications are purged this long after they were
    # resolved (alerts/records.py says why three years); None keeps them for ever
    records_keep_days: int | None = Field(3 * 365, ge=30)
    # /metrics, /healthz and /readyz of `lovekey alerts worker` (unset: not served)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    @model_validator(mode="after")
    def _providers_exist(self) -> AlertSettings:
        for channel, names, kinds in (
            ("sms", self.sms_providers, ("aliyun_sms", "tencent_sms", "apprise")),
            ("voice", self.voice_providers, ("aliyun_voice", "tencent_voice")),
        ):
            for name in names:
                provider = self.providers.get(name)
                if provider is None:
                    raise ValueError(f"{channel}_providers names {name!r}: no [alerts.providers.{name}]")
                if provider.kind not in kinds:
                    raise ValueError(f"{channel}_providers: {name!r} is a {provider.kind} provider")
        return self


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


# The kinds of source LoveKey reads (docs/sources/): its own MQTT contract, the MQTT tools and
# network servers that decode meters and alarms for it, concentrators forwarding CJ/T 188
# frames, and the carrier platforms that push over HTTP (`lovekey receive`).
MQTT_SOURCE_KINDS = ("native", "chirpstack", "tts", "wmbusmeters", "zigbee2mqtt", "cjt188")
HTTP_SOURCE_KINDS = ("ctwing", "onenet", "huawei")
SourceKind = Literal[
    "native", "chirpstack", "tts", "wmbusmeters", "zigbee2mqtt", "cjt188", "ctwing", "onenet", "huawei"
]
# a source name goes into rejected_input.source and client ids: one topic level, no spaces
_SOURCE_NAME = r"^[a-z0-9][a-z0-9_-]{0,39}$"


class SourceSettings(_Section):
    """One `[[sources]]` entry: where messages of one kind come from and how they map to devices.

    MQTT kinds read `topic` (a filter; default per kind, see docs/sources/) on the LoveKey
    broker, or on `broker_url`, the source's own broker, through `lovekey bridge`. HTTP kinds
    are served by `lovekey receive` at `path`, checked with `token`. Devices of the source are
    registered to the gateway `gateway_id` (default: the source's name) with their id at the
    source in the registry's `external_id` column.
    """

    name: str = Field(pattern=_SOURCE_NAME)
    kind: SourceKind
    topic: str | None = None  # MQTT kinds: the subscription filter
    path: str | None = None  # HTTP kinds: the URL path the platform posts to
    gateway_id: str | None = None  # registry gateway of its devices; None: the source's name
    # the source's own broker (a bridge subscribes there and republishes to LoveKey's); None:
    # the source publishes to LoveKey's broker
    broker_url: str | None = Field(None, repr=False)
    # QoS of the subscription at the source (The Things Stack serves QoS 0 only)
    qos: int = Field(1, ge=0, le=1)
    # the platform's shared secret (OneNET token, CTWing/Huawei callback token)
    token: str | None = Field(None, repr=False)
    # OneNET's EncodingAESKey (43 characters) when its push uses the encrypted mode
    aes_key: str | None = Field(None, repr=False, min_length=43, max_length=43)
    # clocks that say no zone (wmbusmeters, CJ/T 188 meter time) are read in this zone;
    # None: the top-level `timezone`
    timezone: str | None = None
    # raw payloads (LoRaWAN frm_payload, NB-IoT APPdata): payload decoder per meter model,
    # "default" for any model not listed; e.g. {default = "cjt188"}
    decoders: dict[str, str] = Field(default_factory=dict)
    # kind-specific knobs, documented on each source's page
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _source_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("broker_url")
    @classmethod
    def _source_broker(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in ("mqtt", "mqtts"):
            raise ValueError("broker_url must look like mqtt://user:pass@host:port")
        return value or None

    @field_validator("topic")
    @classmethod
    def _topic_filter(cls, value: str | None) -> str | None:
        if value is not None:
            levels = value.split("/")
            if (
                not value
                or value.startswith("$")
                or "#" in levels[:-1]
                or any(("+" in level and level != "+") or ("#" in level and level != "#") for level in levels)
            ):
                raise ValueError(f"{value!r} is not an MQTT topic filter")
        return value

    @property
    def gateway(self) -> str:
        """The registry gateway the source's devices are registered to."""
        return self.gateway_id or self.name

    @property
    def is_http(self) -> bool:
        return self.kind in HTTP_SOURCE_KINDS

    def zone(self, default: str) -> ZoneInfo:
        return ZoneInfo(self.timezone or default)


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
    receive: ReceiveSettings = ReceiveSettings()
    detect: DetectSettings = DetectSettings()
    alerts: AlertSettings = AlertSettings()
    web: WebSettings = WebSettings()
    registry: RegistrySettings = RegistrySettings()
    # `[[sources]]`: the device sources read (docs/sources/); none: the native contract alone
    sources: tuple[SourceSettings, ...] = ()

    @field_validator("sources")
    @classmethod
    def _sources_apart(cls, value: tuple[SourceSettings, ...]) -> tuple[SourceSettings, ...]:
        names = [source.name for source in value]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must differ: {', '.join(sorted(names))}")
        for source in value:
            if source.is_http and (source.topic or source.broker_url):
                raise ValueError(f"source {source.name}: an HTTP source has a path, not a topic or broker")
            if not source.is_http and source.path:
                raise ValueError(f"source {source.name}: an MQTT source has a topic, not a path")
        for source in value:
            if source.kind == "native" and (source.topic or source.broker_url):
                raise ValueError(f"source {source.name}: native topics follow mqtt.topic_prefix")
        if sum(source.kind == "native" for source in value) > 1:
            raise ValueError("at most one native source (the lovekey/... contract)")
        return value

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
        for source in data["sources"]:
            if source["token"]:
                source["token"] = "***"  # noqa: S105  # the mask, not a secret
            if source.get("aes_key"):
                source["aes_key"] = "***"
            if source["broker_url"]:
                source["broker_url"] = redact_url(source["broker_url"])
        alerts = data["alerts"]
        if alerts.get("inbound_sms_hmac_key"):
            alerts["inbound_sms_hmac_key"] = "***"
        for provider in alerts.get("providers", {}).values():
            for secret in ("access_key_secret", "callback_secret", "url"):
                if provider.get(secret):
                    provider[secret] = "***"
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
