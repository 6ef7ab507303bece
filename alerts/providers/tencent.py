"""Tencent Cloud SMS (sms 2021-01-11, `SendSms`) and voice messages (vms 2020-09-02,
`SendTtsVoice`) through the official SDKs (`tencentcloud-sdk-python-sms`, `-vms`).

The SDK signs every request with TC3-HMAC-SHA256 (signed headers `content-type;host`, the
JSON body's SHA-256, a key derived from the SecretKey, the date and the service name), and
the signed request leaves through `_PooledConnection`, over kept-alive connections. A
template's variables are positional (`{1}`, `{2}`, ...): the parameters go in the order
LoveKey lists them for each message (docs/alerts.md).

Error codes: https://cloud.tencent.com/document/api/382/59177 (SMS send errors; a
refusal for one number comes back in `SendStatusSet[].Code`, a refusal of the whole request
as `Response.Error.Code`) and the VMS error codes in `tencentcloud/vms/v20200902/errorcodes.py`.
"""

from __future__ import annotations

from typing import Any

from lovekey.alerts.keepalive import KeepAlivePool
from lovekey.alerts.providers.base import (
    Accepted,
    Action,
    ProviderError,
    TemplateMessage,
    clipped,
    refusal_by_code,
)
from lovekey.config import ProviderSettings

# Tencent Cloud limits each template variable by account and template type; set
# `variable_max_chars` to what yours allows (values are shortened to fit, never a link)
VARIABLE_MAX_CHARS = 35

_CODES: dict[str, tuple[Action, bool]] = {
    "InvalidParameterValue.IncorrectPhoneNumber": (Action.GIVE_UP, False),
    "FailedOperation.PhoneNumberInBlacklist": (Action.GIVE_UP, False),
    "FailedOperation.PhoneNumberParseFail": (Action.GIVE_UP, False),
    "InvalidParameterValue.CalledNumberVerifyFail": (Action.GIVE_UP, False),
    "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber": (Action.GIVE_UP, False),
    "LimitExceeded.PhoneNumberThirtySecondLimit": (Action.RETRY, False),
    "LimitExceeded.PhoneNumberOneHourLimit": (Action.RETRY, False),
    "LimitExceeded.PhoneNumberDailyLimit": (Action.NEXT_CHANNEL, False),
    "LimitExceeded.PhoneNumberSameContentDailyLimit": (Action.NEXT_CHANNEL, False),
    "LimitExceeded.DeliveryFrequencyLimit": (Action.RETRY, False),
    "RequestLimitExceeded": (Action.RETRY, False),
    "InternalError.Timeout": (Action.RETRY, False),
    "InternalError.OtherError": (Action.RETRY, False),
    "InternalError.SendAndRecvFail": (Action.RETRY, False),
    "InternalError.RequestTimeException": (Action.RETRY, False),
    "FailedOperation.TemplateIncorrectOrUnapproved": (Action.NEXT_CHANNEL, True),
    "FailedOperation.TemplateUnapprovedOrNotExist": (Action.NEXT_CHANNEL, True),
    "FailedOperation.TemplateParamSetNotMatchApprovedTemplate": (Action.NEXT_CHANNEL, True),
    "FailedOperation.SignatureIncorrectOrUnapproved": (Action.NEXT_CHANNEL, True),
    "FailedOperation.MissingSignature": (Action.NEXT_CHANNEL, True),
    "InvalidParameterValue.TemplateParameterFormatError": (Action.NEXT_CHANNEL, True),
    "InvalidParameterValue.TemplateParameterLengthLimit": (Action.NEXT_CHANNEL, True),
    "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter": (Action.NEXT_CHANNEL, True),
    "InvalidParameterValue.ContentLengthLimit": (Action.NEXT_CHANNEL, True),
    "InvalidParameterValue.SdkAppIdNotExist": (Action.NEXT_CHANNEL, True),
    "InvalidParameterValue.SdkAppidNotExist": (Action.NEXT_CHANNEL, True),
    "FailedOperation.InsufficientBalanceInSmsPackage": (Action.NEXT_CHANNEL, True),
    "FailedOperation.InsufficientBalanceInVoicePackage": (Action.NEXT_CHANNEL, True),
    "UnauthorizedOperation.ServiceSuspendDueToArrears": (Action.NEXT_CHANNEL, True),
    "AuthFailure.SignatureFailure": (Action.NEXT_CHANNEL, True),
    "AuthFailure.SecretIdNotFound": (Action.NEXT_CHANNEL, True),
}
_UNREACHABLE = ("ClientNetworkError", "ServerNetworkError", "ClientError")


