"""Channels: turning a recipient's addresses into Apprise URLs, and sending through Apprise.

Three channel kinds, registered in `CHANNELS`:
- "sms": the recipient's phone put into the configured SMS-gateway URL template
  (`alerts.sms_url`, any Apprise SMS service or a generic `json://`/`form://` gateway), or,
  when `alerts.sms_providers` names template providers, one channel per provider in order:
  "sms@aliyun", "sms@tencent" (the next is the fallback when one is down or refuses);
- "voice": a call through each of `alerts.voice_providers`, "voice@<name>", that reads a
  template and collects a key (1 / 2);
- "push": each of the recipient's own Apprise URLs (`push_url`: WeCom, DingTalk, Feishu,
  ntfy, email, `json://` webhooks, ...) is a channel of its own, "push:0", "push:1", ...

Template providers (`alerts.providers`) are sent through `ProviderBook`; the rest as before.

`ChannelSender` sends Apprise's `json://` targets itself over kept-alive connections
(`alerts.webhook`) and everything else through `AppriseSender`. Sending is blocking (Apprise's
notify is); callers run it in a worker thread. Apprise reports failure as `False` and explains
it only in its log, so the explanation is collected from the `apprise` logger for the calling
thread and raised as `DeliveryError`.

Apprise URLs carry credentials: they are never logged or stored in error text here.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from lovekey.alerts.providers import Accepted, ProviderBook, TemplateMessage
from lovekey.alerts.webhook import KeepAliveJsonSender, is_retryable_status
from lovekey.config import ProviderSettings
from lovekey.errors import DeliveryError

log = logging.getLogger(__name__)

SMS = "sms"
PUSH = "push"
VOICE = "voice"
# channel kind -> whether a recipient message on it is short (SMS, a call) or a push (title+body)
CHANNELS: dict[str, bool] = {SMS: True, PUSH: False, VOICE: True}

# Apprise schemas of generic HTTP targets that accept extra headers as "+Name=value".
_HEADER_SCHEMAS = ("json", "jsons", "xml", "xmls", "form", "forms")
_HTTP_STATUS = re.compile(r"error=(\d{3})")


def channel_kind(channel: str) -> str:
    """'push:0' -> 'push', 'sms@aliyun' -> 'sms', 'voice@tencent' -> 'voice'."""
    return channel.partition(":")[0].partition("@")[0]


def to_phone(channel: str) -> bool:
    """Whether a channel reaches the recipient's phone number (SMS or a call)."""
    return channel_kind(channel) in (SMS, VOICE)


def is_sms(channel: str) -> bool:
    return CHANNELS.get(channel_kind(channel), False)


def recipient_channels(
    preference: Sequence[str],
    *,
    phone: str | None,
    push_urls: Sequence[str],
    sms_enabled: bool,
    sms_providers: Sequence[str] = (),
    voice_providers: Sequence[str] = (),
) -> list[str]:
    """The recipient's channels in the order the role prefers: 'push:0', 'push:1', 'sms' (or
    'sms@a', 'sms@b' with template providers), 'voice@a', ..."""
    out: list[str] = []
    for kind in preference:
        if kind == PUSH:
            out += [f"{PUSH}:{i}" for i in range(len(push_urls))]
        elif kind == SMS and phone and sms_providers:
            out += [f"{SMS}@{name}" for name in sms_providers]
        elif kind == SMS and phone and sms_enabled:
            out.append(SMS)
        elif kind == VOICE and phone:
            out += [f"{VOICE}@{name}" for name in voice_providers]
    return out


def channel_url(
    channel: str,
    *,
    phone: str | None,
    push_urls: Sequence[str],
    sms_url_template: str | None,
    idempotency_key: str,
) -> str:
    """The Apprise URL for one channel of one recipient (secret: do not log)."""
    kind, index = channel_kind(channel), channel.partition(":")[2]
    if kind == SMS:
        if not sms_url_template or not phone:
            raise DeliveryError(channel, "no SMS gateway configured or no phone", retryable=False)
        return (
            sms_url_template.replace("{phone}", quote(phone, safe=""))
            .replace("{phone_digits}", phone.lstrip("+"))
            .replace("{idempotency_key}", quote(idempotency_key, safe=""))
        )
    if kind == PUSH:
        try:
            url = push_urls[int(index)]
        except (ValueError, IndexError) as exc:
            raise DeliveryError(channel, "no such push address", retryable=False) from exc
        return with_idempotency_key(url, idempotency_key)
    raise DeliveryError(channel, "unknown channel", retryable=False)


