"""Apprise's `json://` targets (generic JSON webhooks and SMS gateways) over kept-alive connections.

Apprise opens a new `requests` session and TCP connection for every message and re-parses
and re-builds its plugin each time: about 1.6 ms of CPU a message here, which caps two cores
at roughly 700 messages a second, too slow for a burst of alerts (1,000 at once must each
reach a provider within a second). The generic HTTP targets carry nearly all of a burst (an
SMS gateway, WeCom/DingTalk-style bridges behind a webhook), so this sender speaks exactly
Apprise's `json://` protocol itself over a pool of kept-alive connections (urllib3): about
0.3 ms a message.

Exactly Apprise's protocol: the URL is parsed by Apprise's own `NotifyJSON.parse_url`, so
`+Header=`, `-param=`, `:payload=` (add, rename, drop a field), `method=`, `verify=`, `cto=`,
`rto=`, `redirect=` and credentials mean what they mean to Apprise, and the request carries the
same headers and the same JSON body, byte for byte (`tests/test_alert_webhook.py` compares the
two). A URL with any other argument is not ours: `send()` returns False, and the caller sends
it through Apprise.

Not mirrored: proxies from the environment (`HTTP(S)_PROXY`), which `requests` honours. A
deployment that reaches its gateway through a proxy sets `alerts.keepalive_webhooks = false`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlencode

import urllib3

from lovekey.errors import DeliveryError

SCHEMAS = frozenset({"json", "jsons"})
# the plain URL arguments whose meaning this sender mirrors; any other goes through Apprise
_ARGUMENTS = frozenset({"method", "verify", "cto", "rto", "redirect"})
_METHODS = frozenset({"POST", "GET", "DELETE", "PUT", "HEAD", "PATCH"})
_USER_AGENT = "Apprise"  # Apprise's app_id, which its json:// sends as User-Agent
_JSON_VERSION = "1.0"  # NotifyJSON.json_version
_TIMEOUT_S = 4.0  # Apprise's socket connect and read timeouts
_MAX_REDIRECTS = 3


def schema_of(url: str) -> str:
    return url.partition("://")[0].lower()


def is_retryable_status(status: int) -> bool:
    """A 4xx other than timeout/too-many-requests will fail the same way again."""
    return not (400 <= status < 500 and status not in (408, 429))


class KeepAliveJsonSender:
    """Sends to `json://`/`jsons://` URLs; thread-safe.

    One urllib3 pool per target host keeps up to `connections` idle connections (the number
    of send threads: more are opened when needed, only that many are kept).
    """

    def __init__(self, *, connections: int = 16) -> None:
        from apprise.plugins.custom_json import NotifyJSON

        self._parse: Callable[[str], dict[str, Any] | None] = NotifyJSON.parse_url
        self._connections = connections
        self._pools: dict[bool, urllib3.PoolManager] = {}
        self._lock = threading.Lock()

    def send(self, channel: str, url: str, title: str, body: str) -> bool:
        """Send, or return False when `url` is not a json:// URL this sender mirrors exactly
        (the caller then sends it through Apprise). Raises DeliveryError on failure."""
        if schema_of(url) not in SCHEMAS:
            return False
        parsed = self._parse(url)
        if parsed and not all(k in _ARGUMENTS or k[:1] in "+-:" for k in parsed["qsd"]):
            return False
        request = _request(parsed, channel, title, body)
        pool = self._pool(verify=request.pop("verify"))
        try:
            response = pool.request(**request)
        except urllib3.exceptions.HTTPError as exc:
            # connection refused, reset, timed out: the provider may be back soon
            raise DeliveryError(channel, f"connection error: {type(exc).__name__}") from exc
        if not 200 <= response.status < 300:
            raise DeliveryError(
                channel,
                f"Failed to send JSON {request['method']} notification: error={response.status}.",
                retryable=is_retryable_status(response.status),
            )
        return True

    def _pool(self, *, verify: bool) -> urllib3.PoolManager:
        pool = self._pools.get(verify)
        if pool is None:
            with self._lock:
                pool = self._pools.get(verify)
                if pool is None:
                    pool = self._pools[verify] = urllib3.PoolManager(
                        maxsize=self._connections,
                        block=False,
                        cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
                        ca_certs=_ca_certs() if verify else None,
                    )
        return pool

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.clear()
            self._pools.clear()


def _request(parsed: dict[str, Any] | None, channel: str, title: str, body: str) -> dict[str, Any]:
    """urllib3 `request()` arguments (plus `verify`) for what NotifyJSON.send would send."""
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
    redirect = bool(parsed.get("redirect", True))  # Apprise's parse_bool of `redirect=`
    return {
        "method": method,
        "url": target,
        "body": json.dumps(payload).encode(),  # requests sends the body whatever the method
        "headers": headers,
        "timeout": urllib3.Timeout(
            connect=_seconds(qsd.get("cto"), channel), read=_seconds(qsd.get("rto"), channel)
        ),
        # one retry when a connection cannot be made; never after the request went out (a
        # retry could deliver twice: the outbox retries later, with the same idempotency key)
        "retries": urllib3.Retry(
            total=None,
            connect=1,
            read=0,
            status=0,
            other=0,
            redirect=_MAX_REDIRECTS if redirect else 0,
            raise_on_redirect=False,
        ),
        "redirect": redirect,
        "verify": bool(parsed.get("verify", True)),
    }


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


def _ca_certs() -> str | None:
    try:
        import certifi
    except ImportError:  # urllib3 then uses the system's store
        return None
    return str(certifi.where())