def refusal(channel: str, code: str, message: str) -> ProviderError:
    return refusal_by_code(_CODES, channel, code, message)


def _sdk_error(channel: str, exc: Exception) -> ProviderError:
    code = getattr(exc, "code", None)
    if not isinstance(code, str) or code in _UNREACHABLE:
        return ProviderError(
            channel, f"unreachable: {type(exc).__name__}", action=Action.NEXT_CHANNEL, code="unreachable"
        )
    return refusal(channel, code, str(getattr(exc, "message", "")))


def _profile(settings: ProviderSettings, default_host: str) -> Any:
    from urllib.parse import urlsplit

    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile

    endpoint = settings.endpoint or f"https://{default_host}"
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    http = HttpProfile(
        protocol=parts.scheme or "https",
        endpoint=parts.netloc,
        reqTimeout=max(1, round(settings.timeout_s)),
        keepAlive=True,
    )
    return ClientProfile(httpProfile=http)


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


def _positional(message: TemplateMessage, max_chars: int) -> list[str]:
    """The variables in order (`{1}`, `{2}`, ...). `link` is the token alone: Tencent refuses
    a URL in a variable (InvalidParameterValue.ProhibitedUseUrlInTemplateParameter)."""
    return list(clipped(message.params, max_chars).values())


def _credential(settings: ProviderSettings) -> Any:
    from tencentcloud.common import credential

    return credential.Credential(settings.access_key_id or "", settings.access_key_secret or "")


# idle connections kept to the provider: one per send thread in flight (`alerts.send_threads`
# is at most this in practice); the SDK's own requests session keeps 10 and opens and drops
# a connection for every request beyond them
POOL_CONNECTIONS = 64


class _Response:
    """What the SDK reads of an HTTP answer (`abstract_client.py`: `status_code`, `content`,
    `headers.get('Content-Type')`; `ResponsePrettyFormatter` for its debug log: `reason`,
    `text`, `raw.version`), over a `keepalive.Response` or, through a proxy, a urllib3 one."""

    __slots__ = ("content", "headers", "raw", "reason", "status_code")

    def __init__(self, response: Any) -> None:
        self.raw = response
        self.status_code = response.status
        self.reason = response.reason
        self.headers = response.headers  # case-insensitive, like requests'
        self.content = response.data

    @property
    def text(self) -> str:
        return bytes(self.content).decode("utf-8", "replace")


class _PooledConnection:
    """The SDK's HTTP connection (`tencentcloud.common.http.request.ProxyConnection`: one
    `request(method, url, body, headers)` the SDK calls with the request it built and signed)
    over kept-alive connections (`alerts.keepalive`), with the CA bundle and timeout the SDK
    chose; through the SDK's proxy, a urllib3 proxy pool.

    Why: the SDK sends through a `requests.Session`, which costs more CPU per request than
    building, signing and parsing it together (merging settings, walking os.environ twice for
    proxies the SDK already passes, preparing and re-validating headers), and 1,000 alerts in
    a second on two cores cannot afford it (docs/alerts.md, "Speed"). The request on the wire
    carries the same method, URL, SDK headers (Host, Content-Type, Authorization, X-TC-*) and
    body; only requests' own defaults are gone (its User-Agent, `Accept: */*`, gzip), none of
    them signed."""

    def __init__(self, sdk_connection: Any, *, connections: int) -> None:
        self.request_host = sdk_connection.request_host
        self.request_length = 0  # the SDK reads it after each request
        self.timeout = sdk_connection.timeout
        proxy = (sdk_connection.proxy or {}).get("https")
        self._proxied: Any = None
        self._pool: KeepAlivePool | None = None
        if proxy:
            import urllib3

            self._proxied = urllib3.ProxyManager(
                proxy, maxsize=connections, ca_certs=sdk_connection.certification
            )
        else:
            self._pool = KeepAlivePool(maxsize=connections, ca_certs=sdk_connection.certification)

    def request(
        self, method: str, url: str, body: str | bytes | None = None, headers: dict[str, str] | None = None
    ) -> _Response:
        headers = headers if headers is not None else {}
        headers.setdefault("Host", self.request_host)
        data = body.encode() if isinstance(body, str) else body
        if self._pool is not None:
            return _Response(
                self._pool.request(
                    method,
                    url,
                    body=data,
                    headers=headers,
                    connect_timeout_s=self.timeout,
                    read_timeout_s=self.timeout,
                )
            )
        response = self._proxied.request(
            method,
            url,
            body=data,
            headers=headers,
            timeout=self.timeout,
            retries=False,  # the SDK retries (or not) itself
            redirect=False,
        )
        return _Response(response)


