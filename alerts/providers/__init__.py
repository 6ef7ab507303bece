"""SMS and voice providers as plug-ins behind the outbox.

`PROVIDERS` maps a provider `kind` (the `kind` of an `[alerts.providers.<name>]` table) to its
class, one `register()` per kind; the SDK each needs is imported when a provider of that kind
is built, so a deployment without Tencent Cloud never imports its SDK. `ProviderBook` holds
one built client per configured provider (each keeps its HTTP connections alive) and sends a
`TemplateMessage` through the provider its channel names ("sms@<name>", "voice@<name>").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Protocol

from lovekey.alerts.providers.base import Accepted, Action, ProviderError, TemplateMessage
from lovekey.config import ProviderSettings

log = logging.getLogger(__name__)

__all__ = [
    "PROVIDERS",
    "Accepted",
    "Action",
    "Provider",
    "ProviderBook",
    "ProviderError",
    "TemplateMessage",
    "provider_of",
    "register",
]


class Provider(Protocol):
    name: str
    kind: str

    def send(self, message: TemplateMessage) -> Accepted: ...


ProviderFactory = Callable[[str, ProviderSettings], Provider]
PROVIDERS: dict[str, ProviderFactory] = {}


def register(kind: str, factory: ProviderFactory) -> None:
    PROVIDERS[kind] = factory


def _aliyun_sms(name: str, settings: ProviderSettings) -> Provider:
    from lovekey.alerts.providers.aliyun import AliyunSms

    return AliyunSms(name, settings)


def _aliyun_voice(name: str, settings: ProviderSettings) -> Provider:
    from lovekey.alerts.providers.aliyun import AliyunVoice

    return AliyunVoice(name, settings)


def _tencent_sms(name: str, settings: ProviderSettings) -> Provider:
    from lovekey.alerts.providers.tencent import TencentSms

    return TencentSms(name, settings)


def _tencent_voice(name: str, settings: ProviderSettings) -> Provider:
    from lovekey.alerts.providers.tencent import TencentVoice

    return TencentVoice(name, settings)


register("aliyun_sms", _aliyun_sms)
register("aliyun_voice", _aliyun_voice)
register("tencent_sms", _tencent_sms)
register("tencent_voice", _tencent_voice)


def provider_of(channel: str) -> str | None:
    """The provider a channel names: 'sms@aliyun' -> 'aliyun'; None for 'sms', 'push:0'."""
    _, at, name = channel.partition("@")
    return name if at else None


class ProviderBook:
    """The configured template providers, built on first use and kept (thread-safe)."""

    def __init__(self, settings: Mapping[str, ProviderSettings]) -> None:
        self._settings = {n: s for n, s in settings.items() if s.kind in PROVIDERS}
        self._built: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        return name in self._settings

    def get(self, name: str) -> Provider:
        provider = self._built.get(name)
        if provider is None:
            with self._lock:
                provider = self._built.get(name)
                if provider is None:
                    settings = self._settings[name]
                    provider = self._built[name] = PROVIDERS[settings.kind](name, settings)
        return provider

    def build_all(self) -> None:
        """Build every configured provider now (the worker does at start): importing an SDK
        and building its client costs about 0.7 s of CPU, which the first alert of a burst
        would otherwise wait for in each process. A provider that cannot be built is logged
        and tried again when a message needs it."""
        for name in self._settings:
            try:
                self.get(name)
            except Exception as exc:  # a bad setting or a missing SDK: the send reports it
                log.error("provider %s could not be built: %s: %s", name, type(exc).__name__, exc)

    def send(self, message: TemplateMessage) -> Accepted:
        name = provider_of(message.channel)
        if name is None or name not in self._settings:
            raise ProviderError(
                message.channel, "no such provider", action=Action.NEXT_CHANNEL, operator=True
            )
        return self._usable(name, message.channel).send(message)

    def _usable(self, name: str, channel: str) -> Provider:
        """The provider, or a ProviderError for the operator when it cannot be built (the
        message goes on to the next channel instead of the error ending the dispatcher)."""
        try:
            return self.get(name)
        except Exception as exc:
            raise ProviderError(
                channel,
                f"provider {name} could not be built: {type(exc).__name__}: {exc}",
                action=Action.NEXT_CHANNEL,
                code="lovekey.PROVIDER_BROKEN",
                operator=True,
            ) from exc

    def batch_max(self, channel: str) -> int:
        """How many messages of one template the channel's provider takes in one request (1:
        no batch request)."""
        name = provider_of(channel)
        if name is None or name not in self._settings:
            return 1
        try:
            provider = self.get(name)
        except Exception:
            return 1  # the send says why (`_usable`)
        return int(getattr(provider, "batch_max", 1)) if hasattr(provider, "send_batch") else 1

    def send_batch(self, messages: list[TemplateMessage]) -> Accepted:
        """Several messages of one template, one channel, in one request."""
        name = provider_of(messages[0].channel) or ""
        send_batch = getattr(self._usable(name, messages[0].channel), "send_batch")  # noqa: B009 (checked by batch_max)
        accepted: Accepted = send_batch(messages)
        return accepted

    def find(self, message: TemplateMessage) -> Accepted | None:
        """The provider's record of an earlier send of `message` (same reference), where the
        provider can be asked (Alibaba SMS); None when it has none or cannot say."""
        name = provider_of(message.channel)
        if name is None or name not in self._settings:
            return None
        find = getattr(self._usable(name, message.channel), "find", None)
        return find(message) if find is not None else None
