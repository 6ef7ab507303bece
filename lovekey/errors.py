"""One exception tree for the whole project, a branch per layer.

Every error carries its facts as attributes, so callers never parse messages.
"""

from __future__ import annotations


class LoveKeyError(Exception):
    """Root of every error LoveKey raises on purpose."""


class SettingsError(LoveKeyError):
    """The configuration file or an environment override is invalid."""


class PayloadError(LoveKeyError):
    """An MQTT payload (or one row inside a batch) cannot be accepted.

    `reason` is a short stable code stored with the rejected input; `detail` is for people.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class RegistryError(LoveKeyError):
    """The device registry refused a change."""


class ImportRejected(RegistryError):
    """A registry file was rejected as a whole; nothing was changed.

    `problems` holds one `(line_number, reason)` per bad line, in file order.
    """

    def __init__(self, path: str, problems: list[tuple[int, str]]) -> None:
        lines = "\n".join(f"  line {n}: {why}" for n, why in problems)
        super().__init__(f"{path}: {len(problems)} problem(s), nothing imported\n{lines}")
        self.path = path
        self.problems = problems


class StorageError(LoveKeyError):
    """The database could not be reached or refused an operation."""


class MigrationError(StorageError):
    """A schema migration failed; `version` names the file."""

    def __init__(self, version: str, detail: str) -> None:
        super().__init__(f"migration {version} failed: {detail}")
        self.version = version
        self.detail = detail


class DeliveryError(LoveKeyError):
    """A notification could not be delivered through a channel."""

    def __init__(self, channel: str, detail: str, *, retryable: bool = True) -> None:
        super().__init__(f"{channel}: {detail}")
        self.channel = channel
        self.detail = detail
        self.retryable = retryable


class AlertError(LoveKeyError):
    """The alert lifecycle refused an operation."""


class AlertStateError(AlertError):
    """An alert cannot make that transition (unknown, already resolved, bad outcome)."""

    def __init__(self, alert_id: int, detail: str) -> None:
        super().__init__(f"alert {alert_id}: {detail}")
        self.alert_id = alert_id
        self.detail = detail


class AckTokenError(AlertError):
    """An acknowledgement token is forged, expired, or for another alert; `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"acknowledgement link refused: {reason}")
        self.reason = reason


class SimulatorError(LoveKeyError):
    """The simulator cannot run as asked."""


class ScenarioError(SimulatorError):
    """A scenario file is invalid; `path` names it (None for the built-in defaults)."""

    def __init__(self, path: str | None, detail: str) -> None:
        super().__init__(f"scenario {path or '(defaults)'}: {detail}")
        self.path = path
        self.detail = detail


class PublishError(SimulatorError):
    """The broker refused or dropped the simulator's connection."""


class ConsoleError(LoveKeyError):
    """The staff console refused an operation (a bad staff account, scope or absence)."""
