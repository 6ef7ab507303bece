"""Escalation chains as data: parsed once from TOML, overridable per community and resident.

`ChainBook.load(path)` reads the file (the packaged `alerts/chains.toml` by default) and
checks it; `book.chain_for(kind, community_rules, resident_rules)` lays the overrides found
under `rules["escalation"][kind]` over the file's table for that kind. Everything here is pure
apart from reading the file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from lovekey.errors import SettingsError
from lovekey.vocabulary import MAINTENANCE_KINDS, WELFARE_KINDS, ContactRole

# a chain may name any contact role; maintenance kinds (device faults) may name only maintenance
_ROLES: tuple[ContactRole, ...] = tuple(ContactRole)
_KEYS = {"steps", "repeat", "urgent", "suppress_when_away", "delay_min", "check_in", "check_in_slow"}
# the channels a check-in step may try the resident's phone on, in the order given
CHECK_IN_CHANNELS = ("voice", "sms")


class ChainError(SettingsError):
    """An escalation chain (file or rules override) is invalid."""


@dataclass(frozen=True, slots=True)
class RoleRef:
    """A role, optionally narrowed to the contact at one position ("love_key_holder:1")."""

    role: ContactRole
    position: int | None = None

    @classmethod
    def parse(cls, text: str) -> RoleRef:
        role, _, position = text.partition(":")
        if role not in _ROLES:
            raise ChainError(f"unknown role {role!r} (one of {', '.join(sorted(_ROLES))})")
        if not position:
            return cls(ContactRole(role))
        if not position.isdigit() or int(position) < 1:
            raise ChainError(f"{text!r}: the position after ':' must be 1 or more")
        return cls(ContactRole(role), int(position))

    def __str__(self) -> str:
        return self.role.value if self.position is None else f"{self.role}:{self.position}"


@dataclass(frozen=True, slots=True)
class ChainStep:
    """Who a chain notifies at one step, and how long it waits for an answer before the next."""

    roles: tuple[RoleRef, ...]
    wait_s: int
    # the channels to try, in order, where the step says (check-in steps); empty: the role's
    # own order from the `alerts.role_channels` setting
    channels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Chain:
    kind: str
    steps: tuple[ChainStep, ...]
    repeat_roles: tuple[RoleRef, ...]
    repeat_every_s: int | None  # None: stop after the last step
    urgent: bool
    suppress_when_away: bool
    delay_s: int
    # the check-in stage: the resident asked on their own phone before `steps`, for alerts the
    # detectors raise on the sensitive tier (`alert.tier = 'check_in'`); welfare kinds only
    check_in: tuple[ChainStep, ...] = ()
    # more asks after `check_in` for a resident who answers late (the escalation pass appends
    # them for a resident who answered "fine" after the first ask; `alerts.check_in_slow_after`)
    check_in_slow: tuple[ChainStep, ...] = ()


class ChainBook:
    """The chains of one file, ready to hand out per alert."""

    def __init__(self, tables: Mapping[str, Mapping[str, Any]], source: str) -> None:
        if "default" not in tables:
            raise ChainError(f"{source}: [chains.default] is required")
        self._tables = {kind: dict(table) for kind, table in tables.items()}
        self._source = source
        self._cache: dict[str, Chain] = {}
        for kind in self._tables:  # fail at load, not at the first alert of that kind
            self._cache[kind] = self._build(kind, ())

    @classmethod
    def load(cls, path: str | Path | None = None) -> ChainBook:
        try:
            if path is None:
                source = "alerts/chains.toml"
                text = resources.files("lovekey.alerts").joinpath("chains.toml").read_text("utf-8")
            else:
                source = str(path)
                text = Path(path).read_text("utf-8")
            data = tomllib.loads(text)
        except FileNotFoundError as exc:
            raise ChainError(f"chains file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ChainError(f"{source}: invalid TOML: {exc}") from exc
        tables = data.get("chains")
        if not isinstance(tables, dict):
            raise ChainError(f"{source}: expected [chains.<kind>] tables")
        return cls(tables, source)

    def chain_for(
        self,
        kind: str,
        community_rules: Mapping[str, Any] | None = None,
        resident_rules: Mapping[str, Any] | None = None,
    ) -> Chain:
        layers = tuple(
            layer for layer in (_override(community_rules, kind), _override(resident_rules, kind)) if layer
        )
        if not layers:
            cached = self._cache.get(kind)
            if cached is None:
                cached = self._cache[kind] = self._build(kind, ())
            return cached
        return self._build(kind, layers)

    def _build(self, kind: str, layers: tuple[Mapping[str, Any], ...]) -> Chain:
        merged: dict[str, Any] = dict(self._tables["default"])
        for layer in (self._tables.get(kind, {}), *layers):
            unknown = set(layer) - _KEYS
            if unknown:
                raise ChainError(f"chain {kind!r}: unknown key(s) {', '.join(sorted(unknown))}")
            merged.update(layer)
        return _chain(kind, merged)


def _override(rules: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    if not rules:
        return None
    escalation = rules.get("escalation")
    if not isinstance(escalation, Mapping):
        return None
    layer = escalation.get(kind)
    if layer is None:
        return None
    if not isinstance(layer, Mapping):
        raise ChainError(f"rules.escalation.{kind} must be a table")
    return layer


def _minutes(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ChainError(f"{what} must be a number of minutes >= 0")
    return round(value * 60)


def _roles(value: Any, what: str) -> tuple[RoleRef, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ChainError(f"{what}: 'notify' must be a non-empty list of roles")
    return tuple(RoleRef.parse(v) for v in value)


def _chain(kind: str, table: Mapping[str, Any]) -> Chain:
    raw_steps = table.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ChainError(f"chain {kind!r}: 'steps' must be a non-empty list")
    steps = []
    for i, raw in enumerate(raw_steps, 1):
        if not isinstance(raw, Mapping) or set(raw) - {"notify", "wait_min"}:
            raise ChainError(f"chain {kind!r} step {i}: expected {{notify = [...], wait_min = N}}")
        steps.append(
            ChainStep(
                _roles(raw.get("notify"), f"chain {kind!r} step {i}"),
                _minutes(raw.get("wait_min", 0), f"chain {kind!r} step {i} wait_min"),
            )
        )
    check_in = _check_in_steps(kind, "check_in", table.get("check_in", []))
    check_in_slow = _check_in_steps(kind, "check_in_slow", table.get("check_in_slow", []))
    repeat = table.get("repeat")
    repeat_roles: tuple[RoleRef, ...] = ()
    repeat_every_s: int | None = None
    if repeat is not None:
        if not isinstance(repeat, Mapping) or set(repeat) - {"notify", "every_min"}:
            raise ChainError(f"chain {kind!r}: repeat = {{notify = [...], every_min = N}}")
        repeat_roles = _roles(repeat.get("notify"), f"chain {kind!r} repeat")
        repeat_every_s = _minutes(repeat.get("every_min"), f"chain {kind!r} repeat every_min")
        if repeat_every_s < 60:
            raise ChainError(f"chain {kind!r}: repeat every_min must be at least 1")
    for flag in ("urgent", "suppress_when_away"):
        if not isinstance(table.get(flag, False), bool):
            raise ChainError(f"chain {kind!r}: {flag} must be true or false")
    chain = Chain(
        kind=kind,
        steps=tuple(steps),
        repeat_roles=repeat_roles,
        repeat_every_s=repeat_every_s,
        urgent=bool(table.get("urgent", False)),
        suppress_when_away=bool(table.get("suppress_when_away", False)),
        delay_s=_minutes(table.get("delay_min", 0), f"chain {kind!r} delay_min"),
        # life-safety alerts and device faults never wait for the resident to answer
        check_in=check_in if kind in WELFARE_KINDS else (),
        check_in_slow=check_in_slow if kind in WELFARE_KINDS else (),
    )
    if any(r.role == ContactRole.RESIDENT for s in chain.steps for r in s.roles) or any(
        r.role == ContactRole.RESIDENT for r in repeat_roles
    ):
        raise ChainError(
            f"chain {kind!r}: the resident is asked in 'check_in' and 'check_in_slow' only, not in steps"
        )
    if kind in MAINTENANCE_KINDS:
        named = {r.role for s in chain.steps for r in s.roles} | {r.role for r in repeat_roles}
        if named - {ContactRole.MAINTENANCE}:
            raise ChainError(
                f"chain {kind!r} is a device fault: it may notify 'maintenance' only,"
                f" not {', '.join(sorted(named - {ContactRole.MAINTENANCE}))}"
            )
    return chain


def _check_in_steps(kind: str, key: str, raw_steps: Any) -> tuple[ChainStep, ...]:
    """`check_in = [{ notify = ["resident"], wait_min = N, channels = ["voice", "sms"] }, ...]`;
    `check_in_slow` (the asks a late answerer gets after them) has the same shape."""
    if not isinstance(raw_steps, list):
        raise ChainError(f"chain {kind!r}: {key!r} must be a list of steps")
    steps = []
    for i, raw in enumerate(raw_steps, 1):
        what = f"chain {kind!r} {key} step {i}"
        if not isinstance(raw, Mapping) or set(raw) - {"notify", "wait_min", "channels"}:
            raise ChainError(f'{what}: expected {{notify = ["resident"], wait_min = N, channels = [...]}}')
        roles = _roles(raw.get("notify"), what)
        if roles != (RoleRef(ContactRole.RESIDENT),):
            raise ChainError(f'{what}: a check-in notifies ["resident"] only')
        channels = raw.get("channels", list(CHECK_IN_CHANNELS))
        if (
            not isinstance(channels, list)
            or not channels
            or any(c not in CHECK_IN_CHANNELS for c in channels)
            or len(set(channels)) != len(channels)
        ):
            raise ChainError(f"{what}: 'channels' must list some of {', '.join(CHECK_IN_CHANNELS)}")
        wait_s = _minutes(raw.get("wait_min", 0), f"{what} wait_min")
        if wait_s <= 0:
            raise ChainError(f"{what}: wait_min must be more than 0 (the resident needs time to answer)")
        steps.append(ChainStep(roles, wait_s, tuple(channels)))
    return tuple(steps)
