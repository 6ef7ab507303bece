"""LoveKey's shared vocabulary: every closed set of domain words, defined once.

This is the one module of global names the rest of the code agrees on (structlog's "global
state in one module that says so"). Each set is a `StrEnum`, so a member *is* the string the
database stores and the MQTT contract carries (`AlertKind.SMOKE == "smoke"`), and the groupings
below are the only place that says which kinds belong together. The database's CHECK
constraints list the same words; `tests/test_vocabulary.py` reads them back from a migrated
database and fails when the two drift apart.
"""

from __future__ import annotations

from enum import StrEnum


class AlertKind(StrEnum):
    """What an alert is about. The detectors raise these; people receive them."""

    # welfare: the resident may need someone
    LOW_USAGE = "low_usage"
    ROUTINE_BREAK = "routine_break"
    RUNNING_TAP = "running_tap"
    # life safety: raised the moment the event arrives
    SMOKE = "smoke"
    GAS = "gas"
    SOS = "sos"
    # maintenance: the device or the plumbing, never a reason to wake a neighbour
    LEAK = "leak"
    METER_SILENT = "meter_silent"
    GATEWAY_OFFLINE = "gateway_offline"


WELFARE_KINDS: tuple[AlertKind, ...] = (
    AlertKind.LOW_USAGE,
    AlertKind.ROUTINE_BREAK,
    AlertKind.RUNNING_TAP,
)
LIFE_SAFETY_KINDS: tuple[AlertKind, ...] = (AlertKind.SMOKE, AlertKind.GAS, AlertKind.SOS)
MAINTENANCE_KINDS: tuple[AlertKind, ...] = (
    AlertKind.LEAK,
    AlertKind.METER_SILENT,
    AlertKind.GATEWAY_OFFLINE,
)
# the alerts that reach a resident's people (neighbour, family, grid worker, staff)
RESIDENT_KINDS: tuple[AlertKind, ...] = WELFARE_KINDS + LIFE_SAFETY_KINDS


class EventType(StrEnum):
    """The `type` of an event on `lovekey/{gateway}/{device}/event`."""

    SMOKE = "smoke"
    GAS = "gas"
    SOS = "sos"
    AWAY = "away"
    HOME = "home"
    TAMPER = "tamper"
    BATTERY_LOW = "battery_low"
    # the door reminder: someone at the door; the direction, where the device tells it
    PASSAGE = "passage"
    LEFT = "left"
    RETURNED = "returned"


# the events that raise an alert at once, each to the alert kind of the same name
LIFE_SAFETY_EVENTS: tuple[EventType, ...] = (EventType.SMOKE, EventType.GAS, EventType.SOS)
# the events that say where the resident is
PRESENCE_EVENTS: tuple[EventType, ...] = (EventType.AWAY, EventType.HOME)
# the events that say the resident was up and about at the door (activity, never an alert)
DOOR_EVENTS: tuple[EventType, ...] = (EventType.PASSAGE, EventType.LEFT, EventType.RETURNED)


class DeviceKind(StrEnum):
    """What a registered device is (`device.kind`)."""

    WATER_METER = "water_meter"
    SMOKE = "smoke"
    GAS = "gas"
    SOS_BUTTON = "sos_button"
    AWAY_BUTTON = "away_button"
    DOOR_SENSOR = "door_sensor"  # the door "going-out reminder"


# The events each kind of device can produce (DESIGN.md: "a water meter cannot press SOS").
# The ingester rejects any other event type from a device as `wrong_kind`, so a meter's
# `away` marks nobody away and a smoke detector's `sos` raises nothing. Every battery-powered
# device reports `battery_low`; meters and the two detectors have a tamper switch; the
# buttons are what they say.
EVENTS_BY_DEVICE_KIND: dict[DeviceKind, frozenset[EventType]] = {
    DeviceKind.WATER_METER: frozenset({EventType.BATTERY_LOW, EventType.TAMPER}),
    DeviceKind.SMOKE: frozenset({EventType.SMOKE, EventType.BATTERY_LOW, EventType.TAMPER}),
    DeviceKind.GAS: frozenset({EventType.GAS, EventType.BATTERY_LOW, EventType.TAMPER}),
    DeviceKind.SOS_BUTTON: frozenset({EventType.SOS, EventType.BATTERY_LOW}),
    DeviceKind.AWAY_BUTTON: frozenset({EventType.AWAY, EventType.HOME, EventType.BATTERY_LOW}),
    DeviceKind.DOOR_SENSOR: frozenset(
        {EventType.PASSAGE, EventType.LEFT, EventType.RETURNED, EventType.BATTERY_LOW, EventType.TAMPER}
    ),
}


class ContactRole(StrEnum):
    """Who a contact is to a resident (`contact.role`, `community_contact.role`)."""

    LOVE_KEY_HOLDER = "love_key_holder"
    FAMILY = "family"
    GRID_WORKER = "grid_worker"
    COMMUNITY_STAFF = "community_staff"
    EMERGENCY = "emergency"
    # community contacts only: who fixes meters and gateways
    MAINTENANCE = "maintenance"
    # chains only: the resident themself, on `resident.phone` (the check-in stage)
    RESIDENT = "resident"


