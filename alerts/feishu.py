"""Feishu custom bots with a signing secret, as an Apprise plugin.

Apprise's Feishu plugin posts to the bot's webhook without the signature a bot with
"签名校验" (signature check) requires, and such a bot refuses the message (code 19021). This
subclass accepts the bot's secret as `feishu://<token>/?secret=<secret>` and adds what the
Feishu custom-bot guide (https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot)
asks for: `timestamp` (seconds) and `sign` = base64(HMAC-SHA256 keyed with
"<timestamp>\\n<secret>" over an empty message). Without `secret` it is Apprise's plugin
unchanged. `register()` puts it in Apprise's plugin table under `feishu://` (called once by
the sender that loads Apprise).
"""

# Apprise's plugin base classes are untyped: calls into them are allowed in this module only
# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import base64
import hashlib
import hmac
import time
from json import dumps, loads
from typing import Any

import requests
from apprise.common import NotifyFormat, NotifyType
from apprise.plugins.feishu import NotifyFeishu


def feishu_sign(secret: str, timestamp: int) -> str:
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class NotifyFeishuSigned(NotifyFeishu):
    """Feishu bot messages, signed when the URL carries `secret=`."""

    template_args = dict(  # noqa: RUF012 (Apprise's plugin schema is a class-level dict)
        NotifyFeishu.template_args,
        secret={"name": "Signing secret", "type": "string", "private": True},
    )

    def __init__(self, token: str, secret: str | None = None, **kwargs: Any) -> None:
        super().__init__(token, **kwargs)
        self.secret = secret or None

    def send(
        self,
        body: str,
        title: str = "",
        notify_type: NotifyType = NotifyType.INFO,
        body_format: NotifyFormat | None = None,
        **kwargs: Any,
    ) -> bool:
        if not self.secret:
            return bool(
                super().send(body, title=title, notify_type=notify_type, body_format=body_format, **kwargs)
            )
        timestamp = int(time.time())
        payload = {
            "timestamp": str(timestamp),
            "sign": feishu_sign(self.secret, timestamp),
            "msg_type": "text",
            "content": {"text": f"{title}\r\n{body}" if title else body},
        }
        self.throttle()
        try:
            r = requests.post(
                self.notify_url.format(token=self.token),
                data=dumps(payload, ensure_ascii=False).encode("utf-8"),
                headers={"User-Agent": self.app_id, "Content-Type": "application/json"},
                verify=self.verify_certificate,
                timeout=self.request_timeout,
                allow_redirects=self.redirects,
            )
        except requests.RequestException as exc:
            self.logger.warning("A Connection error occurred sending Feishu notification: %s", exc)
            return False
        if r.status_code != requests.codes.ok:
            self.logger.warning("Failed to send Feishu notification: error=%s.", r.status_code)
            return False
        try:
            content = loads(r.content)
        except ValueError:
            content = {}
        if isinstance(content, dict) and content.get("code"):
            # e.g. 19021: "sign match fail or timestamp is not within one hour from current time"
            self.logger.warning(
                "Feishu rejected our notification: code=%s msg=%s", content.get("code"), content.get("msg")
            )
            return False
        return True

    def url(self, privacy: bool = False, *args: Any, **kwargs: Any) -> str:
        params = self.url_parameters(*args, privacy=privacy, **kwargs)
        if self.secret:
            params["secret"] = self.pprint(self.secret, privacy, safe="")
        return "{schema}://{token}/?{params}".format(
            schema=self.secure_protocol,
            token=self.pprint(self.token, privacy, safe=""),
            params=NotifyFeishu.urlencode(params),
        )

    @staticmethod
    def parse_url(url: str) -> dict[str, Any] | None:  # type: ignore[override]  # as Apprise's
        results: dict[str, Any] | None = NotifyFeishu.parse_url(url)
        if results and results["qsd"].get("secret"):
            results["secret"] = NotifyFeishu.unquote(results["qsd"]["secret"])
        return results


def register() -> None:
    """Serve `feishu://` URLs with this plugin (idempotent)."""
    from apprise.manager_plugins import NotificationManager

    NotificationManager().add(NotifyFeishuSigned, schemas=("feishu",), force=True)
