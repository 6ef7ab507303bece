"""The kept-alive json:// sender against Apprise's own json:// plugin, on a local HTTP receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lovekey.alerts.channels import AppriseSender, ChannelSender, Outgoing
from lovekey.alerts.webhook import KeepAliveJsonSender
from lovekey.bench.support.provider import FakeProvider, ProviderRequest
from lovekey.errors import DeliveryError
from tests.fix_alerts import shared_sender
from tests.fix_http import ScriptedServer

TITLE = "【LoveKey】王秀英 12小时未用水"
BODY = "幸福里3-2-101 王秀英 自 09:00 起未用水。请查看: https://lk.example/a/Xy_z-1"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
def apprise_sender() -> AppriseSender:
    return shared_sender(keepalive=False)._apprise


@pytest.fixture
def keepalive() -> Iterator[KeepAliveJsonSender]:
    sender = KeepAliveJsonSender(connections=4)
    yield sender
    sender.close()


def _only(fake: FakeProvider) -> ProviderRequest:
    received = fake.received()
    assert len(received) == 1
    fake.clear()
    return received[0]


# the URL forms a deployment uses: a plain webhook, an SMS gateway template once filled in,
# payload fields renamed, dropped and added, GET parameters, another method, credentials
URL_TAILS = [
    "hook/a",
    "sms/8613800000002?:to=%2B8613800000002&+Idempotency-Key=lovekey-7-sms",
    "gw/send?:message=content&:title=&:sign=LoveKey&-token=s3cr%26t&+X-Api-Key=k1",
    "gw/put?method=PUT&+Content-Type=application/json%3B%20charset=utf-8",
    "gw/slow?rto=2.5&cto=1&redirect=no",
]


@pytest.mark.parametrize("tail", URL_TAILS)
def test_same_request_as_apprise_json(
    fake: FakeProvider, apprise_sender: AppriseSender, keepalive: KeepAliveJsonSender, tail: str
) -> None:
    url = fake.url(tail)
    apprise_sender(Outgoing("push:0", url, TITLE, BODY))
    theirs = _only(fake)
    assert keepalive.send("push:0", url, TITLE, BODY) is True
    ours = _only(fake)

    assert (ours.method, ours.target) == (theirs.method, theirs.target)
    assert ours.raw == theirs.raw  # the JSON body, byte for byte
    assert ours.body == theirs.body
    names = {"user-agent", "content-type", "idempotency-key", "x-api-key", "authorization"}
    assert {k: v for k, v in ours.headers.items() if k in names} == {
        k: v for k, v in theirs.headers.items() if k in names
    }


def test_credentials_are_sent_as_basic_auth_like_apprise(
    fake: FakeProvider, apprise_sender: AppriseSender, keepalive: KeepAliveJsonSender
) -> None:
    url = f"json://gw%40user:p%40ss@127.0.0.1:{fake.port}/auth"
    apprise_sender(Outgoing("sms", url, TITLE, BODY))
    theirs = _only(fake)
    keepalive.send("sms", url, TITLE, BODY)
    ours = _only(fake)
    assert ours.headers["authorization"] == theirs.headers["authorization"]
    assert ours.headers["authorization"].startswith("Basic ")


def test_connections_are_kept_alive(fake: FakeProvider, keepalive: KeepAliveJsonSender) -> None:
    for i in range(20):
        assert keepalive.send("push:0", fake.url(f"hook/{i}"), TITLE, BODY)
    assert len(fake.received()) == 20
    assert fake.connections == 1


def test_apprise_opens_a_connection_per_message(fake: FakeProvider, apprise_sender: AppriseSender) -> None:
    # the reason for the kept-alive sender: Apprise's json:// connects anew every time
    for i in range(5):
        apprise_sender(Outgoing("push:0", fake.url(f"hook/{i}"), TITLE, BODY))
    assert fake.connections == 5


@pytest.mark.parametrize(
    "tail",
    ["hook?format=markdown", "hook?overflow=split", "hook?emojis=yes", "hook?tz=UTC"],
)
def test_arguments_it_does_not_mirror_go_through_apprise(
    fake: FakeProvider, keepalive: KeepAliveJsonSender, tail: str
) -> None:
    assert keepalive.send("push:0", fake.url(tail), TITLE, BODY) is False
    assert fake.received() == []
    sender = shared_sender(keepalive=True)
    sender(Outgoing("push:0", fake.url(tail), TITLE, BODY))  # Apprise delivers it instead
    assert len(fake.received()) == 1


def test_other_schemas_are_not_its(fake: FakeProvider, keepalive: KeepAliveJsonSender) -> None:
    assert keepalive.send("push:0", fake.url("hook", schema="form"), TITLE, BODY) is False
    assert keepalive.send("push:0", "ntfy://topic", TITLE, BODY) is False
    assert fake.received() == []


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (429, True), (408, True), (404, False), (401, False)],
)
def test_provider_errors_are_raised_with_the_status(
    fake: FakeProvider, keepalive: KeepAliveJsonSender, status: int, retryable: bool
) -> None:
    fake.script("hook", [status])
    with pytest.raises(DeliveryError) as info:
        keepalive.send("push:0", fake.url("hook"), TITLE, BODY)
    assert info.value.retryable is retryable
    assert f"error={status}" in info.value.detail
    assert keepalive.send("push:0", fake.url("hook"), TITLE, BODY)  # next answer is 200


@pytest.mark.parametrize("sender_kind", ["keepalive", "apprise"])
def test_a_provider_that_is_down_is_a_retryable_failure(sender_kind: str) -> None:
    with FakeProvider() as gone:
        url = gone.url("hook")
    sender: ChannelSender = shared_sender(keepalive=sender_kind == "keepalive")
    with pytest.raises(DeliveryError) as info:
        sender(Outgoing("push:0", url, TITLE, BODY))
    assert info.value.retryable


def test_invalid_urls_are_permanent_failures(keepalive: KeepAliveJsonSender) -> None:
    for url in ("json://", "json://127.0.0.1:1/x?method=TRACE", "json://127.0.0.1:1/x?rto=-1"):
        with pytest.raises(DeliveryError) as info:
            keepalive.send("push:0", url, TITLE, BODY)
        assert not info.value.retryable


def _answer(status: int, location: str | None = None) -> bytes:
    extra = f"Location: {location}\r\n".encode() if location else b""
    return b"HTTP/1.1 %d Moved\r\n%sContent-Length: 0\r\n\r\n" % (status, extra)


def _method_body(request: bytes) -> tuple[bytes, bytes, bytes]:
    head, _, body = request.partition(b"\r\n\r\n")
    method, target, _ = head.split(b"\r\n", 1)[0].split(b" ")
    return method, target, body


@pytest.mark.parametrize(
    ("status", "method_after", "keeps_body"),
    [
        (302, b"GET", False),
        (303, b"GET", False),
        (301, b"GET", False),
        (307, b"POST", True),
        (308, b"POST", True),
    ],
)
def test_redirects_are_followed_as_requests_follows_them_for_apprise(
    keepalive: KeepAliveJsonSender, status: int, method_after: bytes, keeps_body: bool
) -> None:
    server = ScriptedServer([_answer(status, "/final?x=1"), _answer(200)])
    try:
        assert keepalive.send("push:0", server.url("/hook").replace("http", "json", 1), TITLE, BODY)
    finally:
        server.close()
    (_, first), (_, second) = server.requests
    assert _method_body(first)[0] == b"POST"
    method, target, body = _method_body(second)
    assert (method, target) == (method_after, b"/final?x=1")
    assert (body == _method_body(first)[2]) is keeps_body
    assert (b"Content-Type: application/json" in second) is keeps_body


def test_a_redirect_is_a_failure_with_redirect_off_and_after_three_hops(
    keepalive: KeepAliveJsonSender,
) -> None:
    server = ScriptedServer([_answer(302, "/elsewhere")] + [_answer(307, f"/hop{i}") for i in range(4)])
    url = server.url("/hook").replace("http", "json", 1)
    try:
        with pytest.raises(DeliveryError, match="error=302"):
            keepalive.send("push:0", url + "?redirect=no", TITLE, BODY)
        assert len(server.requests) == 1
        with pytest.raises(DeliveryError, match="error=307"):
            keepalive.send("push:0", url, TITLE, BODY)
    finally:
        server.close()
    assert [_method_body(r)[1] for _, r in server.requests[1:]] == [b"/hook", b"/hop0", b"/hop1", b"/hop2"]


def test_credentials_do_not_follow_a_redirect_to_another_host(keepalive: KeepAliveJsonSender) -> None:
    other = ScriptedServer([_answer(200)])
    first = ScriptedServer([_answer(307, f"http://localhost:{other.port}/there")])
    try:
        url = f"json://user:pw@127.0.0.1:{first.port}/hook"
        assert keepalive.send("push:0", url, TITLE, BODY)
    finally:
        first.close()
        other.close()
    assert b"authorization: basic " in first.requests[0][1].lower()
    assert b"authorization" not in other.requests[0][1].lower()
    assert _method_body(other.requests[0][1])[2] == _method_body(first.requests[0][1])[2]
