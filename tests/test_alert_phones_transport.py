"""How the official SDKs' requests travel: built, signed and parsed by the SDKs, sent over
kept-alive connections (`alerts.keepalive`) instead of the SDKs' requests sessions (docs/alerts.md, "Speed"),
with the proxy and answers the SDKs expect, to stand-ins that verify every signature and read
the request the way an HTTP server does."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from lovekey.alerts.providers import PROVIDERS, Accepted, ProviderError, TemplateMessage
from lovekey.alerts.providers.standins import FakeAliyun, FakeTencent
from lovekey.config import ProviderSettings

KEY_ID, KEY_SECRET = "transport-key-id", "transport-key-secret"
TENCENT_TEMPLATES = {
    "9001": "{1}{2}（{3}起），请查看：https://lk.example/a/{4}",
    "9002": "{1}{2}。请按1或2。",
}
ALIYUN_TEMPLATES = {
    "SMS_900001": "${name}${what}（${since}起），请查看：https://lk.example/a/${link}",
    "TTS_900001": "${name}${what}。请按1或2。",
}
SMS_PARAMS = {"name": "王阿姨", "what": "今天没有用水", "since": "08:00", "link": "tok123"}
CALL_PARAMS = {"name": "王阿姨", "what": "今天没有用水"}


def _provider(kind: str, endpoint: str, **extra: Any) -> Any:
    settings = ProviderSettings(
        kind=kind,
        access_key_id=KEY_ID,
        access_key_secret=KEY_SECRET,
        endpoint=endpoint,
        sign_name="爱心钥匙",
        **extra,
    )
    return PROVIDERS[kind]("cloud", settings)


def _tencent_sms(endpoint: str) -> Any:
    return _provider("tencent_sms", endpoint, app_id="1400000001", templates={"alert.zh": "9001"})


def _sms(i: int) -> TemplateMessage:
    return TemplateMessage("sms@cloud", f"+86139{i:08d}", "alert.zh", SMS_PARAMS, f"lk{i}")


@pytest.fixture
def tencent() -> Iterator[FakeTencent]:
    with FakeTencent(
        key_id=KEY_ID, key_secret=KEY_SECRET, sign_name="爱心钥匙", templates=TENCENT_TEMPLATES
    ) as fake:
        yield fake


@pytest.fixture
def aliyun() -> Iterator[FakeAliyun]:
    with FakeAliyun(
        key_id=KEY_ID, key_secret=KEY_SECRET, sign_name="爱心钥匙", templates=ALIYUN_TEMPLATES
    ) as fake:
        yield fake


class _CountingEnviron(dict[str, str]):
    """os.environ that counts how often it is walked (iterated, or its items listed)."""

    walks = 0

    def __iter__(self) -> Iterator[str]:
        type(self).walks += 1
        return super().__iter__()

    def items(self) -> Any:
        type(self).walks += 1
        return super().items()


def test_tencent_sends_do_not_walk_the_environment_per_request(
    tencent: FakeTencent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK reads its proxy once, when the client is built; requests' session walked
    os.environ twice more on every request (a quarter of the SDK's CPU per message)."""
    provider = _tencent_sms(tencent.endpoint)
    monkeypatch.setattr(os, "environ", _CountingEnviron(os.environ))
    _CountingEnviron.walks = 0
    accepted = [provider.send(_sms(i)) for i in range(3)]
    assert _CountingEnviron.walks == 0
    assert [a.message_id for a in accepted] == [m.message_id for m in tencent.sent]
    assert [m.reference for m in tencent.sent] == ["lk0", "lk1", "lk2"]
    assert tencent.refused == []


