"""The kept-alive HTTP/1.1 client of the provider calls (`alerts.keepalive`), against a real
socket server that answers with scripted bytes: framing, reuse, dropped connections, errors
and TLS."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lovekey.alerts.keepalive import KeepAlivePool, ProtocolError
from tests.fix_http import ScriptedServer


@pytest.fixture
def pool() -> Iterator[KeepAlivePool]:
    p = KeepAlivePool(maxsize=4)
    yield p
    p.clear()


def _ok(body: bytes = b'{"Code":"OK"}', extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def test_a_request_goes_out_as_given_and_the_connection_carries_the_next(pool: KeepAlivePool) -> None:
    server = ScriptedServer([_ok(b"first"), _ok(b"second")])
    try:
        first = pool.request(
            "POST",
            server.url("/v1?Action=SendSms&Sign=a%2Bb"),
            body=b'{"x":1}',
            headers={"Content-Type": "application/json", "X-TC-Action": "SendSms"},
            read_timeout_s=5,
        )
        second = pool.request("POST", server.url(), body=b"{}", read_timeout_s=5)
    finally:
        server.close()
    assert (first.status, first.reason, first.data, first.version) == (200, "OK", b"first", 11)
    assert first.headers["content-type"] == "application/json"  # any case
    assert first.headers.get("CONTENT-TYPE") == "application/json"
    assert second.data == b"second"
    assert [number for number, _ in server.requests] == [1, 1]  # one connection, kept
    assert server.requests[0][1] == (
        b"POST /v1?Action=SendSms&Sign=a%2Bb HTTP/1.1\r\n"
        b"Content-Type: application/json\r\nX-TC-Action: SendSms\r\n"
        + f"Host: 127.0.0.1:{server.port}\r\n".encode()
        + b'Content-Length: 7\r\n\r\n{"x":1}'
    )


def test_the_callers_host_header_is_sent_as_given(pool: KeepAlivePool) -> None:
    server = ScriptedServer([_ok()])
    try:
        pool.request("POST", server.url(), body=b"", headers={"Host": "sms.tencentcloudapi.com"})
    finally:
        server.close()
    head = server.requests[0][1]
    assert b"Host: sms.tencentcloudapi.com\r\n" in head
    assert head.count(b"Host:") == 1


def test_a_chunked_answer_is_joined_and_its_trailers_dropped(pool: KeepAlivePool) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    server = ScriptedServer([chunked, _ok(b"after")])
    try:
        first = pool.request("GET", server.url(), read_timeout_s=5)
        second = pool.request("GET", server.url(), read_timeout_s=5)
    finally:
        server.close()
    assert first.data == b"hello, world"
    assert second.data == b"after"
    assert server.connections == 1


def test_connection_close_and_http_1_0_are_not_reused(pool: KeepAlivePool) -> None:
    server = ScriptedServer(
        [
            _ok(b"closing", extra=b"Connection: close\r\n"),
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end",
            _ok(b"third"),
        ]
    )
    try:
        answers = [pool.request("GET", server.url(), read_timeout_s=5) for _ in range(3)]
    finally:
        server.close()
    assert [a.data for a in answers] == [b"closing", b"to the end", b"third"]
    assert answers[1].version == 10
    assert [number for number, _ in server.requests] == [1, 2, 3]


def test_an_idle_connection_the_server_closed_is_replaced_and_nothing_is_sent_twice(
    pool: KeepAlivePool,
) -> None:
    server = ScriptedServer([_ok(b"one"), _ok(b"two")])
    try:
        pool.request("POST", server.url(), body=b"1", read_timeout_s=5)
        server.drop_idle()  # the server's keep-alive timeout
        threading.Event().wait(0.2)
        answer = pool.request("POST", server.url(), body=b"2", read_timeout_s=5)
    finally:
        server.close()
    assert answer.data == b"two"
    assert [(n, r.rsplit(b"\r\n\r\n", 1)[1]) for n, r in server.requests] == [(1, b"1"), (2, b"2")]


def test_a_connection_lost_after_the_request_went_out_raises_and_is_not_retried(
    pool: KeepAlivePool,
) -> None:
    server = ScriptedServer([None])  # reads the request, closes without an answer
    try:
        with pytest.raises(ConnectionResetError):
            pool.request("POST", server.url(), body=b"once", read_timeout_s=5)
    finally:
        server.close()
    assert len(server.requests) == 1


def test_an_answer_cut_short_raises(pool: KeepAlivePool) -> None:
    server = ScriptedServer([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nshort"])
    try:
        with pytest.raises(ConnectionResetError):
            pool.request("GET", server.url(), read_timeout_s=5)
    finally:
        server.close()


def test_interim_answers_are_skipped_and_bodiless_answers_keep_the_connection(pool: KeepAlivePool) -> None:
    server = ScriptedServer(
        [
            b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(b"after continue"),
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",  # HEAD: the length, no body
            _ok(b"last"),
        ]
    )
    try:
        first = pool.request("POST", server.url(), body=b"x", read_timeout_s=5)
        empty = pool.request("DELETE", server.url(), read_timeout_s=5)
        head = pool.request("HEAD", server.url(), read_timeout_s=5)
        last = pool.request("GET", server.url(), read_timeout_s=5)
    finally:
        server.close()
    assert (first.status, first.data) == (200, b"after continue")
    assert (empty.status, empty.data) == (204, b"")
    assert (head.status, head.data, head.headers["Content-Length"]) == (200, b"", "9")
    assert last.data == b"last"
    assert server.connections == 1


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 OK 200\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1048577\r\n\r\n", "over"),  # not read at all
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100001\r\n", "over"),
        (b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * (1024 * 1024 + 1), "over"),
        (b"HTTP/1.1 200 OK\r\nX-Long: " + b"x" * (65 * 1024), "within"),
    ],
)
def test_a_malformed_answer_is_a_protocol_error(pool: KeepAlivePool, answer: bytes, complaint: str) -> None:
    server = ScriptedServer([answer])
    try:
        with pytest.raises(ProtocolError, match=complaint):
            pool.request("GET", server.url(), read_timeout_s=5)
    finally:
        server.close()


def test_a_slow_server_times_out() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) but never answers
    pool = KeepAlivePool()
    try:
        with pytest.raises(TimeoutError):
            pool.request("GET", f"http://127.0.0.1:{listener.getsockname()[1]}/", read_timeout_s=0.3)
    finally:
        listener.close()
        pool.clear()


def test_a_refused_connection_is_an_os_error(pool: KeepAlivePool) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(ConnectionRefusedError):
        pool.request("GET", f"http://127.0.0.1:{port}/", connect_timeout_s=2)


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(pool: KeepAlivePool) -> None:
    server = ScriptedServer([_ok()])
    try:
        with pytest.raises(ValueError, match="line break"):
            pool.request("GET", server.url(), headers={"X-Name": "a\r\nX-Injected: 1"})
    finally:
        server.close()
    assert server.requests == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_https_checks_the_certificate_against_the_bundle_given(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server = ScriptedServer([_ok(b"secure"), _ok(b"again")], tls=_server_tls(cert, key))
    trusting = KeepAlivePool(ca_certs=str(cert))
    default = KeepAlivePool()  # certifi's bundle: does not know this certificate
    try:
        assert trusting.request("POST", server.url(), body=b"{}", read_timeout_s=5).data == b"secure"
        assert trusting.request("POST", server.url(), body=b"{}", read_timeout_s=5).data == b"again"
        with pytest.raises(ssl.SSLCertVerificationError):
            default.request("POST", server.url(), body=b"{}", read_timeout_s=5)
    finally:
        trusting.clear()
        default.clear()
        server.close()
    assert [number for number, _ in server.requests] == [1, 1]


def test_verify_off_accepts_any_certificate(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server = ScriptedServer([_ok(b"unchecked")], tls=_server_tls(cert, key))
    pool = KeepAlivePool(verify=False)
    try:
        assert pool.request("GET", server.url(), read_timeout_s=5).data == b"unchecked"
    finally:
        pool.clear()
        server.close()
