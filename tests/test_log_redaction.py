"""Redaction is a property of the logging pipeline: whatever logger a line comes from (LoveKey's,
Apprise's, urllib3's, ...), the handlers `configure_logging` installs mask phone numbers,
ack-link tokens and credentials; LoveKey's own lines name ids, never a resident."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from lovekey.bench.support.provider import FakeProvider
from lovekey.config import Settings
from lovekey.logs import configure_logging
from lovekey.redact import redact_log_text
from tests.fix_alerts import DeliveryRig, at_local, delivery_rig

T0 = at_local("2025-03-01 09:00")

# what the delivery fixture knows about the resident and her contacts (tests/fix_alerts.py)
NAMES = ["王秀英", "幸福里3-2-101", "李阿姨", "王小明", "张网格", "社区刘"]
PHONES = ["13800000002", "13800000003", "13800000004"]


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """The entry point's logging at DEBUG, its handler writing to a buffer; restored after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("DEBUG")
    buffer = io.StringIO()
    for handler in root.handlers:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


@pytest.fixture(params=[True, False], ids=["keepalive", "apprise"])
def world(
    request: pytest.FixtureRequest, database_url: str, make_settings: Callable[..., Settings]
) -> Iterator[DeliveryRig]:
    with FakeProvider() as fake:
        settings = make_settings(
            database_url=database_url,
            alerts={
                "sms_url": fake.sms_template(),
                "public_base_url": "https://lk.example",
                "keepalive_webhooks": request.param,
            },
        )
        with delivery_rig(database_url, settings, fake) as rig:
            yield rig


def test_a_delivery_at_debug_logs_ids_but_no_phone_token_or_name(
    world: DeliveryRig, debug_log: io.StringIO
) -> None:
    alert_id = world.raise_("low_usage", "R-1", T0)
    world.run(T0)  # the neighbour, by push
    world.run(T0 + timedelta(minutes=10))  # family by SMS, grid worker
    received = world.fake.received()
    assert len(received) == 3
    tokens = {m[1] for r in received for m in re.finditer(r"/a/([\w.\-]+)", r.message)}
    assert tokens

    text = debug_log.getvalue()
    assert text  # DEBUG lines were written
    for secret in [*PHONES, *tokens, *NAMES]:
        assert secret not in text, f"{secret!r} in the log:\n{text}"
    outbox_ids = [r[0] for r in world.conn.execute("SELECT id FROM alert_outbox WHERE state = 'sent'")]
    assert re.search(rf"\balert={alert_id}\b", text), text
    for outbox_id in outbox_ids:
        assert re.search(rf"\boutbox={outbox_id}\b", text), text


@pytest.mark.parametrize(
    ("line", "secret", "kept"),
    [
        ("sms to +8613812345678 sent", "3812345", "+861"),
        ("POST /sms/8613812345678?:to=%2B8613812345678", "3812345", "/sms/"),
        ("call 13812345678 now", "3812345", "call"),
        ("uk +447911123456", "7911123", "uk"),
        (
            "link https://lk.example/a/1a.qz3k9.AbC-d_efGhIj please",
            "qz3k9.AbC-d_efGhIj",
            "https://lk.example/a/",
        ),
        ("mqtt://gw:hunter2@broker:1883/x", "hunter2", "mqtt://gw:"),
        ("GET /x?token=abcDEF123&n=1", "abcDEF123", "n=1"),
        ("GET /x?access_token=abcDEF123", "abcDEF123", "/x?access_token="),
        ("headers={'Authorization': 'Bearer abcDEF123', 'X': '1'}", "abcDEF123", "'X': '1'"),
        ("Authorization: Basic dTpzZWNyZXQ=", "dTpzZWNyZXQ=", "Authorization"),
    ],
)
def test_redact_log_text_masks_each_kind_of_secret(line: str, secret: str, kept: str) -> None:
    out = redact_log_text(line)
    assert secret not in out
    assert kept in out
    assert redact_log_text(out) == out  # redacting twice changes nothing


def test_timestamps_and_ids_are_not_taken_for_phone_numbers() -> None:
    line = "2025-03-01T09:00:00 DEBUG x: sent outbox=12345678 alert=42 at 1740790800"
    assert redact_log_text(line) == line


def test_third_party_loggers_and_tracebacks_are_masked(debug_log: io.StringIO) -> None:
    logging.getLogger("apprise").debug("Posting to %s", "json://u:pw1234@h/sms/8613812345678")
    logging.getLogger("urllib3.connectionpool").debug("GET /x?token=%s", "abcDEF123")
    try:
        raise ValueError("no route to +8613812345678")
    except ValueError:
        logging.getLogger("paho.mqtt.client").exception("failed")
    text = debug_log.getvalue()
    for secret in ("pw1234", "3812345", "abcDEF123"):
        assert secret not in text, text
    assert "ValueError" in text
