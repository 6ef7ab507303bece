"""Alibaba Cloud SMS (dysmsapi 2017-05-25, `SendSms`) and voice (dyvmsapi 2017-05-25,
`IvrCall`: a TTS template read to the callee, who answers with a key) through the official
SDKs (`alibabacloud-dysmsapi20170525`, `alibabacloud-dyvmsapi20170525`).

The SDKs (tea-openapi 0.4) sign every request with ACS3-HMAC-SHA256 (the V3 signature: an
`Authorization: ACS3-HMAC-SHA256 Credential=...,SignedHeaders=...,Signature=...` header over
the canonical request, with the body's SHA-256 in `x-acs-content-sha256`); the signed
request leaves through `PooledSession`, over kept-alive connections per host (why: see
there). The endpoint setting is "https://dysmsapi.aliyuncs.com" style;
`http://` is allowed for a local stand-in.

Error codes: https://help.aliyun.com/document_detail/101346.html (SMS API error codes) and
the voice API error codes https://help.aliyun.com/document_detail/112502.html. A refusal comes
back as HTTP 200 with `Code` other than "OK"; throttling of the API itself as HTTP 400/429
with `Throttling*` codes.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.structures import CaseInsensitiveDict

from lovekey.alerts.keepalive import KeepAlivePool, Response
from lovekey.alerts.providers.base import (
    Accepted,
    Action,
    ProviderError,
    TemplateMessage,
    clipped,
    refusal_by_code,
)
from lovekey.config import ProviderSettings

# Alibaba Cloud's default limit per template variable is 35 characters
# (https://help.aliyun.com/zh/document_detail/3041859.html)
VARIABLE_MAX_CHARS = 35

# code -> (action, the operator must fix the configuration)
_CODES: dict[str, tuple[Action, bool]] = {
    # the number: never retried, the alert moves on to the next person
    "isv.MOBILE_NUMBER_ILLEGAL": (Action.GIVE_UP, False),
    "isv.BLACK_KEY_CONTROL_LIMIT": (Action.GIVE_UP, False),
    "isv.DOMESTIC_NUMBER_NOT_SUPPORTED": (Action.GIVE_UP, False),
    "isv.MOBILE_COUNT_OVER_LIMIT": (Action.GIVE_UP, False),
    # throttling of this number or of the account: the same provider, later
    "isv.BUSINESS_LIMIT_CONTROL": (Action.RETRY, False),
    "Throttling.User": (Action.RETRY, False),
    "Throttling.Api": (Action.RETRY, False),
    "Throttling": (Action.RETRY, False),
    "isp.SYSTEM_ERROR": (Action.RETRY, False),
    "InternalError": (Action.RETRY, False),
    "ServiceUnavailable": (Action.NEXT_CHANNEL, False),
    # configuration: shown to the operator; another provider may still deliver
    "isv.SMS_TEMPLATE_ILLEGAL": (Action.NEXT_CHANNEL, True),
    "isv.SMS_SIGNATURE_ILLEGAL": (Action.NEXT_CHANNEL, True),
    "isv.SMS_SIGNATURE_SCENE_ILLEGAL": (Action.NEXT_CHANNEL, True),
    "isv.SIGN_STATE_ILLEGAL": (Action.NEXT_CHANNEL, True),
    "isv.TEMPLATE_MISSING_PARAMETERS": (Action.NEXT_CHANNEL, True),
    "isv.TEMPLATE_PARAMS_ILLEGAL": (Action.NEXT_CHANNEL, True),
    "isv.INVALID_JSON_PARAM": (Action.NEXT_CHANNEL, True),
    "isv.PARAM_LENGTH_LIMIT": (Action.NEXT_CHANNEL, True),
    "isv.INVALID_PARAMETERS": (Action.NEXT_CHANNEL, True),
    "isv.AMOUNT_NOT_ENOUGH": (Action.NEXT_CHANNEL, True),
    "isv.OUT_OF_SERVICE": (Action.NEXT_CHANNEL, True),
    "isv.DAY_LIMIT_CONTROL": (Action.NEXT_CHANNEL, True),
    "isv.MONTH_LIMIT_CONTROL": (Action.NEXT_CHANNEL, True),
    "isv.PRODUCT_UN_SUBSCRIPT": (Action.NEXT_CHANNEL, True),
    "isv.PRODUCT_UNSUBSCRIBE": (Action.NEXT_CHANNEL, True),
    "isv.ACCOUNT_NOT_EXISTS": (Action.NEXT_CHANNEL, True),
    "isv.ACCOUNT_ABNORMAL": (Action.NEXT_CHANNEL, True),
    "isp.RAM_PERMISSION_DENY": (Action.NEXT_CHANNEL, True),
    "InvalidAccessKeyId.NotFound": (Action.NEXT_CHANNEL, True),
    "SignatureDoesNotMatch": (Action.NEXT_CHANNEL, True),
    "IncompleteSignature": (Action.NEXT_CHANNEL, True),
    # voice (dyvmsapi)
    "isv.TTS_TEMPLATE_ILLEGAL": (Action.NEXT_CHANNEL, True),
    "isv.DISPLAY_NUMBER_ILLEGAL": (Action.NEXT_CHANNEL, True),
    "isv.VOICE_FILE_ILLEGAL": (Action.NEXT_CHANNEL, True),
}
_CHINA = timezone(timedelta(hours=8))  # QuerySendDetails' SendDate is a date in China


def _split_endpoint(endpoint: str | None, default_host: str) -> tuple[str, str]:
    if not endpoint:
        return "https", default_host
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    return parts.scheme or "https", parts.netloc


# numbers in one SendBatchSms request (the API's limit)
BATCH_MAX = 100

# idle connections kept to each provider host (the SDK's `max_idle_conns`): one per send
# thread in flight
POOL_CONNECTIONS = 64


def _config(settings: ProviderSettings, default_host: str) -> Any:
    from alibabacloud_tea_openapi.utils_models import Config

    protocol, host = _split_endpoint(settings.endpoint, default_host)
    timeout_ms = int(settings.timeout_s * 1000)
    _keep_pooled_session(protocol, host)
    return Config(
        access_key_id=settings.access_key_id,
        access_key_secret=settings.access_key_secret,
        endpoint=host,
        protocol=protocol,
        read_timeout=timeout_ms,
        connect_timeout=timeout_ms,
        max_idle_conns=POOL_CONNECTIONS,
    )


class _Response:
    """What darabonba reads of an HTTP answer (`DaraCore.do_action`: `reason`, `status_code`,
    `headers.items()`, `content`), over a `keepalive.Response`."""

    __slots__ = ("content", "headers", "reason", "status_code")

    def __init__(self, response: Response) -> None:
        self.status_code = response.status
        self.reason = response.reason
        self.headers = response.headers
        self.content = response.data


class PooledSession:
    """Takes the place of the `requests.Session` darabonba keeps per provider host
    (`DaraCore._sessions`, keyed by protocol, host, port and pool size): `send()` gets the
    request the SDK built and signed (a prepared request: method, URL, headers, body) and
    sends it over kept-alive connections (`alerts.keepalive`). A request through a proxy, with
    a client certificate or another CA bundle, or streamed, goes through a real
    `requests.Session` as before.

    Why: requests' `Session.send` and its adapter cost more CPU per request than the SDK's own
    building, signing and parsing (hooks, cookie jars, redirect resolution, TLS context
    lookup), and so does a urllib3 pool, which also re-encodes the URL byte by byte each time
    it parses one (an RPC-style request carries every parameter in its query); 1,000 alerts in
    a second on two cores cannot afford it (docs/alerts.md, "Speed"). The request on the wire
    is the same."""

    def __init__(self, *, connections: int) -> None:
        self.requests_sent = 0
        self.light_requests_sent = 0  # of them, prepared by `_LightPreparedRequest`
        self._fallback = requests.Session()
        self._pool = KeepAlivePool(maxsize=connections)

    def send(
        self,
        request: Any,
        *,
        proxies: dict[str, str] | None = None,
        timeout: tuple[float, float] | None = None,
        verify: bool | str = True,
        cert: Any = None,
        stream: bool = False,
    ) -> Any:
        if proxies or cert is not None or verify is not True or stream:
            return self._fallback.send(
                _complete(request), proxies=proxies, timeout=timeout, verify=verify, cert=cert, stream=stream
            )
        connect_s, read_s = timeout or (None, None)
        body = request.body.encode() if isinstance(request.body, str) else request.body
        try:
            response = self._pool.request(
                request.method,
                request.url,
                body=body,
                headers=request.headers,
                connect_timeout_s=connect_s,
                read_timeout_s=read_s,
            )
        except OSError as exc:
            # what requests raises (an IOError): the SDK turns it into its RetryError
            raise requests.ConnectionError(str(exc)) from exc
        self.requests_sent += 1
        self.light_requests_sent += getattr(request, "light", None) is not None
        return _Response(response)


# hosts whose darabonba session is a PooledSession: their requests are prepared lightly
_POOLED_HOSTS: set[str] = set()


def _keep_pooled_session(protocol: str, host: str) -> None:
    """Install `PooledSession` where darabonba looks for the session of this host (the key is
    `DaraCore._get_session`'s: protocol, host, the request's port (80 unless set) and the
    pool size from `max_idle_conns`), and the light request preparation for it."""
    import darabonba.core

    key = f"{protocol.lower()}://{host.rstrip('/')}:80:pool={POOL_CONNECTIONS}"
    darabonba.core.DaraCore._sessions.setdefault(key, PooledSession(connections=POOL_CONNECTIONS))
    _POOLED_HOSTS.add(host.rstrip("/"))
    darabonba.core.PreparedRequest = _LightPreparedRequest


class _LightPreparedRequest(requests.PreparedRequest):
    """`darabonba.core.PreparedRequest` for LoveKey's provider hosts (see `_keep_pooled_session`).

    darabonba builds a `requests.PreparedRequest` for every call (`DaraCore.do_action`) and
    hands it to the host's session. requests' preparation re-parses and re-quotes the URL
    byte by byte (an RPC-style call carries every parameter, the Chinese template variables
    included, in its query), builds a cookie jar and validates every header: about 0.2 ms of
    CPU a request, a fifth of a notification's share on two cores. For a host whose session
    is a `PooledSession`, which reads only the method, URL, headers and body and sends them
    as they are, this records those four; the request on the wire is the same (the stand-ins
    verify every signature over it). Any other host, or a call with files, params, auth,
    cookies, hooks or JSON, or a header that is not plain text, is prepared by requests as
    before, and a light request that must go through a real session after all (a proxy, a
    client certificate, streaming) is completed by `_complete` first."""

    light: tuple[Any, ...] | None = None  # (method, url, headers, data) when light

    def prepare(
        self,
        method: Any = None,
        url: Any = None,
        headers: Any = None,
        files: Any = None,
        data: Any = None,
        params: Any = None,
        auth: Any = None,
        cookies: Any = None,
        hooks: Any = None,
        json: Any = None,
    ) -> None:
        if (
            isinstance(url, str)
            and urlsplit(url).netloc in _POOLED_HOSTS
            and not (files or params or auth or cookies or hooks or json)
            and isinstance(data, bytes | None)
            and all(_plain_header(k, v) for k, v in (headers or {}).items())
        ):
            self.method = str(method).upper()
            self.url = url
            self.headers = CaseInsensitiveDict(headers or {})
            self.body = data
            self.light = (method, url, headers, data)
            return
        super().prepare(method, url, headers, files, data, params, auth, cookies, hooks, json)


def _plain_header(name: Any, value: Any) -> bool:
    """Text without line breaks (anything else goes to requests, which refuses it)."""
    return (
        isinstance(name, str)
        and isinstance(value, str)
        and not any(c in name or c in value for c in "\r\n")
        and value == value.lstrip()
    )


def _complete(request: Any) -> Any:
    """A light request prepared in full by requests (for a real session); others as they are."""
    light = getattr(request, "light", None)
    if light is None:
        return request
    method, url, headers, data = light
    full = requests.PreparedRequest()
    full.prepare(method=method, url=url, headers=headers, data=data)
    return full


def refusal(channel: str, code: str, message: str) -> ProviderError:
    return refusal_by_code(_CODES, channel, code, message)


def _sdk_error(channel: str, exc: Exception) -> ProviderError:
    """The SDK's exceptions: a Client/Server/ThrottlingException carries the code; anything
    else (connection refused, timed out) means the provider could not be reached."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code and code != "None":
        error = refusal(channel, code, str(getattr(exc, "message", "")))
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > 0:
            error.retry_after_s = retry_after / 1000
        if getattr(exc, "status_code", 0) >= 500 and code not in _CODES:
            error.action, error.retryable = Action.NEXT_CHANNEL, False
        return error
    return ProviderError(
        channel, f"unreachable: {type(exc).__name__}", action=Action.NEXT_CHANNEL, code="unreachable"
    )


