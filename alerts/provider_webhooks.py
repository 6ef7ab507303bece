"""Callbacks from SMS and voice providers: delivery receipts, SMS replies, call results and
key presses, at

    POST /alerts/providers/{name}/{secret}/{topic}

`name` is the `[alerts.providers.<name>]` table, `secret` its `callback_secret`, `topic` one
of `sms_report`, `sms_up`, `voice_report`, `voice_call_report` (Alibaba Cloud) or
`sms_status`, `sms_reply`, `voice` (Tencent Cloud); the operator pastes the whole URL into the
provider's console (docs/alerts.md).

Neither provider signs its callbacks, so trust rests on three checks, in order:
1. the secret in the path (constant-time comparison) - a request without it is answered 403;
2. the body has the documented shape - otherwise 400;
3. every receipt and key press must name a message this provider accepted from LoveKey *and*
   the number it was sent to; an SMS reply must come from a number LoveKey sent an alert or a
   check-in to (`inbound.acknowledge_by_sms`). A callback none of whose records match is
   answered 403.

A resident's reply or key to their own check-in ("1" fine, "2" need help) takes the same path
and ends in `alerts.check_in` (`inbound.acknowledge_by_sms` and the `resident` key handler).
Refusals are logged and kept in `provider_callback` with their reason, never acted on.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from lovekey.alerts import inbound, store
from lovekey.alerts.providers.callbacks import (
    ALIYUN_OK,
    TENCENT_OK,
    TOPICS,
    CallbackFormatError,
    KeyPress,
    Receipt,
    Record,
    Reply,
    family,
    parse,
    same_number,
)
from lovekey.config import Settings
from lovekey.redact import redact_phone

log = logging.getLogger(__name__)

RequestHelp = Callable[[psycopg.AsyncConnection[Any], int, str, datetime], Awaitable[int]]

# by the provider's id, or (Alibaba SMS found again after a crash) by our OutId
_MESSAGE = """
    SELECT id, outbox_id, alert_id, phone, channel FROM provider_message
    WHERE provider = %s AND (message_id = %s OR message_id = 'out:' || %s) ORDER BY id
"""
# the `inbound.SmsReply` reasons of a reply that came from a number LoveKey wrote to: an
# acknowledgement, or a resident's answer to their check-in (1 fine, 2 need help)
_REPLY_MATCHED = frozenset(
    ("ok", "already_acknowledged", "not_understood", "check_in_fine", "check_in_need_help")
)
_LOG = """
    INSERT INTO provider_callback (received_at, provider, topic, accepted, reason, remote, body)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
"""


def create_router(
    settings: Settings,
    pool: AsyncConnectionPool[Any],
    *,
    clock: Callable[[], datetime],
    request_help: RequestHelp,
) -> APIRouter:
    router = APIRouter()
    a = settings.alerts

    @router.post("/alerts/providers/{name}/{secret}/{topic}", include_in_schema=False)
    async def provider_callback(request: Request, name: str, secret: str, topic: str) -> Response:
        now = clock()
        body = await request.body()
        remote = request.client.host if request.client else None
        provider = a.providers.get(name)
        expected = provider.callback_secret if provider is not None else None
        if provider is None or not expected or not hmac.compare_digest(secret.encode(), expected.encode()):
            await _refuse(pool, now, name, topic, remote, body, "bad_secret")
            return JSONResponse({"error": "forbidden"}, status_code=403)
        fam = family(provider.kind)
        if topic not in TOPICS.get(fam, ()):
            await _refuse(pool, now, name, topic, remote, body, "unknown_topic")
            return JSONResponse({"error": "unknown topic"}, status_code=404)
        try:
            records = parse(fam, topic, body)
        except CallbackFormatError as exc:
            await _refuse(pool, now, name, topic, remote, body, f"malformed: {exc}"[:200])
            return JSONResponse({"error": "malformed"}, status_code=400)
        async with pool.connection() as conn:
            matched = 0
            for record in records:
                matched += await _apply(conn, name, record, now, settings, request_help)
            accepted = matched > 0 or not records
            await conn.execute(
                _LOG,
                (now, name, topic, accepted, "ok" if accepted else "unmatched", remote, _body(body)),
            )
        if not accepted:
            log.warning("provider callback refused: %s/%s matches no message LoveKey sent", name, topic)
            return JSONResponse({"error": "no such message"}, status_code=403)
        return JSONResponse(ALIYUN_OK if fam == "aliyun" else TENCENT_OK)

    return router


def _body(body: bytes) -> str:
    return body[:4000].decode("utf-8", "replace")


async def _refuse(
    pool: AsyncConnectionPool[Any],
    now: datetime,
    name: str,
    topic: str,
    remote: str | None,
    body: bytes,
    reason: str,
) -> None:
    log.warning("provider callback refused: provider=%s topic=%s from=%s: %s", name, topic, remote, reason)
    async with pool.connection() as conn:
        await conn.execute(_LOG, (now, name[:100], topic[:100], False, reason, remote, _body(body)))


async def _apply(
    conn: psycopg.AsyncConnection[Any],
    provider: str,
    record: Record,
    now: datetime,
    settings: Settings,
    request_help: RequestHelp,
) -> int:
    """Act on one record; how many notifications it matched."""
    country = settings.registry.default_country_code
    if isinstance(record, Reply):
        reply = await inbound.acknowledge_by_sms_async(
            conn,
            record.phone,
            record.text,
            now,
            ttl_s=settings.alerts.token_ttl_s,
            default_country_code=country,
            channel=f"sms@{provider}",
        )
        log.info("provider sms reply from=%s result=%s", redact_phone(record.phone), reply.reason)
        return 1 if reply.reason in _REPLY_MATCHED else 0
    rows = [
        r
        for r in await (
            await conn.execute(
                _MESSAGE, (provider, record.message_id, getattr(record, "reference", "") or None)
            )
        ).fetchall()
        if same_number(r[3], record.phone, country)
    ]
    if not rows:
        return 0
    if isinstance(record, Receipt):
        await conn.execute(
            "UPDATE provider_message SET status = %s, status_at = %s, reason = %s WHERE id = ANY(%s)",
            (record.status, now, record.reason[:300], [r[0] for r in rows]),
        )
        events = [
            (
                alert_id,
                "delivery_receipt",
                Jsonb(
                    {
                        "outbox_id": outbox_id,
                        "channel": channel,
                        "status": record.status,
                        "reason": record.reason[:300],
                    }
                ),
            )
            for _, outbox_id, alert_id, _, channel in rows
            if alert_id is not None
        ]
        await store.add_history_async(conn, events, now, provider)
        return len(rows)
    assert isinstance(record, KeyPress)
    await conn.execute(
        "UPDATE provider_message SET key_pressed = %s, key_at = %s WHERE id = ANY(%s)",
        (record.key, now, [r[0] for r in rows]),
    )
    for _, outbox_id, _, _, channel in rows:
        press = await inbound.key_press_for_async(conn, outbox_id, record.key, channel)
        if press is not None:
            result = await inbound.accept_key_press_async(conn, press, now, request_help=request_help)
            log.info("key %s pressed for alert %s: %s", record.key, result.alert_id, result.action)
    return len(rows)