RESIDENT_CONTACT_ROLES: tuple[ContactRole, ...] = (
    ContactRole.LOVE_KEY_HOLDER,
    ContactRole.FAMILY,
    ContactRole.GRID_WORKER,
    ContactRole.COMMUNITY_STAFF,
    ContactRole.EMERGENCY,
)
COMMUNITY_CONTACT_ROLES: tuple[ContactRole, ...] = (
    ContactRole.MAINTENANCE,
    ContactRole.COMMUNITY_STAFF,
    ContactRole.GRID_WORKER,
    ContactRole.EMERGENCY,
)


class AlertTier(StrEnum):
    """Which tier of the welfare rules raised an alert (`alert.tier`)."""

    CHECK_IN = "check_in"  # the sensitive tier: only the resident is asked
    NEIGHBOUR = "neighbour"  # the neighbour tier: the love-key holder and onwards


# `alert.stage` while only the resident has been asked; after that it names a contact role
CHECK_IN_STAGE = "check_in"


class CheckInAnswer(StrEnum):
    """How a check-in ended (`check_in_answer.answer`; NULL while it runs)."""

    FINE = "fine"
    NEED_HELP = "need_help"
    NONE = "none"  # no answer by the end of the stage
    UNREACHABLE = "unreachable"  # no usable phone, or every attempt to reach it failed


class PartOfDay(StrEnum):
    """A quarter of the local day (`check_in_answer.part_of_day`)."""

    NIGHT = "night"  # 00:00-06:00
    MORNING = "morning"  # 06:00-12:00
    AFTERNOON = "afternoon"  # 12:00-18:00
    EVENING = "evening"  # 18:00-24:00

    @classmethod
    def of_hour(cls, hour: int) -> PartOfDay:
        """The part of the day a local hour (0-23) falls in."""
        return (cls.NIGHT, cls.MORNING, cls.AFTERNOON, cls.EVENING)[hour // 6]


class ConsoleRole(StrEnum):
    """What a console user may see: one grid, one community, or everything."""

    GRID_WORKER = "grid_worker"
    COMMUNITY_STAFF = "community_staff"
    ADMIN = "admin"


class AlertStatus(StrEnum):
    """Where an alert is in its life (`alert.status`)."""

    OPEN = "open"
    NOTIFIED = "notified"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


UNRESOLVED_STATUSES: tuple[AlertStatus, ...] = (
    AlertStatus.OPEN,
    AlertStatus.NOTIFIED,
    AlertStatus.ACKNOWLEDGED,
)


class Outcome(StrEnum):
    """What the person who went found, or why the alert ended (`alert.outcome`)."""

    RESIDENT_OK = "resident_ok"
    NEEDED_HELP = "needed_help"
    HOSPITAL = "hospital"
    AWAY = "away"
    FALSE_DATA = "false_data"
    OTHER = "other"
    AUTO_CLEARED = "auto_cleared"


# the outcomes a person picks when resolving an alert; auto_cleared is the detectors' alone
CHOSEN_OUTCOMES: tuple[Outcome, ...] = tuple(o for o in Outcome if o is not Outcome.AUTO_CLEARED)
# outcomes that mean nobody needed help: the alert was a false alarm
FALSE_ALARM_OUTCOMES: tuple[Outcome, ...] = (Outcome.RESIDENT_OK, Outcome.AWAY, Outcome.FALSE_DATA)


class ResidentStatus(StrEnum):
    """`resident.status`: only active residents are watched; away ones get no low-usage alerts."""

    ACTIVE = "active"
    AWAY = "away"
    MOVED = "moved"
    DECEASED = "deceased"


class Language(StrEnum):
    """The languages messages and pages are written in."""

    ZH = "zh"
    EN = "en"


class OutboxPurpose(StrEnum):
    """Why a notification is in the outbox."""

    ALERT = "alert"
    STAND_DOWN = "stand_down"
    DIGEST = "digest"


class OutboxState(StrEnum):
    """Where a notification is in the outbox."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptResult(StrEnum):
    """How one delivery attempt to a provider ended."""

    STARTED = "started"
    OK = "ok"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


__all__ = [
    "CHECK_IN_STAGE",
    "CHOSEN_OUTCOMES",
    "COMMUNITY_CONTACT_ROLES",
    "DOOR_EVENTS",
    "EVENTS_BY_DEVICE_KIND",
    "FALSE_ALARM_OUTCOMES",
    "LIFE_SAFETY_EVENTS",
    "LIFE_SAFETY_KINDS",
    "MAINTENANCE_KINDS",
    "PRESENCE_EVENTS",
    "RESIDENT_CONTACT_ROLES",
    "RESIDENT_KINDS",
    "UNRESOLVED_STATUSES",
    "WELFARE_KINDS",
    "AlertKind",
    "AlertStatus",
    "AlertTier",
    "AttemptResult",
    "CheckInAnswer",
    "ConsoleRole",
    "ContactRole",
    "DeviceKind",
    "EventType",
    "Language",
    "OutboxPurpose",
    "OutboxState",
    "Outcome",
    "PartOfDay",
    "ResidentStatus",
]
