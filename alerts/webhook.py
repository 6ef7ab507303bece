"""Apprise's `json://` targets (generic JSON webhooks and SMS gateways) over kept-alive connections.

Apprise opens a new `requests` session and TCP connection for every message and re-parses
and re-builds its plugin each time: about 1.6 ms of CPU a message here, which caps two cores
at roughly 700 messages a second, too slow for a burst of alerts (1,000 at once must each
reach a provider within a second). The generic HTTP targets carry nearly all of a burst (an
SMS gateway, WeCom/DingTalk-style bridges behind a webhook), so this sender speaks exactly
Apprise's `json://` protocol itself over kept-alive connections (`alerts.keepalive`, about
0.1 ms of client CPU a request; a urllib3 pool cost 0.6).

Exactly Apprise's protocol: the URL is parsed by Apprise's own `NotifyJSON.parse_url`, so
`+Header=`, `-param=`, `:payload=` (add, rename, drop a field), `method=`, `verify=`, `cto=`,
`rto=`, `redirect=` and credentials mean what they mean to Apprise, and the request carries the
same headers and the same JSON body, byte for byte (`tests/test_alert_webhook.py` compares the
two). Redirects are followed as `requests` follows them for Apprise (303, and 301/302 after a
POST, become a GET without the body; credentials are not sent to another host), up to 3. A
URL with any other argument is not ours: `send()` returns False, and the caller sends it
through Apprise.

Not mirrored: proxies from the environment (`HTTP(S)_PROXY`), which `requests` honours. A
deployment that reaches its gateway through a proxy sets `alerts.keepalive_webhooks = false`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlencode, urljoin, urlsplit

import urllib3

from lovekey.alerts.keepalive import KeepAlivePool
from lovekey.errors import DeliveryError

SCHEMAS = frozenset({"json", "jsons"})
# the plain URL arguments whose meaning this sender mirrors; any other goes through Apprise
_ARGUMENTS = frozenset({"method", "verify", "cto", "rto", "redirect"})
_METHODS = frozenset({"POST", "GET", "DELETE", "PUT", "HEAD", "PATCH"})
_USER_AGENT = "Apprise"  # Apprise's app_id, which its json:// sends as User-Agent
_JSON_VERSION = "1.0"  # NotifyJSON.json_version
_TIMEOUT_S = 4.0  # Apprise's socket connect and read timeouts
_MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# what requests drops when a redirect turns the request into a GET, or leaves the host
_BODY_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding"})
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})


def schema_of(url: str) -> str:
    return url.partition("://")[0].lower()


def is_retryable_status(status: int) -> bool:
    """A 4xx other than timeout/too-many-requests will fail the same way again."""
    return not (400 <= status < 500 and status not in (408, 429))


class KeepAliveJsonSender:
    """Sends to `json://`/`jsons://` URLs; thread-safe.

    Kept-alive connections per target host, up to `connections` idle ones (the number of send
    threads: more are opened when needed, only that many are kept).
    """

    def __init__(self, *, connections: int = 16) -> None:
        from apprise.plugins.custom_json import NotifyJSON

        self._parse: Callable[[str], dict[str, Any] | None] = NotifyJSON.parse_url
        self._pools = {
            True: KeepAlivePool(maxsize=connections),  # certifi's bundle
            False: KeepAlivePool(maxsize=connections, verify=False),
        }

    def send(self, channel: str, url: str, title: str, body: str) -> bool:
        """Send, or return False when `url` is not a json:// URL this sender mirrors exactly
        (the caller then sends it through Apprise). Raises DeliveryError on failure."""
        if schema_of(url) not in SCHEMAS:
            return False
        parsed = self._parse(url)
        if parsed and not all(k in _ARGUMENTS or k[:1] in "+-:" for k in parsed["qsd"]):
            return False
        request = _request(parsed, channel, title, body)
        pool = self._pools[request.verify]
        method, target, headers = request.method, request.url, request.headers
        data: bytes | None = request.body
        try:
            for hop in range(_MAX_REDIRECTS + 1):
                response = pool.request(
                    method,
                    target,
                    body=data,
                    headers=headers,
                    connect_timeout_s=request.connect_timeout_s,
                    read_timeout_s=request.read_timeout_s,
                    connect_attempts=2,  # once more when no connection could be made
                )
                location = response.headers.get("Location")
                # after the last hop the redirect itself is the answer: not 2xx, so a failure
                if (
                    not (request.redirect and response.status in _REDIRECTS and location)
                    or hop == _MAX_REDIRECTS
                ):
                    break
                following = urljoin(target, location)
                method, data, headers = _redirected(response.status, method, data, headers)
                if urlsplit(following).netloc != urlsplit(target).netloc:
                    headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
                target = following
        except (OSError, ValueError) as exc:
            # connection refused, reset, timed out, a garbled answer: the provider may be back soon
            raise DeliveryError(channel, f"connection error: {type(exc).__name__}") from exc
        if not 200 <= response.status < 300:
            raise DeliveryError(
                channel,
                f"Failed to send JSON {request.method} notification: error={response.status}.",
                retryable=is_retryable_status(response.status),
            )
        return True

    def close(self) -> None:
        for pool in self._pools.values():
            pool.clear()


def _redirected(
    status: int, method: str, body: bytes | None, headers: dict[str, str]
) -> tuple[str, bytes | None, dict[str, str]]:
    """The request after a redirect, as requests rebuilds it (`Session.rebuild_method`,
    `resolve_redirects`): 303 (but HEAD), 302 (but HEAD) and 301 after a POST become a GET;
    every redirect but 307/308 drops the body and its headers."""
    if (status in (302, 303) and method != "HEAD") or (status == 301 and method == "POST"):
        method = "GET"
    if status not in (307, 308):
        body = None
        headers = {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}
    return method, body, headers


@dataclass(frozen=True, slots=True)
class _Request:
    """What NotifyJSON.send would send: method, URL, body, headers, timeouts and the flags."""

    method: str
    url: str
    body: bytes
    headers: dict[str, str]
    connect_timeout_s: float
    read_timeout_s: float
    redirect: bool
    verify: bool


def _request(parsed: dict[str, Any] | None, channel: str, title: str, body: str) -> _Request:
    """What NotifyJSON.send would send for this URL."""
    if not parsed or not parsed.get("host"):
        raise DeliveryError(channel, "not a valid json:// URL", retryable=False)
    method = str(parsed.get("method") or "POST").upper()
    if method not in _METHODS:
        raise DeliveryError(channel, f"method {method} is not supported", retryable=False)
    payload: dict[str, Any] = {
        "version": _JSON_VERSION,
        "title": title,
        "message": body,
        "attachments": [],
        "type": "info",
    }
    for key, value in parsed["payload"].items():  # NotifyJSON's payload extras, same rules
        if key in payload:
            if value:
                payload[value] = payload[key]
            del payload[key]
        else:
            payload[key] = value
    headers = {"User-Agent": _USER_AGENT, "Content-Type": "application/json"}
    headers.update(parsed["headers"])
    user, password = parsed.get("user"), parsed.get("password")
    if user:  # Apprise unquotes both (URLBase) and sends them as basic auth
        headers.update(
            urllib3.make_headers(basic_auth=f"{unquote(user)}:{unquote(password) if password else ''}")
        )
    scheme = "https" if parsed["secure"] else "http"
    port = f":{parsed['port']}" if isinstance(parsed.get("port"), int) else ""
    target = f"{scheme}://{unquote(parsed['host'])}{port}{parsed.get('fullpath') or ''}"
    if parsed["params"]:  # requests' `params=`: appended to the query
        target += ("&" if "?" in target else "?") + urlencode(parsed["params"])
    qsd = parsed["qsd"]
    return _Request(
        method,
        target,
        json.dumps(payload).encode(),  # requests sends the body whatever the method
        headers,
        connect_timeout_s=_seconds(qsd.get("cto"), channel),
        read_timeout_s=_seconds(qsd.get("rto"), channel),
        redirect=bool(parsed.get("redirect", True)),  # Apprise's parse_bool of `redirect=`
        verify=bool(parsed.get("verify", True)),
    )


def _seconds(value: str | None, channel: str) -> float:
    if value is None:
        return _TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError as exc:
        raise DeliveryError(channel, f"invalid timeout {value!r}", retryable=False) from exc
    if seconds <= 0:
        raise DeliveryError(channel, f"invalid timeout {value!r}", retryable=False)
    return seconds
