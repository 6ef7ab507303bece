"""Bad input at the acknowledgement pages and the inbound-SMS endpoint (docs/bad-input.md, "Ack
pages" and "SMS reply endpoint"): what test_alert_ack.py does not send. Unknown actions and
outcomes, a NUL character or a huge note, garbled and oversized tokens, markup in a name, and
SMS bodies that are not what a gateway sends. The stand-alone app (`lovekey alerts serve`) is
served by uvicorn on real PostgreSQL; deliveries go to the faithful FakeProvider.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import httpx
import pytest

from lovekey.alerts.ack_pages import create_app, inbound_signature
from lovekey.alerts.store import get_alert
from lovekey.bench.support.provider import FakeProvider
from lovekey.bench.support.seeding import seed_resident
from lovekey.config import Settings
from tests.fix_alerts import TEST_SECRET, DeliveryRig, at_local, delivery_rig, serve_app, standard_contacts

T0 = at_local("2025-03-01 09:00")
LINK = re.compile(r"https://lk\.example/a/([0-9a-z]+\.[0-9a-z]+\.[A-Za-z0-9_-]+)")
INBOUND = "inbound-secret-bad-input"
INBOUND_KEY = "inbound-hmac-key-for-bad-input"
MARKUP = "<script>alert(1)</script>"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def rig(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[DeliveryRig]:
    with FakeProvider() as fake:
        settings = make_settings(
            database_url=database_url,
            alerts={
                "sms_url": fake.sms_template(),
                "public_base_url": "https://lk.example",
                "ack_secret": TEST_SECRET.decode(),
                "inbound_sms_token": INBOUND,
                "inbound_sms_hmac_key": INBOUND_KEY,
                "token_ttl_s": 3600,
            },
        )
        with delivery_rig(database_url, settings, fake) as r:
            yield r


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


class SignedAsTheGateway(httpx.Auth):
    """Every request signed as the operator's SMS gateway signs the inbound webhook's: the bad
    bodies below must be refused for what they are, not for a missing signature."""

    requires_request_body = True

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        timestamp = str(int(self.clock.now.timestamp()))
        request.headers["X-LoveKey-Timestamp"] = timestamp
        request.headers["X-LoveKey-Signature"] = inbound_signature(INBOUND_KEY, timestamp, request.content)
        yield request


@pytest.fixture
def client(rig: DeliveryRig, database_url: str, clock: Clock) -> Iterator[httpx.Client]:
    with (
        serve_app(create_app(rig.settings, database_url, clock=clock)) as base_url,
        httpx.Client(base_url=base_url, timeout=30, auth=SignedAsTheGateway(clock)) as c,
    ):
        yield c


def first_token(rig: DeliveryRig) -> str:
    match = LINK.search(rig.fake.received("push/lkh")[0].message)
    assert match
    return match[1]


def state(rig: DeliveryRig, alert_id: int) -> tuple[object, ...]:
    alert = get_alert(rig.conn, alert_id)
    assert alert is not None
    return (alert["status"], alert["acknowledged_by"], alert["outcome"], alert["outcome_note"])


# ------------------------------------------------------------------------------ the link page


def test_an_unknown_action_or_outcome_changes_nothing(rig: DeliveryRig, client: httpx.Client) -> None:
    alert_id = rig.raise_("low_usage", "R-1", T0)
    rig.run(T0)
    token = first_token(rig)
    before = state(rig, alert_id)
    assert client.post(f"/a/{token}", data={"action": "delete"}).status_code == 400
    assert client.post(f"/a/{token}", data={}).status_code == 422  # no action at all
    refused = client.post(f"/a/{token}", data={"action": "resolve", "outcome": MARKUP})
    assert refused.status_code == 400
    assert MARKUP not in refused.text
    assert state(rig, alert_id) == before


def test_a_nul_character_in_the_note_is_a_400_and_changes_nothing(
    rig: DeliveryRig, client: httpx.Client
) -> None:
    alert_id = rig.raise_("low_usage", "R-1", T0)
    rig.run(T0)
    token = first_token(rig)
    before = state(rig, alert_id)
    response = client.post(f"/a/{token}", data={"action": "resolve", "outcome": "other", "note": "a\u0000b"})
    assert response.status_code == 400
    assert "Traceback" not in response.text
    assert state(rig, alert_id) == before
    assert client.get(f"/a/{token}").status_code == 200  # the page still works


def test_a_long_note_is_cut_to_2000_characters_and_a_huge_one_refused(
    rig: DeliveryRig, client: httpx.Client
) -> None:
    alert_id = rig.raise_("low_usage", "R-1", T0)
    rig.run(T0)
    token = first_token(rig)
    before = state(rig, alert_id)
    # 400,000 characters, 3.6 MB url-encoded: past the form parser's 1 MB a field
    huge = client.post(f"/a/{token}", data={"action": "resolve", "outcome": "other", "note": "很" * 400_000})
    assert huge.status_code == 400
    assert state(rig, alert_id) == before
    response = client.post(f"/a/{token}", data={"action": "resolve", "outcome": "other", "note": "很" * 5000})
    assert response.status_code == 303
    status, _, outcome, kept = state(rig, alert_id)
    assert (status, outcome, kept) == ("resolved", "other", "很" * 2000)


@pytest.mark.parametrize(
    "token",
    ["a.b", "1.2.3.4", "x" * 10_000, "%00.%00.%00", "../../etc/passwd", "1.zzzzzzzz.AAAA"],
    ids=["two parts", "four parts", "10000 characters", "NUL parts", "a path", "bad expiry"],
)
def test_a_garbled_token_is_refused_on_get_and_post(
    rig: DeliveryRig, client: httpx.Client, token: str
) -> None:
    alert_id = rig.raise_("low_usage", "R-1", T0)
    rig.run(T0)
    before = state(rig, alert_id)
    assert client.get(f"/a/{token}").status_code in (403, 404)
    assert client.post(f"/a/{token}", data={"action": "going"}).status_code in (403, 404)
    assert state(rig, alert_id) == before


def test_acting_on_a_resolved_alert_says_so_and_changes_nothing(
    rig: DeliveryRig, client: httpx.Client
) -> None:
    alert_id = rig.raise_("low_usage", "R-1", T0)
    rig.run(T0)
    token = first_token(rig)
    client.post(f"/a/{token}", data={"action": "fine"})
    resolved = state(rig, alert_id)
    for action in ("going", "help", "fine"):
        response = client.post(f"/a/{token}", data={"action": action}, follow_redirects=False)
        assert response.headers["location"].endswith("?done=already"), action
    assert state(rig, alert_id) == resolved
    assert [r.path for r in rig.fake.received()] == ["/push/lkh"]  # "help" told nobody more


def test_markup_in_the_residents_name_is_shown_as_text(rig: DeliveryRig, client: httpx.Client) -> None:
    seed_resident(rig.conn, "R-2", name=MARKUP, address="<b>1</b>", contacts=standard_contacts(rig.fake)[:1])
    rig.raise_("low_usage", "R-2", T0)
    rig.run(T0)
    page = client.get(f"/a/{first_token(rig)}")
    assert page.status_code == 200
    assert MARKUP not in page.text
    assert "&lt;script&gt;" in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none' holds


# ------------------------------------------------------------------------- the SMS endpoint


@pytest.fixture
def texted(rig: DeliveryRig, clock: Clock) -> int:
    """An alert whose SMS reached the family member +8613800000002."""
    alert_id = rig.raise_("low_usage", "R-1", T0)
    rig.run(T0)
    rig.run(T0 + timedelta(minutes=10))
    assert rig.fake.received("sms/8613800000002")
    clock.now = T0 + timedelta(minutes=12)
    return alert_id


def test_sms_bodies_that_are_not_a_reply_are_400(rig: DeliveryRig, client: httpx.Client, texted: int) -> None:
    path = f"/alerts/sms/{INBOUND}"
    json_type = {"content-type": "application/json"}
    for label, response in {
        "malformed JSON": client.post(path, content=b"{not json", headers=json_type),
        "a JSON list": client.post(path, json=[{"from": "+8613800000002", "text": "1"}]),
        "no sender": client.post(path, json={"text": "1"}),
        "no text": client.post(path, json={"from": "+8613800000002"}),
        "null text": client.post(path, json={"from": "+8613800000002", "text": None}),
        "sender as an object": client.post(path, json={"from": {"n": 1}, "text": "1"}),
        "an empty form": client.post(path, data={}),
    }.items():
        assert response.status_code == 400, label
    assert client.get(path).status_code == 405
    before = state(rig, texted)
    assert before[0] == "notified"


def test_sms_replies_that_name_no_alert_of_theirs_acknowledge_nothing(
    rig: DeliveryRig, client: httpx.Client, texted: int
) -> None:
    seed_resident(rig.conn, "R-2", name="赵大爷", contacts=standard_contacts(rig.fake)[:1])
    other = rig.raise_("low_usage", "R-2", T0 + timedelta(minutes=11))  # never texted to this phone
    path = f"/alerts/sms/{INBOUND}"
    results = {
        "another resident's alert by its code": client.post(
            path, json={"from": "+8613800000002", "text": f"#{other}"}
        ),
        "a code past 64 bits": client.post(path, json={"from": "+8613800000002", "text": "9" * 30}),
        "a twelve-digit code": client.post(path, json={"from": "+8613800000002", "text": "9" * 12}),
        "a sender with no digits": client.post(path, json={"from": "Mom", "text": "1"}),
        "a NUL character": client.post(path, json={"from": "+8613800000002\u0000", "text": "\u0000"}),
        "a megabyte of text": client.post(path, json={"from": "+8613800000002", "text": "好" * 1_000_000}),
    }
    for label, response in results.items():
        assert response.status_code == 200, label
        assert response.json()["acknowledged"] is None, label
        assert response.json()["result"] in ("no_alert", "not_understood"), label
    assert state(rig, texted)[0] == "notified"
    assert state(rig, other)[0] in ("open", "notified")
