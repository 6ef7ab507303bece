"""What every SMS and voice provider shares: the message it is asked to send, the answer it
gives, and how its error codes turn into what the outbox does next.

A provider never sends free text: it sends an approved template (`template_key`, e.g.
"alert.zh") with named parameters. Each provider maps its own error codes to an `Action`:

- RETRY: the same provider later (throttling, a timeout, a 5xx): `retry_after_s` says when;
- NEXT_CHANNEL: this provider cannot send this message now (it is down, or refuses it), the
  next channel or provider may; `operator` marks a configuration the operator must fix (an
  unapproved template or signature, a missing template id), shown on the alert;
- GIVE_UP: the number itself is wrong (invalid, blacklisted): no channel to that number is
  tried again, the notification fails and the alert moves on to the next person.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from lovekey.errors import DeliveryError


class Action(enum.StrEnum):
    RETRY = "retry"
    NEXT_CHANNEL = "next_channel"
    GIVE_UP = "give_up"


class ProviderError(DeliveryError):
    """A provider refused or could not be reached; `code` is the provider's own error code."""

    def __init__(
        self,
        channel: str,
        detail: str,
        *,
        action: Action,
        code: str = "",
        operator: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(channel, detail, retryable=action is Action.RETRY)
        self.action = action
        self.code = code
        self.operator = operator
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class TemplateMessage:
    """One templated message to one number: what a provider is asked to send."""

    channel: str  # "sms@aliyun", "voice@tencent_voice"
    phone: str  # E.164
    template_key: str  # "<message>.<language>", looked up in the provider's templates table
    params: Mapping[str, str]  # named parameters, in the template's order
    reference: str  # our id for it, echoed back in receipts (OutId / SessionContext)
    text: str = ""  # the message as LoveKey would word it (logs never show it; the demo does)

    def __repr__(self) -> str:
        return f"TemplateMessage({self.channel!r}, {self.template_key!r}, ref={self.reference!r})"


@dataclass(frozen=True, slots=True)
class Accepted:
    """The provider took the message: its id for it (BizId, SerialNo, CallId)."""

    provider: str
    message_id: str
    raw: Mapping[str, object] = field(default_factory=dict)


def clip(value: str, max_chars: int) -> str:
    """A template parameter within a provider's per-variable limit (characters, not bytes:
    both providers count a Chinese character as one)."""
    return value if len(value) <= max_chars else value[: max_chars - 1] + "…"


def clipped(params: Mapping[str, str], max_chars: int) -> dict[str, str]:
    """Every variable within the limit, except a link: a shortened link is a broken one, so it
    goes whole and a provider that finds it too long says so (an operator error)."""
    return {k: v if k == "link" else clip(v, max_chars) for k, v in params.items()}


THROTTLE_RETRY_S = 60.0  # a throttled provider is tried again no sooner than this


def refusal_by_code(
    codes: Mapping[str, tuple[Action, bool]], channel: str, code: str, message: str
) -> ProviderError:
    """A provider's error code as what the outbox does next (`codes`: code -> action and
    whether it is the operator's to fix); a code not in the table tries the next channel."""
    action, operator = codes.get(code, (Action.NEXT_CHANNEL, False))
    return ProviderError(
        channel,
        f"{code}: {message}",
        action=action,
        code=code,
        operator=operator,
        retry_after_s=THROTTLE_RETRY_S if action is Action.RETRY else None,
    )