def test_tencent_keeps_the_proxy_the_sdk_chose(tencent: FakeTencent, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's HTTP(S)_PROXY, read by the SDK when the client is built, still carries
    the requests: here the stand-in is the proxy, and the signed Host is the real API's."""
    monkeypatch.setenv("HTTP_PROXY", tencent.endpoint)
    provider = _tencent_sms("http://sms.tencentcloudapi.invalid")
    accepted = provider.send(_sms(7))
    (sent,) = tencent.sent
    assert (accepted.message_id, sent.phone, sent.reference) == (sent.message_id, "+8613900000007", "lk7")
    assert tencent.refused == []


def test_tencent_unreachable_is_the_next_channel(tencent: FakeTencent) -> None:
    provider = _tencent_sms(tencent.endpoint)
    tencent.down = True
    with pytest.raises(ProviderError) as caught:
        provider.send(_sms(1))
    assert caught.value.code == "unreachable"
    tencent.down = False
    assert isinstance(provider.send(_sms(2)), Accepted)  # a fresh connection after the drop


def test_tencent_refusal_keeps_the_sdk_error_code(tencent: FakeTencent) -> None:
    """The SDK still parses the answer: an error body becomes its exception, and its code ours."""
    provider = _provider("tencent_sms", tencent.endpoint, app_id="1400000001", templates={"alert.zh": "4040"})
    with pytest.raises(ProviderError) as caught:
        provider.send(_sms(1))
    assert caught.value.code == "FailedOperation.TemplateIncorrectOrUnapproved"
    assert caught.value.operator


def test_tencent_voice_through_the_pool(tencent: FakeTencent) -> None:
    provider = _provider(
        "tencent_voice", tencent.endpoint, app_id="1400000002", templates={"call.zh": "9002"}
    )
    accepted = provider.send(TemplateMessage("voice@cloud", "+8613900000001", "call.zh", CALL_PARAMS, "lk1"))
    (call,) = tencent.sent
    assert (call.kind, call.message_id, call.reference) == ("voice", accepted.message_id, "lk1")
    assert tencent.refused == []


def test_aliyun_requests_go_through_the_pooled_session(aliyun: FakeAliyun) -> None:
    """darabonba keeps one requests session per host; LoveKey's pooled session takes its
    place under the same key, so every SendSms and IvrCall is sent by it (if darabonba's
    key changed, requests would silently be back, and this fails)."""
    from darabonba.core import DaraCore

    from lovekey.alerts.providers.aliyun import PooledSession

    sms = _provider("aliyun_sms", aliyun.endpoint, templates={"alert.zh": "SMS_900001"})
    voice = _provider(
        "aliyun_voice", aliyun.endpoint, caller_number="057100000000", templates={"call.zh": "TTS_900001"}
    )
    sessions = [s for s in DaraCore._sessions.values() if isinstance(s, PooledSession)]
    before = sum(s.requests_sent for s in sessions), sum(s.light_requests_sent for s in sessions)
    sms.send(_sms(1))
    voice.send(TemplateMessage("voice@cloud", "+8613900000002", "call.zh", CALL_PARAMS, "lk2"))
    assert sum(s.requests_sent for s in sessions) - before[0] == 2
    assert sum(s.light_requests_sent for s in sessions) - before[1] == 2  # prepared lightly
    assert [(m.kind, m.reference) for m in aliyun.sent] == [("sms", "lk1"), ("voice", "lk2")]
    assert aliyun.refused == []


def test_aliyun_requests_are_prepared_lightly_only_for_its_own_hosts(aliyun: FakeAliyun) -> None:
    """darabonba's request preparation, replaced for the provider hosts only: the light
    request keeps method, URL, headers and body as the SDK made them; any other host is
    prepared by requests, and a light request completed for a real session is what requests
    would have made."""
    import darabonba.core
    import requests

    from lovekey.alerts.providers.aliyun import _complete

    _provider("aliyun_sms", aliyun.endpoint, templates={"alert.zh": "SMS_900001"})
    prepared = darabonba.core.PreparedRequest
    query = "?Action=SendSms&TemplateParam=%7B%22name%22%3A%22%E7%8E%8B%22%7D"
    headers = {"host": "dysmsapi.aliyuncs.com", "x-acs-action": "SendSms"}

    light = prepared()
    light.prepare(method="post", url=aliyun.endpoint + "/" + query, headers=headers, data=b"{}")
    assert light.light is not None
    assert (light.method, light.url, light.body) == ("POST", aliyun.endpoint + "/" + query, b"{}")
    assert light.headers["X-ACS-Action"] == "SendSms"

    full = _complete(light)
    expected = requests.PreparedRequest()
    expected.prepare(method="post", url=aliyun.endpoint + "/" + query, headers=headers, data=b"{}")
    assert type(full) is requests.PreparedRequest
    assert (full.method, full.url, full.body, dict(full.headers)) == (
        expected.method,
        expected.url,
        expected.body,
        dict(expected.headers),
    )

    other = prepared()
    other.prepare(method="get", url="http://Example.COM/a b", headers={"x": "1"})
    assert other.light is None
    assert other.url == "http://example.com/a%20b"  # requests' own preparation
    with pytest.raises(requests.exceptions.InvalidHeader):
        prepared().prepare(method="post", url=aliyun.endpoint + "/", headers={"x": "a\nb"}, data=b"")


def test_aliyun_through_a_proxy_goes_as_before(aliyun: FakeAliyun, monkeypatch: pytest.MonkeyPatch) -> None:
    """darabonba reads HTTP(S)_PROXY on every request and passes it on: such a request goes
    through a real requests session, as it did; the stand-in is the proxy here."""
    monkeypatch.setenv("HTTP_PROXY", aliyun.endpoint)
    sms = _provider("aliyun_sms", "http://dysmsapi.aliyuncs.invalid", templates={"alert.zh": "SMS_900001"})
    sms.send(_sms(3))
    assert [(m.phone, m.reference) for m in aliyun.sent] == [("13900000003", "lk3")]
    assert aliyun.refused == []


def test_aliyun_unreachable_is_the_next_channel(aliyun: FakeAliyun) -> None:
    sms = _provider("aliyun_sms", aliyun.endpoint, templates={"alert.zh": "SMS_900001"}, timeout_s=2)
    aliyun.down = True
    with pytest.raises(ProviderError) as caught:
        sms.send(_sms(1))
    assert caught.value.code == "unreachable"


def _exchange(endpoint: str, request: bytes) -> bytes:
    """Send raw bytes, read the answer until the stand-in closes the connection."""
    host, port = endpoint.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(4096):  # times out (fails) if the connection stays open
            answer += chunk
    return answer


def test_stand_in_reads_requests_as_an_http_server_does(tencent: FakeTencent) -> None:
    # header names in any case; "Connection: close" is honoured (the read ends)
    answer = _exchange(
        tencent.endpoint,
        b"POST / HTTP/1.1\r\nHOST: x\r\ncontent-TYPE: application/json\r\nConnection: close\r\n"
        b"Content-Length: 2\r\n\r\n{}",
    )
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"AuthFailure.InvalidAuthorization" in answer  # unsigned: the provider's refusal
    # a request line without a version, and a header line without a colon: 400
    assert _exchange(tencent.endpoint, b"POST /\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert _exchange(tencent.endpoint, b"POST / HTTP/1.1\r\nno colon\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert tencent.refused == ["AuthFailure.InvalidAuthorization"]


def test_the_worker_builds_its_providers_before_the_first_burst_and_survives_a_broken_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`ProviderBook.build_all` (called at worker start): importing an SDK and building its
    client would otherwise hold up the first message of a burst in each process."""
    from lovekey.alerts.providers import ProviderBook

    built: list[str] = []

    def counting(name: str, settings: ProviderSettings) -> Any:
        built.append(name)
        return object()

    def broken(name: str, settings: ProviderSettings) -> Any:
        raise RuntimeError("no SDK here")

    monkeypatch.setitem(PROVIDERS, "tencent_sms", counting)
    monkeypatch.setitem(PROVIDERS, "aliyun_voice", broken)
    book = ProviderBook(
        {
            "sms": ProviderSettings(kind="tencent_sms"),
            "voice": ProviderSettings(kind="aliyun_voice"),
        }
    )
    with caplog.at_level("ERROR", logger="lovekey.alerts.providers"):
        book.build_all()
    assert built == ["sms"]
    assert "provider voice could not be built: RuntimeError: no SDK here" in caplog.text
    first = book.get("sms")
    assert book.get("sms") is first
    assert built == ["sms"]  # built once, at build_all
    # tried again when a message needs it; still broken: an operator error, the next channel
    with pytest.raises(ProviderError) as caught:
        book.send(TemplateMessage("voice@voice", "+8613900000001", "call.zh", CALL_PARAMS, "lk1"))
    assert caught.value.operator
    assert caught.value.code == "lovekey.PROVIDER_BROKEN"
    assert "no SDK here" in caught.value.detail
    assert book.batch_max("voice@voice") == 1


def test_the_standin_pushes_from_several_threads_without_dropping_connections(
    aliyun: FakeAliyun, caplog: pytest.LogCaptureFixture
) -> None:
    """The demo's stand-in pushes key presses and call reports from a timer thread each; on
    urllib3's shared pool (one connection per host) the concurrent pushes each logged
    "Connection pool is full, discarding connection"."""

    class Callback(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"code": 0}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Callback)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/callback"
    answers: list[int] = []
    try:
        with caplog.at_level("WARNING", logger="urllib3"):
            for _ in range(3):  # rounds of pushes at once, over connections kept from before
                pushes = [
                    threading.Thread(target=lambda: answers.append(aliyun.post(url, {})[0])) for _ in range(6)
                ]
                for push in pushes:
                    push.start()
                for push in pushes:
                    push.join()
    finally:
        server.shutdown()
        server.server_close()
    assert answers == [200] * 18
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
