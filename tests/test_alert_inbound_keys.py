"""An SMS reply that is a bare key ("1", "2") is never read as an alert's id.

"1" means "the newest alert I was sent" and "2" (to a check-in) "need help"; any other number
is an alert's short code. Alert ids 1 and 2 exist in every installation, so a neighbour who
holds the keys of two residents and answers "1" to the newest alert must acknowledge that
one, not alert #1 that reached them earlier. Real PostgreSQL, the real escalation and
dispatcher with the local fake SMS gateway, and `alerts.inbound.acknowledge_by_sms`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from lovekey.alerts.inbound import acknowledge_by_sms
from lovekey.alerts.store import get_alert
from lovekey.bench.support.provider import FakeProvider
from lovekey.bench.support.seeding import ContactSpec, seed_resident
from lovekey.config import Settings
from tests.fix_alerts import TEST_SECRET, DeliveryRig, at_local, delivery_rig

T0 = at_local("2025-03-01 09:00")
NEIGHBOUR = "+8613800000002"  # the family contact of R-1, and the love-key holder of R-2
TTL_S = 3 * 3600


@pytest.fixture
def rig(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[DeliveryRig]:
    with FakeProvider() as fake:
        settings = make_settings(
            database_url=database_url,
            alerts={
                "sms_url": fake.sms_template(),
                "public_base_url": "https://lk.example",
                "ack_secret": TEST_SECRET.decode(),
                "token_ttl_s": TTL_S,
            },
        )
        with delivery_rig(database_url, settings, fake) as rig:
            seed_resident(
                rig.conn,
                "R-2",
                name="赵大爷",
                contacts=[ContactSpec("love_key_holder", "王小明", phone=NEIGHBOUR)],
            )
            yield rig


def _status(rig: DeliveryRig, alert_id: int) -> str:
    alert = get_alert(rig.conn, alert_id)
    assert alert is not None
    return str(alert["status"])


def _reply(rig: DeliveryRig, text: str, minutes: int) -> int | None:
    return acknowledge_by_sms(
        rig.conn,
        NEIGHBOUR,
        text,
        T0 + timedelta(minutes=minutes),
        ttl_s=TTL_S,
        default_country_code="86",
    ).acknowledged


def test_a_reply_1_acknowledges_the_newest_alert_not_alert_number_1(rig: DeliveryRig) -> None:
    first = rig.raise_("low_usage", "R-1", T0)
    assert first == 1  # the identities start again with each test's tables
    rig.run(T0)
    rig.run(T0 + timedelta(minutes=10))  # R-1's family: the neighbour
    second = rig.raise_("low_usage", "R-2", T0 + timedelta(minutes=20))
    rig.run(T0 + timedelta(minutes=20))  # R-2's love-key holder: the same neighbour
    sent = rig.conn.execute(
        "SELECT alert_id FROM alert_outbox WHERE phone = %s AND state = 'sent' ORDER BY sent_at", (NEIGHBOUR,)
    ).fetchall()
    assert [a for (a,) in sent] == [first, second]

    assert _reply(rig, "1", 21) == second
    assert (_status(rig, second), _status(rig, first)) == ("acknowledged", "notified")


def test_a_reply_2_is_not_alert_number_2(rig: DeliveryRig) -> None:
    rig.raise_("smoke", "R-2", T0)  # alert #1, for another neighbour
    second = rig.raise_("low_usage", "R-1", T0)
    assert second == 2
    rig.run(T0)
    rig.run(T0 + timedelta(minutes=10))  # R-1's family: the neighbour, about alert #2
    # "2" from a contact is not a short code: it acknowledges nothing
    assert _reply(rig, "2", 11) is None
    assert _status(rig, second) == "notified"
    # written as a short code, "#2" names the alert
    assert _reply(rig, "#2", 12) == second
    assert _status(rig, second) == "acknowledged"
