"""Stand-ins for Alibaba Cloud and Tencent Cloud SMS/voice APIs, for `lovekey demo`, the
benchmarks and the tests: real HTTP servers on free local ports that the official SDKs are pointed at through
the providers' `endpoint` setting.

Faithful at the edge LoveKey touches:
- every request's signature is verified the way the provider does: Alibaba's V3 signature
  ACS3-HMAC-SHA256 (https://help.aliyun.com/document_detail/2593177.html: canonical request
  of method, path, sorted query, signed headers, payload hash; every x-acs-* header signed),
  Tencent's TC3-HMAC-SHA256 (signature v3: canonical request over content-type and host, a
  key derived from "TC3"+SecretKey, the date, the service and "tc3_request"; the SDK's
  `tencentcloud/common/abstract_client.py` builds the same). A bad signature gets the
  provider's error (`SignatureDoesNotMatch`, `AuthFailure.SignatureFailure`);
- answers have the documented shapes (SendSms: Code/Message/BizId/RequestId; IvrCall:
  Code/Message/CallId/RequestId, per the SDK models `SendSmsResponseBody` and
  `IvrCallResponseBody`; Tencent: `Response.SendStatusSet[]` / `Response.SendStatus` /
  `Response.Error`, per the SDK models) and the documented error codes;
- templates are checked (approved, signature, variables present, per-variable length), and
  the message a phone would receive is rendered ("【签名】" + template with the variables);
- callbacks (receipts, replies, key presses) are posted in the documented bodies to the URL
  the operator would paste into the provider's console (`alerts.providers.callbacks`).

`down = True` makes a stand-in drop every connection (a provider outage); `throttle(n)`
answers the next n sends with the provider's throttling code; `codes[phone] = code` refuses a
number with a given code; `hold_s` keeps a request waiting after it was accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import urllib3


@dataclass(frozen=True, slots=True)
class SentMessage:
    """What a provider accepted and would deliver."""

    provider: str  # 'aliyun' | 'tencent'
    kind: str  # 'sms' | 'voice'
    message_id: str
    phone: str  # as the API received it
    template: str
    params: dict[str, str] | list[str]
    rendered: str  # what the phone shows, or what the call reads
    reference: str  # OutId / SessionContext
    at: float = 0.0  # wall time the stand-in accepted it


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # a provider's API takes many connections at once; socketserver's default backlog of 5
    # dropped the SYNs of a burst's first connections, which the client resent a second later
    request_queue_size = 1024


class _CloudFake:
    name = ""
    content_type = "application/json"  # what the provider's API answers with

    def __init__(
        self,
        *,
        key_id: str,
        key_secret: str,
        sign_name: str,
        templates: dict[str, str],
        echo: Callable[[SentMessage], None] | None = None,
    ) -> None:
        self.key_id = key_id
        self.key_secret = key_secret
        self.sign_name = sign_name
        self.templates = dict(templates)  # approved templates: id -> text
        self.echo = echo  # the demo prints what a phone would receive
        self.down = False
        self.hold_s = 0.0
        self.codes: dict[str, str] = {}  # phone (as sent) -> error code to answer
        self.sent: list[SentMessage] = []
        self.refused: list[str] = []  # why requests were refused (signature, ...)
        self.requests = 0
        self.first_request_at: dict[str, float] = {}  # reference -> wall time it was accepted
        self._throttle = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        # its pushes (receipts, key presses) go out from several timer threads at once: a pool
        # of its own, not urllib3's shared one of a single connection per host
        self._pushes = urllib3.PoolManager(maxsize=8)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body leave in one write (flushed after each request), and without
            # Nagle: two small writes would wait for the client's delayed ACK (~40 ms)
            wbufsize = 1 << 16
            disable_nagle_algorithm = True

            fields: dict[str, str]  # the request's headers, names in lower case
            raw_requestline: bytes  # set by handle_one_request

            def log_message(self, *args: Any) -> None:
                pass

            def parse_request(self) -> bool:
                """The request line and headers as `BaseHTTPRequestHandler.parse_request`
                reads them, without its email parser, a third of the stand-in's CPU per
                request (the stand-in shares the benchmark's two cores with the worker).
                Header names are case-insensitive (RFC 9110), so they are kept in lower
                case; the signature checks read them the same way."""
                self.command, self.request_version = (
                    "",
                    "HTTP/1.0",
                )  # not 0.9: send_error writes a status line
                self.close_connection = True
                self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
                words = self.requestline.split()
                if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
                    self.send_error(400, "Bad request line")
                    return False
                self.command, self.path, self.request_version = words
                fields: dict[str, str] = {}
                for _ in range(100):  # http.client's limit on header lines
                    line = self.rfile.readline(65537)
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, colon, value = line.decode("iso-8859-1").partition(":")
                    if not colon or name != name.strip():
                        self.send_error(400, "Bad header line")
                        return False
                    fields[name.lower()] = value.strip()
                else:
                    self.send_error(431, "Too many headers")
                    return False
                self.fields = fields
                connection = fields.get("connection", "").lower()
                self.close_connection = connection == "close" or (
                    self.request_version == "HTTP/1.0" and connection != "keep-alive"
                )
                return True

            def do_POST(self) -> None:
                length = int(self.fields.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                if fake.down:
                    self.close_connection = True
                    self.connection.close()
                    return
                status, payload = fake._handle(self.command, self.path, self.fields, body)
                if fake.hold_s:  # accepted (or refused); the answer waits
                    time.sleep(fake.hold_s)
                data = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", fake.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name=f"fake-{self.name}"
        )

    def __enter__(self) -> _CloudFake:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._pushes.clear()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def throttle(self, n: int) -> None:
        with self._lock:
            self._throttle = n

    def _take_throttle(self) -> bool:
        with self._lock:
            if self._throttle > 0:
                self._throttle -= 1
                return True
            return False

    def _next_id(self) -> str:
        return f"{self.name}-{next(self._ids):08d}"

    def _accept(self, message: SentMessage) -> None:
        message = replace(message, at=time.time())
        with self._lock:
            self.sent.append(message)
            self.first_request_at.setdefault(message.reference, time.time())
        if self.echo is not None:
            self.echo(message)

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        raise NotImplementedError

    def sent_to(self, phone_digits: str) -> list[SentMessage]:
        return [m for m in self.sent if m.phone.lstrip("+").endswith(phone_digits)]

    def post(self, url: str, payload: Any) -> tuple[int, Any]:
        """Post a callback the way the provider's push does (JSON); (status, answer)."""
        data = json.dumps(payload, ensure_ascii=False).encode()
        response = self._pushes.request(
            "POST", url, body=data, headers={"Content-Type": "application/json"}, timeout=10.0
        )
        return response.status, json.loads(response.data or b"null")


# --- Alibaba Cloud ------------------------------------------------------------------------

_ACS3 = re.compile(r"^ACS3-HMAC-SHA256 Credential=([^,]+),SignedHeaders=([^,]+),Signature=([0-9a-f]+)$")
_ALIYUN_VAR = re.compile(r"\$\{(\w+)\}")
ALIYUN_VARIABLE_MAX_CHARS = 35  # https://help.aliyun.com/zh/document_detail/3041859.html


class FakeAliyun(_CloudFake):
    """dysmsapi `SendSms` and dyvmsapi `IvrCall` (both RPC style, ACS3-HMAC-SHA256)."""

    name = "aliyun"
    content_type = "application/json;charset=utf-8"

    def _verify(self, method: str, path: str, headers: dict[str, str], body: bytes) -> str | None:
        lower = {k.lower(): v for k, v in headers.items()}
        match = _ACS3.match(lower.get("authorization", ""))
        if match is None:
            return "IncompleteSignature"
        key_id, signed, signature = match.groups()
        if key_id != self.key_id:
            return "InvalidAccessKeyId.NotFound"
        names = signed.split(";")
        # every common x-acs-* header present, and host, must be signed
        if "host" not in names or any(h.startswith("x-acs-") and h not in names for h in lower):
            return "IncompleteSignature"
        if hashlib.sha256(body).hexdigest() != lower.get("x-acs-content-sha256"):
            return "SignatureDoesNotMatch"
        parts = urlsplit(path)
        query = sorted(parse_qsl(parts.query, keep_blank_values=True))
        canonical_query = "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in query)
        canonical_headers = "".join(f"{h}:{lower.get(h, '').strip()}\n" for h in names)
        canonical = "\n".join(
            [
                method,
                parts.path or "/",
                canonical_query,
                canonical_headers,
                signed,
                lower["x-acs-content-sha256"],
            ]
        )
        to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
        expected = hmac.new(self.key_secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return "SignatureDoesNotMatch"
        return None

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        self.requests += 1
        request_id = f"REQ-{next(self._ids)}"
        problem = self._verify(method, path, headers, body)
        if problem is not None:
            self.refused.append(problem)
            return 400, {
                "Code": problem,
                "Message": "Specified signature is not matched with our calculation.",
                "RequestId": request_id,
            }
        action = {k.lower(): v for k, v in headers.items()}.get("x-acs-action")
        q = dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))
        if action == "SendSms":
            return 200, self._send_sms(q, request_id)
        if action == "IvrCall":
            return 200, self._ivr_call(q, request_id)
        if action == "SendBatchSms":
            return 200, self._send_batch_sms(
                {**q, **dict(parse_qsl(body.decode(), keep_blank_values=True))}, request_id
            )
        if action == "QuerySendDetails":
            return 200, self._query_send_details(q, request_id)
        return 404, {"Code": "InvalidAction.NotFound", "Message": f"{action}", "RequestId": request_id}

    def _refusal(self, code: str, request_id: str) -> dict[str, Any]:
        return {"Code": code, "Message": code, "RequestId": request_id}

    def _render(
        self, template: str, params_json: str, request_id: str
    ) -> tuple[dict[str, str], str] | dict[str, Any]:
        text = self.templates.get(template)
        if text is None:
            return self._refusal("isv.SMS_TEMPLATE_ILLEGAL", request_id)
        try:
            params = json.loads(params_json or "{}")
        except ValueError:
            return self._refusal("isv.INVALID_JSON_PARAM", request_id)
        missing = [v for v in _ALIYUN_VAR.findall(text) if v not in params]
        if missing:
            return self._refusal("isv.TEMPLATE_MISSING_PARAMETERS", request_id)
        if any(len(str(v)) > ALIYUN_VARIABLE_MAX_CHARS for v in params.values()):
            return self._refusal("isv.PARAM_LENGTH_LIMIT", request_id)
        return params, _ALIYUN_VAR.sub(lambda m: str(params[m[1]]), text)

    def _send_sms(self, q: dict[str, str], request_id: str) -> dict[str, Any]:
        phone = q.get("PhoneNumbers", "")
        if phone in self.codes:
            return self._refusal(self.codes[phone], request_id)
        if not re.fullmatch(r"1\d{10}|\d{8,15}", phone):
            return self._refusal("isv.MOBILE_NUMBER_ILLEGAL", request_id)
        if q.get("SignName") != self.sign_name:
            return self._refusal("isv.SMS_SIGNATURE_ILLEGAL", request_id)
        rendered = self._render(q.get("TemplateCode", ""), q.get("TemplateParam", ""), request_id)
        if isinstance(rendered, dict):
            return rendered
        if self._take_throttle():
            return self._refusal("isv.BUSINESS_LIMIT_CONTROL", request_id)
        params, text = rendered
        biz_id = f"{next(self._ids)}^0"
        self._accept(
            SentMessage(
                "aliyun",
                "sms",
                biz_id,
                phone,
                q["TemplateCode"],
                params,
                f"【{self.sign_name}】{text}",
                q.get("OutId", ""),
            )
        )
        return {"Code": "OK", "Message": "OK", "BizId": biz_id, "RequestId": request_id}

    def _send_batch_sms(self, q: dict[str, str], request_id: str) -> dict[str, Any]:
        """SendBatchSms: numbers, signatures and variables as JSON arrays of equal length, one
        template; one BizId. A refused number refuses the whole request (the stand-in's reading
        of the API, which answers once per request)."""
        try:
            phones = json.loads(q.get("PhoneNumberJson", "[]"))
            signs = json.loads(q.get("SignNameJson", "[]"))
            params = json.loads(q.get("TemplateParamJson", "[]"))
        except ValueError:
            return self._refusal("isv.INVALID_JSON_PARAM", request_id)
        if not (len(phones) == len(signs) == len(params)) or not phones or len(phones) > 100:
            return self._refusal("isv.INVALID_PARAMETERS", request_id)
        for phone in phones:
            if phone in self.codes:
                return self._refusal(self.codes[phone], request_id)
            if not re.fullmatch(r"1\d{10}|\d{8,15}", phone):
                return self._refusal("isv.MOBILE_NUMBER_ILLEGAL", request_id)
        if any(sign != self.sign_name for sign in signs):
            return self._refusal("isv.SMS_SIGNATURE_ILLEGAL", request_id)
        rendered = [
            self._render(q.get("TemplateCode", ""), json.dumps(p, ensure_ascii=False), request_id)
            for p in params
        ]
        for r in rendered:
            if isinstance(r, dict):
                return r
        if self._take_throttle():
            return self._refusal("isv.BUSINESS_LIMIT_CONTROL", request_id)
        biz_id = f"{next(self._ids)}^0"
        for phone, r in zip(phones, rendered, strict=True):
            assert not isinstance(r, dict)
            variables, text = r
            self._accept(
                SentMessage(
                    "aliyun",
                    "sms",
                    biz_id,
                    phone,
                    q["TemplateCode"],
                    variables,
                    f"【{self.sign_name}】{text}",
                    q.get("OutId", ""),
                )
            )
        return {"Code": "OK", "Message": "OK", "BizId": biz_id, "RequestId": request_id}

    def _query_send_details(self, q: dict[str, str], request_id: str) -> dict[str, Any]:
        """The messages sent to one number on one day (China time), newest first; the shape of
        the SDK's QuerySendDetailsResponseBody."""
        china = timezone(timedelta(hours=8))
        day = q.get("SendDate", "")
        found = []
        for m in reversed(self.sent):
            at = datetime.fromtimestamp(self.first_request_at.get(m.reference, 0.0), china)
            if m.kind == "sms" and m.phone == q.get("PhoneNumber") and at.strftime("%Y%m%d") == day:
                found.append(
                    {
                        "PhoneNum": m.phone,
                        "SendStatus": 1,  # 1: waiting for the carrier's receipt
                        "ErrCode": "",
                        "TemplateCode": m.template,
                        "Content": m.rendered,
                        "SendDate": at.strftime("%Y-%m-%d %H:%M:%S"),
                        "ReceiveDate": "",
                        "OutId": m.reference,
                    }
                )
        size = int(q.get("PageSize") or 10)
        return {
            "Code": "OK",
            "Message": "OK",
            "RequestId": request_id,
            "TotalCount": str(len(found)),
            "SmsSendDetailDTOs": {"SmsSendDetailDTO": found[:size]},
        }

    def _ivr_call(self, q: dict[str, str], request_id: str) -> dict[str, Any]:
        phone = q.get("CalledNumber", "")
        if phone in self.codes:
            return self._refusal(self.codes[phone], request_id)
        if not re.fullmatch(r"1\d{10}", phone):
            return self._refusal("isv.MOBILE_NUMBER_ILLEGAL", request_id)
        rendered = self._render(q.get("StartCode", ""), q.get("StartTtsParams", ""), request_id)
        if isinstance(rendered, dict):
            return {
                **rendered,
                "Code": "isv.TTS_TEMPLATE_ILLEGAL"
                if rendered["Code"] == "isv.SMS_TEMPLATE_ILLEGAL"
                else rendered["Code"],
            }
        if self._take_throttle():
            return self._refusal("isv.BUSINESS_LIMIT_CONTROL", request_id)
        params, text = rendered
        call_id = f"{next(self._ids)}^{next(self._ids)}"
        plays = q.get("PlayTimes", "1")
        self._accept(
            SentMessage(
                "aliyun",
                "voice",
                call_id,
                phone,
                q["StartCode"],
                params,
                f"(call, read {plays}x) {text}",
                q.get("OutId", ""),
            )
        )
        return {"Code": "OK", "Message": "OK", "CallId": call_id, "RequestId": request_id}

    # callbacks, in the documented HTTP batch push bodies (alerts/providers/callbacks.py)
    def sms_report(
        self, url: str, message: SentMessage, *, success: bool = True, code: str = "DELIVERED"
    ) -> tuple[int, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        return self.post(
            url,
            [
                {
                    "phone_number": message.phone,
                    "send_time": now,
                    "report_time": now,
                    "success": success,
                    "err_code": code,
                    "err_msg": "用户接收成功" if success else "失败",
                    "sms_size": "1",
                    "biz_id": message.message_id,
                    "out_id": message.reference,
                }
            ],
        )

    def sms_up(self, url: str, phone: str, content: str) -> tuple[int, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        return self.post(
            url,
            [
                {
                    "phone_number": phone,
                    "content": content,
                    "send_time": now,
                    "dest_code": "1234",
                    "sequence_id": "1234567890",
                }
            ],
        )

    def voice_report(
        self, url: str, message: SentMessage, *, dtmf: str = "", answered: bool = True
    ) -> tuple[int, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        return self.post(
            url,
            [
                {
                    "status_code": "200000" if answered else "200005",
                    "callee": message.phone,
                    "ring_time": now,
                    "duration": "10" if answered else "0",
                    "voice_type": "voice",
                    "originate_time": now,
                    "b_start_time": now if answered else "",
                    "end_time": now,
                    "call_id": message.message_id,
                    "caller": "0571000000",
                    "status_msg": "执行完成",
                    "out_id": message.reference,
                    "dtmf": dtmf,
                    "toll_type": "LOCAL",
                }
            ],
        )


# --- Tencent Cloud ------------------------------------------------------------------------

_TC3 = re.compile(
    r"^TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/(\w+)/tc3_request,"
    r" SignedHeaders=([^,]+), Signature=([0-9a-f]+)$"
)
_TENCENT_VAR = re.compile(r"\{(\d+)\}")
TENCENT_VARIABLE_MAX_CHARS = 35  # the provider's limit for the account the tests stand for


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class FakeTencent(_CloudFake):
    """sms `SendSms` (2021-01-11) and vms `SendTtsVoice` (2020-09-02), TC3-HMAC-SHA256."""

    name = "tencent"

    def _verify(self, headers: dict[str, str], body: bytes) -> str | None:
        lower = {k.lower(): v for k, v in headers.items()}
        match = _TC3.match(lower.get("authorization", ""))
        if match is None:
            return "AuthFailure.InvalidAuthorization"
        key_id, date, service, signed, signature = match.groups()
        if key_id != self.key_id:
            return "AuthFailure.SecretIdNotFound"
        timestamp = int(lower.get("x-tc-timestamp", "0"))
        if abs(time.time() - timestamp) > 300:
            return "AuthFailure.SignatureExpire"
        if datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d") != date:
            return "AuthFailure.SignatureFailure"
        names = signed.split(";")
        canonical_headers = "".join(f"{h}:{lower.get(h, '')}\n" for h in names)
        canonical = "\n".join(["POST", "/", "", canonical_headers, signed, hashlib.sha256(body).hexdigest()])
        scope = f"{date}/{service}/tc3_request"
        to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = _hmac(_hmac(_hmac(("TC3" + self.key_secret).encode(), date), service), "tc3_request")
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return "AuthFailure.SignatureFailure"
        return None

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        self.requests += 1
        request_id = f"req-{next(self._ids)}"
        problem = self._verify(headers, body)
        if problem is not None:
            self.refused.append(problem)
            return 200, self._error(problem, request_id)
        action = {k.lower(): v for k, v in headers.items()}.get("x-tc-action")
        params = json.loads(body or b"{}")
        if action == "SendSms":
            return 200, self._send_sms(params, request_id)
        if action == "SendTtsVoice":
            return 200, self._send_tts(params, request_id)
        return 200, self._error("InvalidAction", request_id)

    @staticmethod
    def _error(code: str, request_id: str) -> dict[str, Any]:
        return {"Response": {"Error": {"Code": code, "Message": code}, "RequestId": request_id}}

    def _render(self, template: str, params: list[str]) -> str | None:
        text = self.templates.get(template)
        if text is None:
            return None
        return _TENCENT_VAR.sub(lambda m: params[int(m[1]) - 1] if int(m[1]) <= len(params) else m[0], text)

    def _template_error(self, template: str, params: list[str]) -> str | None:
        text = self.templates.get(template)
        if text is None:
            return "FailedOperation.TemplateIncorrectOrUnapproved"
        if len(set(_TENCENT_VAR.findall(text))) != len(params):
            return "FailedOperation.TemplateParamSetNotMatchApprovedTemplate"
        if any(len(p) > TENCENT_VARIABLE_MAX_CHARS for p in params):
            return "InvalidParameterValue.TemplateParameterLengthLimit"
        return None

    def _send_sms(self, p: dict[str, Any], request_id: str) -> dict[str, Any]:
        if p.get("SignName") != self.sign_name:
            return self._error("FailedOperation.SignatureIncorrectOrUnapproved", request_id)
        params = [str(v) for v in p.get("TemplateParamSet") or []]
        problem = self._template_error(str(p.get("TemplateId")), params)
        if problem is not None:
            return self._error(problem, request_id)
        phone = (p.get("PhoneNumberSet") or [""])[0]
        status = {
            "SerialNo": "",
            "PhoneNumber": phone,
            "Fee": 0,
            "SessionContext": p.get("SessionContext", ""),
            "IsoCode": "CN",
        }
        code = self.codes.get(phone)
        if code is None and not re.fullmatch(r"\+861\d{10}", phone):
            code = "InvalidParameterValue.IncorrectPhoneNumber"
        if code is None and self._take_throttle():
            code = "LimitExceeded.PhoneNumberThirtySecondLimit"
        if code is not None:
            status.update(Code=code, Message=code)
        else:
            serial = f"2433:{next(self._ids)}"
            status.update(SerialNo=serial, Fee=1, Code="Ok", Message="send success")
            self._accept(
                SentMessage(
                    "tencent",
                    "sms",
                    serial,
                    phone,
                    str(p["TemplateId"]),
                    params,
                    f"【{self.sign_name}】{self._render(str(p['TemplateId']), params)}",
                    str(p.get("SessionContext", "")),
                )
            )
        return {"Response": {"SendStatusSet": [status], "RequestId": request_id}}

    def _send_tts(self, p: dict[str, Any], request_id: str) -> dict[str, Any]:
        params = [str(v) for v in p.get("TemplateParamSet") or []]
        problem = self._template_error(str(p.get("TemplateId")), params)
        if problem is not None:
            return self._error(problem, request_id)
        phone = str(p.get("CalledNumber", ""))
        code = self.codes.get(phone)
        if code is None and not re.fullmatch(r"\+861\d{10}", phone):
            code = "InvalidParameterValue.CalledNumberVerifyFail"
        if code is None and self._take_throttle():
            code = "LimitExceeded.DeliveryFrequencyLimit"
        if code is not None:
            return self._error(code, request_id)
        call_id = f"call-{next(self._ids)}"
        self._accept(
            SentMessage(
                "tencent",
                "voice",
                call_id,
                phone,
                str(p["TemplateId"]),
                params,
                f"(call, read {p.get('PlayTimes', 2)}x) {self._render(str(p['TemplateId']), params)}",
                str(p.get("SessionContext", "")),
            )
        )
        return {
            "Response": {
                "SendStatus": {"CallId": call_id, "SessionContext": p.get("SessionContext", "")},
                "RequestId": request_id,
            }
        }

    @staticmethod
    def _split(phone: str) -> tuple[str, str]:
        digits = phone.lstrip("+")
        return digits[:2], digits[2:]

    def sms_status(
        self, url: str, message: SentMessage, *, success: bool = True, errmsg: str = "DELIVRD"
    ) -> tuple[int, Any]:
        nation, mobile = self._split(message.phone)
        return self.post(
            url,
            [
                {
                    "user_receive_time": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    "nationcode": nation,
                    "mobile": mobile,
                    "report_status": "SUCCESS" if success else "FAIL",
                    "errmsg": errmsg,
                    "description": "用户短信送达成功" if success else "失败",
                    "sid": message.message_id,
                }
            ],
        )

    def sms_reply(self, url: str, phone: str, text: str) -> tuple[int, Any]:
        nation, mobile = self._split(phone)
        return self.post(
            url,
            {
                "extend": "",
                "mobile": mobile,
                "nationcode": nation,
                "sign": self.sign_name,
                "text": text,
                "time": int(time.time()),
            },
        )

    def key_press(
        self, url: str, message: SentMessage, key: str, *, phone: str | None = None
    ) -> tuple[int, Any]:
        nation, mobile = self._split(phone or message.phone)
        return self.post(
            url,
            {
                "voicekey_callback": {
                    "call_from": "",
                    "callid": message.message_id,
                    "keypress": key,
                    "mobile": mobile,
                    "nationcode": nation,
                }
            },
        )

    def call_status(self, url: str, message: SentMessage, *, answered: bool = True) -> tuple[int, Any]:
        nation, mobile = self._split(message.phone)
        now = str(int(time.time()))
        return self.post(
            url,
            {
                "voiceprompt_callback": {
                    "result": "0" if answered else "1",
                    "accept_time": now,
                    "call_from": "",
                    "callid": message.message_id,
                    "end_calltime": now,
                    "fee": "1",
                    "mobile": mobile,
                    "nationcode": nation,
                    "start_calltime": now,
                }
            },
        )


# --- Feishu custom bot ----------------------------------------------------------------------


class FakeFeishu(_CloudFake):
    """A Feishu custom bot with "签名校验": POST /open-apis/bot/v2/hook/<token> must carry
    `timestamp` (within an hour) and `sign` = base64(HMAC-SHA256 keyed "<timestamp>\\n<secret>"
    over nothing), per https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot;
    otherwise code 19021."""

    name = "feishu"

    def __init__(self, *, token: str, secret: str) -> None:
        super().__init__(key_id=token, key_secret=secret, sign_name="", templates={})
        self.texts: list[str] = []

    @property
    def notify_url(self) -> str:
        return f"{self.endpoint}/open-apis/bot/v2/hook/{{token}}"

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        import base64

        self.requests += 1
        if path.rstrip("/") != f"/open-apis/bot/v2/hook/{self.key_id}":
            return 404, {
                "code": 19001,
                "data": {},
                "msg": "param invalid: incoming webhook access token invalid",
            }
        data = json.loads(body or b"{}")
        timestamp = str(data.get("timestamp", ""))
        expected = base64.b64encode(
            hmac.new(f"{timestamp}\n{self.key_secret}".encode(), b"", hashlib.sha256).digest()
        ).decode()
        if (
            not timestamp.isdigit()
            or abs(time.time() - int(timestamp)) > 3600
            or data.get("sign") != expected
        ):
            self.refused.append("19021")
            return 200, {
                "code": 19021,
                "data": {},
                "msg": "sign match fail or timestamp is not within one hour from current time",
            }
        self.texts.append(str(data.get("content", {}).get("text", "")))
        return 200, {"code": 0, "data": {}, "msg": "success"}