def with_idempotency_key(url: str, key: str) -> str:
    """Add an `Idempotency-Key` header to generic HTTP targets, so a provider that honours it
    drops the duplicate a crash between sending and recording can cause."""
    schema = url.partition("://")[0].lower()
    if schema not in _HEADER_SCHEMAS or "+idempotency-key=" in url.lower():
        return url
    return f"{url}{'&' if '?' in url else '?'}+Idempotency-Key={quote(key, safe='')}"


@dataclass(frozen=True, slots=True)
class Outgoing:
    channel: str
    url: str  # secret
    title: str
    body: str
    template: TemplateMessage | None = None  # set for template providers (url is then "")

    def __repr__(self) -> str:
        return f"Outgoing(channel={self.channel!r}, url=<redacted>, body_chars={len(self.body)})"


# a sender returns the provider's acceptance (its message id) when there is one
Sender = Callable[[Outgoing], Accepted | None]


class AppriseSender:
    """Sends one message through Apprise; raises DeliveryError with Apprise's own reason."""

    def __init__(self) -> None:
        import apprise  # heavy: only a process that sends imports it
        from apprise.manager_plugins import NotificationManager

        # Apprise loads its plugin modules lazily on first use, and some of them import
        # modules Python deprecates (imghdr): load them once here, not inside a send thread,
        # with that library-internal warning silenced.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            NotificationManager().load_modules()  # type: ignore[no-untyped-call]
        from lovekey.alerts.feishu import register as register_feishu

        register_feishu()  # Feishu bots with a signing secret (`feishu://token/?secret=...`)
        self._apprise: Any = apprise
        self._asset = apprise.AppriseAsset(storage_mode="memory")
        _install_capture()

    def __call__(self, out: Outgoing) -> None:
        plugin = self._apprise.Apprise.instantiate(out.url, asset=self._asset)
        if plugin is None:
            raise DeliveryError(out.channel, "not a valid Apprise URL", retryable=False)
        with _captured() as lines:
            try:
                ok = plugin.notify(body=out.body, title=out.title)
            except Exception as exc:  # a plugin bug must not kill the dispatcher
                raise DeliveryError(out.channel, f"{type(exc).__name__}: {exc}") from exc
        if ok:
            return
        detail = "; ".join(lines) or "Apprise reported failure"
        status = _HTTP_STATUS.search(detail)
        # a 4xx other than timeout/too-many-requests will fail the same way again
        retryable = status is None or is_retryable_status(int(status[1]))
        raise DeliveryError(out.channel, detail[:500], retryable=retryable)


class ChannelSender:
    """The worker's sender: Apprise's `json://` targets over kept-alive connections
    (`alerts.webhook`, about five times cheaper a message), everything else through Apprise.
    `keepalive=False` sends everything through Apprise."""

    def __init__(
        self,
        *,
        keepalive: bool = True,
        connections: int = 16,
        providers: dict[str, ProviderSettings] | None = None,
    ) -> None:
        self._apprise = AppriseSender()
        self._webhook = KeepAliveJsonSender(connections=connections) if keepalive else None
        self.providers = ProviderBook(providers or {})

    def __call__(self, out: Outgoing) -> Accepted | None:
        if out.template is not None:
            return self.providers.send(out.template)
        if self._webhook is None or not self._webhook.send(out.channel, out.url, out.title, out.body):
            self._apprise(out)
        return None

    def batch_max(self, out: Outgoing) -> int:
        """How many template messages like `out` can go in one request (1: one each)."""
        return self.providers.batch_max(out.channel) if out.template is not None else 1

    def send_batch(self, outs: Sequence[Outgoing]) -> Accepted:
        """Template messages of one channel and template in one provider request."""
        return self.providers.send_batch([o.template for o in outs if o.template is not None])

    def already_accepted(self, out: Outgoing) -> Accepted | None:
        """For a resend after a crash: the provider's record of the first send, if it keeps
        one we can ask for (see `ProviderBook.find`)."""
        return self.providers.find(out.template) if out.template is not None else None

    def close(self) -> None:
        if self._webhook is not None:
            self._webhook.close()


# --- global state: one handler on the `apprise` logger, collecting per thread -------------
_local = threading.local()
_capture_lock = threading.Lock()
_capture_installed = False


class _ThreadCapture(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        lines = getattr(_local, "lines", None)
        if lines is not None and len(lines) < 10:
            lines.append(record.getMessage())


def _install_capture() -> None:
    global _capture_installed
    with _capture_lock:
        if not _capture_installed:
            logging.getLogger("apprise").addHandler(_ThreadCapture(logging.WARNING))
            _capture_installed = True


class _captured:
    def __enter__(self) -> list[str]:
        _local.lines = []
        lines: list[str] = _local.lines
        return lines

    def __exit__(self, *exc: object) -> None:
        _local.lines = None