def _template(settings: ProviderSettings, message: TemplateMessage) -> str:
    template = settings.templates.get(message.template_key)
    if not template:
        raise ProviderError(
            message.channel,
            f"no template id for {message.template_key!r} in [alerts.providers] settings",
            action=Action.NEXT_CHANNEL,
            code="lovekey.NO_TEMPLATE",
            operator=True,
        )
    return str(template)


def _params(message: TemplateMessage, max_chars: int) -> str:
    return json.dumps(clipped(message.params, max_chars), ensure_ascii=False)


def _mainland(phone: str) -> str:
    """Alibaba takes mainland numbers without +86, others with their country code."""
    digits = phone.lstrip("+")
    return digits[2:] if digits.startswith("86") and len(digits) == 13 else digits


class AliyunSms:
    """`SendSms` with the approved signature and a template; OutId carries our reference."""

    kind = "aliyun_sms"

    def __init__(self, name: str, settings: ProviderSettings) -> None:
        from alibabacloud_dysmsapi20170525.client import Client

        self.name = name
        self.settings = settings
        # SendBatchSms takes up to 100 numbers, each with its own signature and variables;
        # `batch_max = 1` sends one SendSms a message, which Alibaba advises for alerts
        self.batch_max = settings.batch_max or BATCH_MAX
        self._client = Client(_config(settings, "dysmsapi.aliyuncs.com"))

    def send(self, message: TemplateMessage) -> Accepted:
        from alibabacloud_dysmsapi20170525 import models

        request = models.SendSmsRequest(
            phone_numbers=_mainland(message.phone),
            sign_name=self.settings.sign_name,
            template_code=_template(self.settings, message),
            template_param=_params(message, self.settings.variable_max_chars or VARIABLE_MAX_CHARS),
            out_id=message.reference,
        )
        try:
            body = self._client.send_sms(request).body
        except Exception as exc:  # the SDK raises Tea exceptions for everything
            raise _sdk_error(message.channel, exc) from exc
        if body.code != "OK":
            raise refusal(message.channel, str(body.code), str(body.message))
        return Accepted(self.name, str(body.biz_id), {"RequestId": body.request_id})

    def send_batch(self, messages: list[TemplateMessage]) -> Accepted:
        """One `SendBatchSms` for messages of one template: one request instead of one each
        (the SDK's cost is per request). One BizId for all; receipts name it with each number.
        OutId is the first message's reference: the batch's reference."""
        from alibabacloud_dysmsapi20170525 import models

        first = messages[0]
        max_chars = self.settings.variable_max_chars or VARIABLE_MAX_CHARS
        request = models.SendBatchSmsRequest(
            phone_number_json=json.dumps([_mainland(m.phone) for m in messages]),
            sign_name_json=json.dumps([self.settings.sign_name] * len(messages), ensure_ascii=False),
            template_code=_template(self.settings, first),
            template_param_json=json.dumps(
                [clipped(m.params, max_chars) for m in messages], ensure_ascii=False
            ),
            out_id=first.reference,
        )
        try:
            body = self._client.send_batch_sms(request).body
        except Exception as exc:
            raise _sdk_error(first.channel, exc) from exc
        if body.code != "OK":
            raise refusal(first.channel, str(body.code), str(body.message))
        return Accepted(self.name, str(body.biz_id), {"RequestId": body.request_id})

    def find(self, message: TemplateMessage) -> Accepted | None:
        """Whether Alibaba Cloud already took this message (a worker died before recording
        its answer): `QuerySendDetails` for the number, today and yesterday (China time),
        looking for our OutId. Its records carry no BizId, so the message is recorded under
        its OutId, which receipts carry too."""
        from alibabacloud_dysmsapi20170525 import models

        today = datetime.now(_CHINA)
        for day in (today, today - timedelta(days=1)):
            request = models.QuerySendDetailsRequest(
                phone_number=_mainland(message.phone),
                send_date=day.strftime("%Y%m%d"),
                page_size=50,
                current_page=1,
            )
            try:
                body = self._client.query_send_details(request).body
            except Exception as exc:
                raise _sdk_error(message.channel, exc) from exc
            if body.code != "OK":
                raise refusal(message.channel, str(body.code), str(body.message))
            details = body.sms_send_detail_dtos.sms_send_detail_dto if body.sms_send_detail_dtos else []
            if any(d.out_id == message.reference for d in details or ()):
                return Accepted(self.name, f"out:{message.reference}", {"RequestId": body.request_id})
        return None


