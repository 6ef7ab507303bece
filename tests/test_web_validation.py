"""A request the console refuses as invalid (422) says which field and why, never what was
sent: an over-long password typed into the sign-in form must not come back in the answer
(nor be kept by a proxy or a browser that stores it). The console is served by uvicorn on
real PostgreSQL and spoken to over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from lovekey.bench.support.served_console import FakeClock, Served, served_console
from lovekey.config import load_settings
from tests.fix_web import T0, csrf_from_html

PASSWORD_TOO_LONG = "my-real-secret-" + "x" * 1100  # over the form's 1,024 characters


@pytest.fixture(scope="module")
def served(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served[FakeClock]]:
    settings = load_settings(
        environ={},
        database_url=database_url,
        data_dir=str(tmp_path_factory.mktemp("web")),
        web={"insecure_cookies": True},
        alerts={"ack_secret": "web-validation-secret-0123456789"},
    )
    with served_console(settings, database_url, FakeClock(T0)) as served:
        yield served


@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_an_over_long_password_is_refused_without_being_echoed(
    served: Served[FakeClock], accept: str
) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        token = csrf_from_html(client.get("/login").text)
        response = client.post(
            "/login",
            data={"username": "root", "password": PASSWORD_TOO_LONG, "csrf": token},
            headers={"accept": accept},
        )
    assert response.status_code == 422
    assert "my-real-secret" not in response.text
    assert "xxxxxxxx" not in response.text


def test_an_over_long_user_name_is_refused_without_being_echoed(served: Served[FakeClock]) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        token = csrf_from_html(client.get("/login").text)
        response = client.post(
            "/login", data={"username": "u" * 65 + "-typed-secret", "password": "p", "csrf": token}
        )
    assert response.status_code == 422
    assert "typed-secret" not in response.text
