"""Alert test support (a pytest plugin): a rig that runs escalation and dispatch by hand with a
fake clock, the ack pages served on a free port, and community contacts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from lovekey.alerts.chains import ChainBook
from lovekey.alerts.channels import ChannelSender
from lovekey.alerts.dispatch import DispatchContext, DispatchReport, dispatch_once
from lovekey.alerts.escalation_pass import EscalationContext, escalate_once
from lovekey.alerts.store import AlertCandidate, raise_alerts
from lovekey.bench.support.provider import FakeProvider
from lovekey.bench.support.seeding import ContactSpec, seed_resident
from lovekey.config import Settings


def seed_community_contact(
    conn: psycopg.Connection[Any],
    role: str,
    name: str,
    *,
    community_id: str | None = "C-1",
    phone: str | None = None,
    push_url: str | None = None,
    position: int = 1,
) -> None:
    conn.execute(
        """
        INSERT INTO community_contact (community_id, role, position, name, phone, push_url)
        VALUES (%s, %s, %s, %s, %s, %s)
        """,
        (community_id, role, position, name, phone, push_url),
    )


def at_local(text: str, zone: str = "Asia/Shanghai") -> datetime:
    """'2025-03-01 08:00' in the given zone, as an aware datetime."""
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


# --- a rig that runs escalation and dispatch by hand, with a fake clock --------------------

# built once per process and kind (loading Apprise's plugins is slow)
_SENDERS: dict[bool, ChannelSender] = {}

TEST_SECRET = b"test-secret-0123456789abcdef"


def shared_sender(*, keepalive: bool = True) -> ChannelSender:
    """The worker's sender; `keepalive=False`: everything through Apprise."""
    if keepalive not in _SENDERS:
        _SENDERS[keepalive] = ChannelSender(keepalive=keepalive)
    return _SENDERS[keepalive]


@dataclass
class DeliveryRig:
    conn: psycopg.Connection[Any]
    log_conn: psycopg.Connection[Any]
    fake: FakeProvider
    settings: Settings
    escalation: EscalationContext
    dispatch: DispatchContext

    def run(self, now: datetime) -> DispatchReport:
        """One escalation pass, then dispatch until nothing more is due at `now`."""
        escalate_once(self.conn, self.escalation, now)
        total = DispatchReport()
        while True:
            report = dispatch_once(
                self.conn,
                self.log_conn,
                shared_sender(keepalive=self.settings.alerts.keepalive_webhooks),
                self.dispatch,
                lambda: now,
            )
            if not report.claimed:
                return total
            for name in total.__slots__:
                setattr(total, name, getattr(total, name) + getattr(report, name))

    def raise_(
        self,
        kind: str,
        resident: str,
        now: datetime,
        *,
        subject: str | None = None,
        device_id: str | None = None,
    ) -> int:
        with self.conn.transaction():
            result = raise_alerts(
                self.conn,
                [
                    AlertCandidate(
                        kind=kind,
                        subject=subject or resident,
                        resident_id=resident,
                        device_id=device_id,
                        gateway_id=None,
                        since=now - timedelta(hours=12),
                        details={},
                    )
                ],
                now,
            )
        return result.opened[0]


def standard_contacts(fake: FakeProvider) -> list[ContactSpec]:
    """A resident's contacts in every role: push for the neighbour, SMS for the rest."""
    return [
        ContactSpec("love_key_holder", "李阿姨", push_url=fake.url("push/lkh")),
        ContactSpec("family", "王小明", phone="+8613800000002"),
        ContactSpec("grid_worker", "张网格", push_url=fake.url("push/grid"), phone="+8613800000003"),
        ContactSpec("community_staff", "社区刘", phone="+8613800000004", language="en"),
        ContactSpec("emergency", "120", phone="+8613800000120"),
    ]


@contextmanager
def delivery_rig(database_url: str, settings: Settings, fake: FakeProvider) -> Iterator[DeliveryRig]:
    """Empty the alert and registry tables, seed resident R-1 with `standard_contacts`."""
    with (
        psycopg.connect(database_url, autocommit=True) as conn,
        psycopg.connect(database_url, autocommit=True) as log_conn,
    ):
        conn.execute(
            "TRUNCATE delivery_attempt, alert_outbox, alert_history, alert, contact,"
            " community_contact, water_reading, device, gateway, resident, household, grid,"
            " community"
            " RESTART IDENTITY CASCADE"
        )
        seed_resident(conn, "R-1", name="王秀英", address="幸福里3-2-101", contacts=standard_contacts(fake))
        yield DeliveryRig(
            conn,
            log_conn,
            fake,
            settings,
            EscalationContext(ChainBook.load(settings.alerts.chains_file), settings.alerts, settings.zone),
            DispatchContext(settings.alerts, settings.zone, TEST_SECRET, "test"),
        )


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free local port in a thread; yields its base URL."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