class AliyunVoice:
    """`IvrCall`: the `call.<lang>` TTS template read `play_times` times; keys 1 and 2 are
    collected (each answered by the `call_bye.<lang>` template, when configured) and reported
    in the call record (VoiceReport `dtmf`)."""

    kind = "aliyun_voice"

    def __init__(self, name: str, settings: ProviderSettings) -> None:
        from alibabacloud_dyvmsapi20170525.client import Client

        self.name = name
        self.settings = settings
        self._client = Client(_config(settings, "dyvmsapi.aliyuncs.com"))

    def send(self, message: TemplateMessage) -> Accepted:
        from alibabacloud_dyvmsapi20170525 import models

        start = _template(self.settings, message)
        language = message.template_key.rpartition(".")[2]
        bye = self.settings.templates.get(f"call_bye.{language}")
        keys = [models.IvrCallRequestMenuKeyMap(key=k, code=bye) for k in ("1", "2")] if bye else None
        request = models.IvrCallRequest(
            called_number=_mainland(message.phone),
            called_show_number=self.settings.caller_number,
            start_code=start,
            start_tts_params=_params(message, self.settings.variable_max_chars or VARIABLE_MAX_CHARS),
            menu_key_map=keys,
            play_times=self.settings.play_times,
            timeout=self.settings.key_timeout_ms,
            out_id=message.reference[:15],  # OutId: at most 15 bytes
        )
        try:
            body = self._client.ivr_call(request).body
        except Exception as exc:
            raise _sdk_error(message.channel, exc) from exc
        if body.code != "OK":
            raise refusal(message.channel, str(body.code), str(body.message))
        return Accepted(self.name, str(body.call_id), {"RequestId": body.request_id})