def _lean_client(client: Any) -> Any:
    """The SDK client sending through `_PooledConnection` (see there)."""
    client.request.conn = _PooledConnection(client.request.conn, connections=POOL_CONNECTIONS)
    return client


class TencentSms:
    """`SendSms` to one number; SessionContext carries our reference."""

    kind = "tencent_sms"

    def __init__(self, name: str, settings: ProviderSettings) -> None:
        from tencentcloud.sms.v20210111 import sms_client

        self.name = name
        self.settings = settings
        self._client = _lean_client(
            sms_client.SmsClient(
                _credential(settings),
                settings.region or "ap-guangzhou",
                _profile(settings, "sms.tencentcloudapi.com"),
            )
        )

    def send(self, message: TemplateMessage) -> Accepted:
        from tencentcloud.sms.v20210111 import models

        request = models.SendSmsRequest()
        request.PhoneNumberSet = [message.phone]
        request.SmsSdkAppId = self.settings.app_id
        request.SignName = self.settings.sign_name
        request.TemplateId = _template(self.settings, message)
        request.TemplateParamSet = _positional(
            message, self.settings.variable_max_chars or VARIABLE_MAX_CHARS
        )
        request.SessionContext = message.reference
        try:
            response = self._client.SendSms(request)
        except Exception as exc:  # TencentCloudSDKException, or a requests error inside it
            raise _sdk_error(message.channel, exc) from exc
        status = response.SendStatusSet[0] if response.SendStatusSet else None
        if status is None:
            raise ProviderError(message.channel, "empty SendStatusSet", action=Action.RETRY, code="empty")
        if status.Code != "Ok":
            raise refusal(message.channel, str(status.Code), str(status.Message))
        return Accepted(self.name, str(status.SerialNo), {"RequestId": response.RequestId})


class TencentVoice:
    """`SendTtsVoice`: the `call.<lang>` template read `play_times` times; the key pressed
    comes back in the `voicekey_callback` event."""

    kind = "tencent_voice"

    def __init__(self, name: str, settings: ProviderSettings) -> None:
        from tencentcloud.vms.v20200902 import vms_client

        self.name = name
        self.settings = settings
        self._client = _lean_client(
            vms_client.VmsClient(
                _credential(settings),
                settings.region or "ap-guangzhou",
                _profile(settings, "vms.tencentcloudapi.com"),
            )
        )

    def send(self, message: TemplateMessage) -> Accepted:
        from tencentcloud.vms.v20200902 import models

        request = models.SendTtsVoiceRequest()
        request.TemplateId = _template(self.settings, message)
        request.CalledNumber = message.phone
        request.VoiceSdkAppid = self.settings.app_id
        request.TemplateParamSet = _positional(
            message, self.settings.variable_max_chars or VARIABLE_MAX_CHARS
        )
        request.PlayTimes = self.settings.play_times
        request.SessionContext = message.reference
        try:
            response = self._client.SendTtsVoice(request)
        except Exception as exc:
            raise _sdk_error(message.channel, exc) from exc
        return Accepted(self.name, str(response.SendStatus.CallId), {"RequestId": response.RequestId})
