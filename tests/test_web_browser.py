"""The console in headless Chromium (Debian's browser driven by Playwright), served by uvicorn
on real PostgreSQL: sign-in, role scoping, acknowledge and resolve, the usage chart measured
in a screenshot against the served numbers, CSRF rejection and session expiry.

Never downloads a browser: it uses /usr/bin/chromium. When that cannot start, every test
here is skipped with a reason that says the browser tests did NOT run.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from lovekey.bench.support.served_console import FakeClock, Served, served_console
from lovekey.config import Settings, load_settings
from tests.fix_web import PASSWORD, T0, Seeded, seed

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IDLE_S = 1800
BAR_RGB = (0x25, 0x63, 0xEB)  # console.js COLOURS.bar
BELOW_RGB = (0xFE, 0xF3, 0xC7)  # console.js COLOURS.below
WHITE = (255, 255, 255)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"BROWSER TESTS NOT RUN: playwright is not installed ({exc}); pip install playwright")
    if not CHROMIUM.exists():
        pytest.skip(f"BROWSER TESTS NOT RUN: {CHROMIUM} is missing; apt-get install -y chromium")
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Exception as exc:  # Playwright raises its own Error with the browser's output
            pytest.skip(f"BROWSER TESTS NOT RUN: {CHROMIUM} did not start: {exc}")
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def seeded(database_url: str) -> Seeded:
    return seed(database_url)


@pytest.fixture(scope="module")
def served(database_url: str, seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings: Settings = load_settings(
        environ={},
        database_url=database_url,
        data_dir=str(tmp_path_factory.mktemp("web")),
        web={"session_idle_s": IDLE_S, "insecure_cookies": True},  # plain HTTP on loopback
    )
    with served_console(settings, database_url, FakeClock(T0)) as served:
        yield served


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    """A fresh browser context (no cookies) in English, 1000 px wide, at T0."""
    served.clock.set(T0)
    context = browser.new_context(
        viewport={"width": 1000, "height": 900}, locale="en-US", base_url=served.base_url
    )
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()
        served.clock.set(T0)


def sign_in(page: Any, username: str, path: str = "/queue") -> None:
    page.goto(path)
    assert "/login" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")


def test_sign_in_and_see_the_queue_by_urgency(page: Any, seeded: Seeded) -> None:
    page.goto("/queue")
    assert page.inner_text("h1") == "Sign in"
    page.fill("input[name=username]", "cs_a")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert page.inner_text("#error") == "Wrong user name or password."
    sign_in(page, "cs_a")
    ids = [int(x) for x in page.locator("li.alert").evaluate_all("els => els.map(e => e.dataset.alertId)")]
    a = seeded.alerts
    assert ids == [a["sos:R-A2"], a["low_usage:R-A1"], a["meter_silent:WM-A2"]]
    low_usage = page.locator(f"li.alert[data-alert-id='{a['low_usage:R-A1']}']").inner_text()
    assert "Told 2 people in 2 round(s)" in low_usage
    assert "Zhang Min (Family), Li Na (Love-key holder)" in low_usage
    assert "CS_A" in page.inner_text("header")


def test_grid_worker_cannot_open_another_grids_resident(page: Any, seeded: Seeded) -> None:
    sign_in(page, "gw_a1", "/residents")
    listed = page.locator("#residents tbody tr").all_inner_texts()
    assert len(listed) == 1
    assert "R-A1" in listed[0]
    for path in ("/residents/R-A2", "/residents/R-B1", f"/queue/{seeded.alerts['sos:R-A2']}"):
        response = page.goto(path)
        assert response.status == 404, path
        assert page.inner_text("#error-status") == "404"
    for path in (
        "/api/residents/R-A2",
        "/api/residents/R-A2/usage",
        f"/api/alerts/{seeded.alerts['sos:R-A2']}",
    ):
        assert page.request.get(path).status == 404, path
    assert page.goto("/residents/R-A1").status == 200
    assert page.request.get("/api/residents/R-A1").status == 200


def test_acknowledge_then_resolve_with_an_outcome(page: Any, seeded: Seeded, database_url: str) -> None:
    alert_id = seeded.alerts["sos:R-A2"]
    sign_in(page, "cs_a")
    page.click(f"li.alert[data-alert-id='{alert_id}'] button")
    page.wait_for_url(f"**/queue/{alert_id}?notice=acknowledged")
    assert page.inner_text("#alert-status") == "Acknowledged"
    assert page.inner_text("#acknowledged-by").startswith("cs_a · console")
    assert page.locator("#ack-form").count() == 0
    page.select_option("#resolve-form select[name=outcome]", "needed_help")
    page.fill("#resolve-form textarea[name=note]", "fell in the kitchen, helped up")
    page.click("#resolve-form button")
    page.wait_for_url(f"**/queue/{alert_id}?notice=resolved")
    assert page.inner_text("#alert-status") == "Resolved"
    assert "Needed help — fell in the kitchen, helped up" in page.inner_text("#outcome")
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT status, acknowledged_by, ack_channel, outcome, outcome_note FROM alert WHERE id = %s",
            (alert_id,),
        ).fetchone()
        audited = conn.execute(
            "SELECT username, action FROM audit_log WHERE target = %s AND username = 'cs_a' ORDER BY id",
            (f"alert:{alert_id}",),
        ).fetchall()
    assert row == ("resolved", "cs_a", "console", "needed_help", "fell in the kitchen, helped up")
    assert audited == [("cs_a", "acknowledge"), ("cs_a", "resolve")]
    page.goto("/queue")
    assert page.locator(f"li.alert[data-alert-id='{alert_id}']").count() == 0


def test_usage_chart_bars_match_the_served_litres(page: Any, seeded: Seeded) -> None:
    sign_in(page, "gw_a1", "/residents/R-A1")
    chart = page.locator("#usage-chart[data-rendered='1']")
    chart.wait_for()
    data = page.request.get("/api/residents/R-A1/usage?days=7").json()
    geometry = chart.evaluate("c => Object.assign({}, c.dataset)")
    image = decode_png(chart.screenshot())
    left, bottom = int(geometry["plotLeft"]), int(geometry["plotBottom"])
    plot_height, pitch = int(geometry["plotHeight"]), float(geometry["pitch"])
    bar_width, y_max = int(geometry["barWidth"]), float(geometry["yMax"])
    assert image.shape[1] == int(geometry["cssWidth"])  # one canvas pixel per screen pixel
    usage = np.array(data["usage_l"])
    assert (usage > 0).sum() > 100

    measured = np.zeros(len(usage))
    for i in range(len(usage)):
        x = left + _js_round(i * pitch) + bar_width // 2
        column = image[bottom - plot_height : bottom, x, :3]
        measured[i] = np.all(np.abs(column.astype(int) - BAR_RGB) <= 12, axis=1).sum()
    # each bar's height in pixels is the served litres on the chart's scale...
    expected = np.array([_js_round(v / y_max * plot_height) for v in usage])
    assert np.abs(measured - expected).max() <= 1, np.flatnonzero(np.abs(measured - expected) > 1)
    # ...and, independently of the drawn scale, proportional to the served litres
    used = usage > 0
    k = (measured[used] * usage[used]).sum() / (usage[used] ** 2).sum()
    assert np.abs(measured[used] - k * usage[used]).max() <= 1.5
    assert np.all(measured[~used] == 0)
    # the rule: hours whose 12-hour window is below 10 L are shaded behind the bars
    below = np.array(data["below_rule"])
    assert below.any()
    top_row = bottom - plot_height + 2
    for i in range(len(usage)):
        x = left + _js_round(i * pitch) + bar_width // 2
        pixel = tuple(int(c) for c in image[top_row, x, :3])
        if usage[i] / y_max * plot_height < plot_height - 3:  # the bar does not reach the top
            assert _near(pixel, BELOW_RGB if below[i] else WHITE), (i, pixel)
    summary = page.inner_text("#usage-summary")
    assert f"{data['total_l']:.1f} L used in 7 days" in summary


def test_form_post_with_a_forged_csrf_token_is_refused(page: Any, seeded: Seeded, database_url: str) -> None:
    alert_id = seeded.alerts["smoke:R-B1"]
    sign_in(page, "cs_b", f"/queue/{alert_id}")
    page.evaluate("document.querySelector('#ack-form input[name=csrf]').value = 'forged-token'")
    with page.expect_response(f"**/queue/{alert_id}/acknowledge") as answer:
        page.click("#ack-form button")
    assert answer.value.status == 403
    assert page.inner_text("#error-status") == "403"
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT status FROM alert WHERE id = %s", (alert_id,)).fetchone() == ("open",)
        assert conn.execute(
            "SELECT username FROM audit_log WHERE action = 'csrf_rejected' AND target = %s",
            (f"/queue/{alert_id}/acknowledge",),
        ).fetchall() == [("cs_b",)]
    # the untouched form still works
    page.goto(f"/queue/{alert_id}")
    page.click("#ack-form button")
    page.wait_for_url(f"**/queue/{alert_id}?notice=acknowledged")


def test_an_expired_session_sends_you_to_sign_in_and_back(page: Any, served: Served) -> None:
    sign_in(page, "gw_a1", "/residents/R-A1")
    served.clock.advance(timedelta(seconds=IDLE_S - 60))
    assert page.goto("/residents/R-A1").status == 200
    served.clock.advance(timedelta(seconds=IDLE_S + 1))
    page.goto("/residents/R-A1")
    assert "/login" in page.url
    assert page.inner_text("#reason") == "Your session has expired. Please sign in again."
    assert page.request.get("/api/me").status == 401
    page.fill("input[name=username]", "gw_a1")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/residents/R-A1")
    assert page.inner_text("#resident-name").startswith("Zhang Wei")


def test_chinese_for_a_chinese_browser(browser: Any, served: Served) -> None:
    context = browser.new_context(locale="zh-CN", base_url=served.base_url)
    try:
        page = context.new_page()
        page.goto("/queue")
        assert page.inner_text("h1") == "登录"
        sign_in(page, "cs_b")
        assert page.inner_text("h1").startswith("待处理告警")
    finally:
        context.close()


# ----------------------------------------------------------------------------- helpers


def _js_round(value: float) -> int:
    """JavaScript's Math.round (halves go up), which the chart uses."""
    return math.floor(value + 0.5)


def _near(pixel: tuple[int, ...], rgb: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, rgb, strict=True))


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB(A) PNG (what Chromium's screenshots are) as a [height, width, channels] array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, bytearray()
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, interlace) == (8, 0)
            assert colour in (2, 6), colour
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    out = np.zeros((height, stride), dtype=np.int64)
    previous = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=start + 1).astype(np.int64)
        if kind == 0:  # None
            row = line
        elif kind == 1:  # Sub: running sum per channel
            row = np.cumsum(line.reshape(width, channels), axis=0).reshape(stride) % 256
        elif kind == 2:  # Up
            row = (line + previous) % 256
        else:  # Average or Paeth: byte by byte
            row = np.zeros(stride, dtype=np.int64)
            for i in range(stride):
                a = int(row[i - channels]) if i >= channels else 0
                b = int(previous[i])
                c = int(previous[i - channels]) if i >= channels else 0
                if kind == 3:
                    predictor = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                row[i] = (int(line[i]) + predictor) % 256
        out[y] = row
        previous = row
    return out.reshape(height, width, channels).astype(np.uint8)
