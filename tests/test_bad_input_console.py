"""Bad input at the console (docs/bad-input.md, "Console"): what test_web_api.py does not send.
NUL characters and numbers past 64 bits (PostgreSQL cannot hold either: they were a 500 with
a traceback), off-site redirects after signing in, SQL and LIKE wildcards in the search box,
markup in names, out-of-range query values, malformed JSON bodies and forged session cookies.
The console is served by uvicorn on real PostgreSQL and spoken to over HTTP.
"""

from __future__ import annotations

import http.client
import logging
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from lovekey.bench.support.served_console import FakeClock, Served, served_console
from lovekey.config import Settings, load_settings
from lovekey.devices import apply_registry, parse_registry
from tests.fix_web import PASSWORD, T0, Seeded, csrf_from_html, seed, sign_in

MARKUP = "<script>alert(1)</script>"
BIG = "99999999999999999999"  # past bigint (9223372036854775807)


@pytest.fixture(scope="module")
def seeded(database_url: str) -> Seeded:
    result = seed(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        apply_registry(
            conn,
            parse_registry(
                "device_id,gateway_id,resident_id,kind,resident_name,address,community_id,grid_id\n"
                f'WM-X1,GW-A,R-X1,water_meter,"{MARKUP}","<img src=x onerror=alert(2)>",C-A,G-A1\n'
            ),
        )
    return result


@pytest.fixture(scope="module")
def served(database_url: str, seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings: Settings = load_settings(
        environ={},
        database_url=database_url,
        data_dir=str(tmp_path_factory.mktemp("web")),
        web={"insecure_cookies": True, "trusted_proxies": ["127.0.0.1"], "login_address_max_failures": 1000},
        alerts={"ack_secret": "bad-input-console-secret-0123456789"},
    )
    with served_console(settings, database_url, FakeClock(T0)) as served:
        yield served


@pytest.fixture
def root(served: Served) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        yield client, sign_in(client, "root", PASSWORD)


def alert_row(database_url: str, alert_id: int) -> tuple[object, ...] | None:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT status, outcome, outcome_note FROM alert WHERE id = %s", (alert_id,)
        ).fetchone()


def test_a_nul_character_is_a_400_not_a_500(
    served: Served, root: tuple[httpx.Client, str], seeded: Seeded, database_url: str
) -> None:
    client, csrf = root
    for path in (
        "/api/residents?q=%00",
        "/residents?q=Zh%00ang",
        "/api/residents/R-A1%00",
        "/residents/R%00",
    ):
        response = client.get(path)
        assert response.status_code == 400, path
        assert "Traceback" not in response.text
    alert_id = seeded.alerts["meter_silent:WM-A2"]
    before = alert_row(database_url, alert_id)
    note = client.post(
        f"/api/alerts/{alert_id}/resolve",
        headers={"x-csrf-token": csrf},
        json={"outcome": "false_data", "note": "loose\u0000battery"},
    )
    assert note.status_code == 400
    assert alert_row(database_url, alert_id) == before  # nothing half-done
    with httpx.Client(base_url=served.base_url, timeout=30) as stranger:
        token = csrf_from_html(stranger.get("/login").text)
        login = stranger.post("/login", data={"username": "ro\u0000ot", "password": "x y z w", "csrf": token})
        assert login.status_code == 400
        assert "lk_session" not in stranger.cookies
        sign_in(stranger, "root", PASSWORD)  # the console is fine afterwards


def test_a_number_past_64_bits_is_a_400_not_a_500(root: tuple[httpx.Client, str]) -> None:
    client, _ = root
    for path in (
        f"/queue?page={BIG}",
        f"/residents?page={BIG}",
        f"/api/alerts?offset={BIG}",
        f"/audit?before={BIG}",
    ):
        response = client.get(path)
        assert response.status_code == 400, path
    # an id that cannot exist is simply not found
    assert client.get(f"/api/alerts/{BIG}").status_code == 404
    assert client.get(f"/queue/{BIG}").status_code == 404


@pytest.mark.parametrize(
    "target",
    ["//evil.example/", "https://evil.example/", "/\\evil.example", "\\\\evil.example", "/\t/evil.example"],
)
def test_signing_in_never_sends_you_to_another_site(served: Served, target: str) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        token = csrf_from_html(client.get("/login").text)
        response = client.post(
            "/login", data={"username": "root", "password": PASSWORD, "csrf": token, "next": target}
        )
        assert response.status_code == 303
        location = response.headers["location"]
        assert location.startswith("/"), location
        assert not location.startswith("//"), location
        assert "\\" not in location
        assert "\t" not in location
        csrf = client.get("/api/me").json()["csrf_token"]
        language = client.post("/language", data={"language": "en", "csrf": csrf, "back": target})
        back = language.headers["location"]
        assert back.startswith("/"), back
        assert not back.startswith("//"), back
        assert "\t" not in back


def test_search_text_is_text_not_sql_nor_a_wildcard(root: tuple[httpx.Client, str]) -> None:
    client, _ = root
    for q in ("' OR 1=1 --", "%", "_", "\\", "R-A1' --"):
        response = client.get("/api/residents", params={"q": q})
        assert response.status_code == 200, q
        assert response.json()["residents"] == [], q
    assert client.get("/api/residents", params={"q": "x" * 101}).status_code == 422


def test_markup_in_a_name_is_shown_as_text(root: tuple[httpx.Client, str]) -> None:
    client, _ = root
    for path in ("/residents/R-X1", "/residents?q=script"):
        page = client.get(path).text
        assert MARKUP not in page, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
        assert "<img src=x" not in page
    assert client.get("/api/residents/R-X1").json()["resident"]["name"] == MARKUP  # kept as typed


def test_out_of_range_query_values_are_422(root: tuple[httpx.Client, str]) -> None:
    client, _ = root
    for path in (
        "/api/residents/R-A1/usage?days=0",
        "/api/residents/R-A1/usage?days=32",
        "/api/residents/R-A1/usage?days=abc",
        "/api/reports?months=999",
        "/api/alerts?limit=0",
        "/api/alerts?offset=-1",
        "/api/devices/health?limit=100000",
    ):
        assert client.get(path).status_code == 422, path


def test_malformed_bodies_change_nothing(
    root: tuple[httpx.Client, str], seeded: Seeded, database_url: str
) -> None:
    client, csrf = root
    headers = {"x-csrf-token": csrf}
    alert_id = seeded.alerts["low_usage:R-A1"]
    before = alert_row(database_url, alert_id)
    broken = client.post(
        f"/api/alerts/{alert_id}/resolve",
        headers={**headers, "content-type": "application/json"},
        content=b"{not json",
    )
    assert broken.status_code == 422
    unknown = client.post(f"/api/alerts/{alert_id}/resolve", headers=headers, json={"outcome": MARKUP})
    assert unknown.status_code == 409
    listed = client.post(f"/api/alerts/{alert_id}/resolve", headers=headers, json=["resident_ok"])
    assert listed.status_code == 422
    assert alert_row(database_url, alert_id) == before
    for body in ({"until": "soon", "reason": "x"}, {"until": "9999-12-31T23:59:59+00:00", "reason": "x"}):
        assert client.post("/api/residents/R-A1/absence", headers=headers, json=body).status_code == 422
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT status FROM resident WHERE id = 'R-A1'").fetchone() == ("active",)


def test_a_forged_or_foreign_session_cookie_is_not_signed_in(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        for cookie in ("A" * 43, "", "x" * 5000, "../../etc/passwd"):
            client.cookies.set("lk_session", cookie)
            response = client.get("/api/me")
            assert response.status_code == 401, cookie[:20]
    with httpx.Client(base_url=served.base_url, timeout=30) as other:
        token = csrf_from_html(other.get("/login").text)
        # a field over its cap is refused before anything is looked up
        long_name = other.post("/login", data={"username": "r" * 65, "password": "p", "csrf": token})
        long_password = other.post("/login", data={"username": "root", "password": "p" * 1025, "csrf": token})
        assert (long_name.status_code, long_password.status_code) == (422, 422)


def test_a_refused_path_cannot_forge_a_log_line(
    served: Served, root: tuple[httpx.Client, str], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = root
    caplog.set_level(logging.INFO, logger="lovekey.web")
    # http.client sends the path as given (httpx would tidy the encoded line break away)
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        connection.request(
            "GET", "/residents/R%0AERROR%20lovekey%20forged%00", headers={"cookie": _cookie_header(client)}
        )
        assert connection.getresponse().status == 400
    finally:
        connection.close()
    refused = [r.getMessage() for r in caplog.records if "cannot hold" in r.getMessage()]
    assert len(refused) == 1
    # one line holding the whole path: the break is dropped by URL parsing (urlsplit strips
    # line breaks) and anything else unprintable is escaped by the %r the line is logged with
    assert "\n" not in refused[0]
    assert "forged\\x00'" in refused[0]


def _cookie_header(client: httpx.Client) -> str:
    return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


def test_a_form_post_with_a_forged_csrf_token_is_refused(
    root: tuple[httpx.Client, str], seeded: Seeded, database_url: str
) -> None:
    # what tests/test_web_browser.py does in Chromium, over plain HTTP (that one skips
    # where no browser is installed)
    client, _ = root
    alert_id = seeded.alerts["sos:R-A2"]
    before = alert_row(database_url, alert_id)
    for path, form in (
        (f"/queue/{alert_id}/acknowledge", {"csrf": "forged-token"}),
        (f"/queue/{alert_id}/resolve", {"csrf": "", "outcome": "resident_ok"}),
        ("/residents/R-A2/absence", {"action": "set", "until": "2999-01-01T00:00", "reason": "x"}),
    ):
        assert client.post(path, data=form).status_code == 403, path
    assert alert_row(database_url, alert_id) == before
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT status FROM resident WHERE id = 'R-A2'").fetchone() == ("active",)


def test_static_paths_cannot_leave_the_static_folder(served: Served) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        for path in ("/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/%2e%2e/pyproject.toml"):
            connection.request("GET", path)  # sent as given: httpx would resolve the dots
            response = connection.getresponse()
            body = response.read()
            assert response.status == 404, path
            assert b"import" not in body, path
    finally:
        connection.close()


def test_a_huge_sign_in_form_and_the_wrong_methods_are_refused(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=60) as client:
        token = csrf_from_html(client.get("/login").text)
        huge = client.post("/login", data={"username": "u" * 5_000_000, "password": "p", "csrf": token})
        assert huge.status_code == 400  # the form parser stops a field at 1 MB
        assert "lk_session" not in client.cookies
        for method, path in (("PUT", "/login"), ("DELETE", "/queue"), ("PATCH", "/api/alerts/1/resolve")):
            assert client.request(method, path).status_code == 405, (method, path)
