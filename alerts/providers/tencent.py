"""Tencent Cloud SMS (sms 2021-01-11, `SendSms`) and voice messages (vms 2020-09-02,
`SendTtsVoice`) through the official SDKs (`tencentcloud-sdk-python-sms`, `-vms`).

The SDK signs every request with TC3-HMAC-SHA256 (signed headers `content-type;host`, the
JSON body's SHA-256, a key derived from the SecretKey, the date and the service name). A
template's variables are positional (`{1}`, `{2}`, ...): the parameters go in the order
LoveKey lists them for each message (docs/alerts.md).

Error codes: https://cloud.tencent.com/document/api/382/59177 (SMS send errors; a
refusal for one number comes back in `SendStatusSet[].Code`, a refusal of the whole request
as `Response.Error.Code`) and the VMS error codes in `tencentcloud/vms/v20200902/errorcodes.py`.
"""

from __future__ import annotations

from typing import Any

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


class TencentSms:
    """`SendSms` to one number; SessionContext carries our reference."""

    kind = "tencent_sms"

    def __init__(self, name: str, settings: ProviderSettings) -> None:
        from tencentcloud.sms.v20210111 import sms_client

        self.name = name
        self.settings = settings
        self._client = sms_client.SmsClient(
            _credential(settings),
            settings.region or "ap-guangzhou",
            _profile(settings, "sms.tencentcloudapi.com"),
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
        self._client = vms_client.VmsClient(
            _credential(settings),
            settings.region or "ap-guangzhou",
            _profile(settings, "vms.tencentcloudapi.com"),
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
