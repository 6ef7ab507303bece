"""The console's alert page shows the check-in: the stage, when the resident was asked and what
they answered (real PostgreSQL, the console served by uvicorn, the fake SMS provider)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import psycopg
import pytest

from lovekey.alerts import check_in
from lovekey.alerts.chains import ChainBook
from lovekey.alerts.dispatch import DispatchContext, dispatch_once
from lovekey.alerts.escalation_pass import EscalationContext, escalate_once
from lovekey.alerts.store import AlertCandidate, raise_alerts
from lovekey.bench.support.provider import FakeProvider
from lovekey.bench.support.served_console import FakeClock, served_console
from lovekey.config import Settings, load_settings
from lovekey.vocabulary import CheckInAnswer
from tests.fix_alerts import TEST_SECRET, shared_sender
from tests.fix_web import PASSWORD, T0, seed, sign_in


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


def settings_for(database_url: str, data_dir: str, fake: FakeProvider) -> Settings:
    return load_settings(
        environ={},
        database_url=database_url,
        data_dir=data_dir,
        web={"insecure_cookies": True, "trusted_proxies": ["127.0.0.1"]},
        # the console fixtures' clock is the real one (T0): no quiet hours, so the check-in is
        # asked whatever the time of day the test runs at (it failed from 21:00 China time)
        alerts={
            "ack_secret": TEST_SECRET.decode(),
            "sms_url": fake.sms_template(),
            "check_in_quiet_start": "00:00",
            "check_in_quiet_end": "00:00",
        },
    )


def run(conn: psycopg.Connection, settings: Settings, now: object) -> None:
    ctx = EscalationContext(ChainBook.load(), settings.alerts, settings.zone)
    escalate_once(conn, ctx, now)  # type: ignore[arg-type]
    dispatch = DispatchContext(settings.alerts, settings.zone, TEST_SECRET, "test")
    with psycopg.connect(conn.info.dsn, autocommit=True) as log_conn:
        while dispatch_once(conn, log_conn, shared_sender(), dispatch, lambda: now).claimed:  # type: ignore[arg-type,return-value]
            pass


def test_the_alert_page_shows_the_check_in_and_its_answer(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, fake: FakeProvider
) -> None:
    seed(database_url)
    settings = settings_for(database_url, str(tmp_path_factory.mktemp("web")), fake)
    asked_at = T0 - timedelta(minutes=20)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE resident SET phone = '+8613600000001' WHERE id = 'R-A2'")
        with conn.transaction():
            (alert_id,) = raise_alerts(
                conn,
                [
                    AlertCandidate(
                        kind="routine_break",
                        subject="R-A2",
                        resident_id="R-A2",
                        device_id="WM-A2",
                        gateway_id="GW-A",
                        since=asked_at - timedelta(hours=3),
                        tier="check_in",
                    )
                ],
                asked_at,
            ).opened
        run(conn, settings, asked_at)
        # the seeded alerts escalate too; the check-in asks only the resident, once
        assert len(fake.received("sms/8613600000001")) == 1

        with (
            served_console(settings, database_url, FakeClock(T0)) as served,
            httpx.Client(base_url=served.base_url, timeout=30) as client,
        ):
            sign_in(client, "cs_a", PASSWORD)
            page = client.get(f"/queue/{alert_id}", headers={"Accept-Language": "en"}).text
            assert "Check-in: only the resident has been asked" in page
            assert "no answer yet" in page
            assert "dry for 180 min when asked" in page
            queue = client.get("/queue", headers={"Accept-Language": "en"}).text
            assert queue.count("Check-in: only the resident has been asked") == 1

            with conn.transaction():
                check_in.answer(conn, alert_id, CheckInAnswer.FINE, by="Wang Fang", channel="sms", now=T0)
            page = client.get(f"/queue/{alert_id}", headers={"Accept-Language": "en"}).text
            assert "answered: fine" in page
            assert "Resident is fine" in page  # the outcome: closed as resident_ok
            resident = client.get("/residents/R-A2", headers={"Accept-Language": "en"}).text
            assert "Check-in: answered: fine" in resident
            detail = client.get(f"/api/alerts/{alert_id}").json()
            assert (detail["stage"], detail["welfare_tier"]) == ("check_in", "check_in")
            assert (detail["check_in"]["answer"], detail["check_in"]["dry_minutes"]) == ("fine", 180)
