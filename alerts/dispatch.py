"""The outbox dispatcher: claim due notifications, send them, record every attempt.

Exactly once, and what remains of at-least-once
------------------------------------------------
1. Claim: in a transaction on `conn`, `SELECT ... FOR UPDATE SKIP LOCKED` the due rows. The
   row locks are held until step 4 commits, so no other dispatcher (in this process or
   another) can claim them meanwhile: two workers never send the same notification.
2. Before calling any provider, a 'started' attempt per row is committed on `log_conn`
   (autocommit), so an attempt cut short by a crash is on record.
3. Send (Apprise, blocking, in worker threads).
4. Record results and the rows' new state on `conn` and commit.

A crash before 4 rolls the claim back: the rows are pending again and their locks vanish with
the session, so another worker (or the restarted one) claims them at once, marks the orphaned
'started' attempts 'interrupted' and sends again. Notifications whose provider call had not
begun, or had failed, are thus sent exactly once. The one window left is a crash after a
provider accepted a message and before step 4 committed: that message is sent twice. Each
send carries an idempotency key that is the same on the resend (`Idempotency-Key` header for
`json://`/`form://`/`xml://` targets, `{idempotency_key}` in the SMS URL template), so a
provider that honours it drops the duplicate; one that does not may deliver it twice. The
window is one HTTP request long.

Template providers (`alerts.providers`: Alibaba Cloud, Tencent Cloud) offer no idempotency
key, so that window is closed another way: the provider's acceptance (its message id) is
committed on `log_conn` as soon as the batch's sends return, before step 4, and a row
claimed again with an interrupted attempt *and* an accepted message is marked sent, not
sent again. What remains is a kill during the provider's HTTP request itself: for Alibaba
Cloud SMS, a row resent after an interrupted attempt first asks the provider
(`QuerySendDetails`, by our OutId) whether it already took it. Tencent Cloud's queries list
only messages the carrier has already sent a receipt for, seconds to minutes later, so an
empty answer right after a crash cannot tell "not sent" from "no receipt yet": such a message
is resent at once and may go twice (docs/alerts.md, "Tencent Cloud: why a message cut short
may go twice").

Template messages of one channel and template claimed together go to a provider that takes
several in one request (Alibaba's SendBatchSms) as one request: the SDK's cost is per
request, and a burst of 1,000 needs that to fit two cores in a second.

Provider errors (`providers.ProviderError`) say what to do next: retry the same provider
later (throttling, with the provider's delay), go to the next channel at once (provider down,
template refused; the latter is an operator error recorded on the alert), or give up on the
number (invalid, blacklisted): every channel to that phone is skipped, and when nothing is
left the notification fails and the alert's history says why.

Bundling and rate limits: due rows for the same recipient, channel and purpose claimed
together go out as one message; a recipient who has had `rate_limit_messages` messages within
`rate_limit_window_s` gets non-urgent rows held until the window frees, and those then go
out as one bundle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from lovekey.alerts import texts
from lovekey.alerts.channels import Outgoing, Sender, channel_url, is_sms, to_phone
from lovekey.alerts.escalation_pass import stand_down_for
from lovekey.alerts.policy import rate_limited_until, retry_delay_s
from lovekey.alerts.providers import Accepted, Action, ProviderError, TemplateMessage, provider_of
from lovekey.alerts.providers.messages import template_params
from lovekey.alerts.store import add_history
from lovekey.alerts.tokens import make_token
from lovekey.config import AlertSettings
from lovekey.errors import DeliveryError
from lovekey.redact import redact_text
from lovekey.vocabulary import ContactRole

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class DispatchContext:
    settings: AlertSettings
    zone: ZoneInfo
    secret: bytes
    worker: str = ""

    def link(self, row: _Row, now: datetime) -> str:
        assert row.alert_id is not None
        token = make_token(
            self.secret,
            outbox_id=row.id,
            alert_id=row.alert_id,
            recipient_key=row.recipient_key,
            expires_at=now + timedelta(seconds=self.settings.token_ttl_s),
        )
        return f"{self.settings.public_base_url.rstrip('/')}/a/{token}"


@dataclass(slots=True)
class DispatchReport:
    claimed: int = 0
    messages_sent: int = 0
    rows_sent: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    held: int = 0
    interrupted: int = 0


@dataclass(slots=True)
class _Row:
    id: int
    alert_id: int | None
    purpose: str
    recipient_key: str
    role: str
    name: str
    language: str
    phone: str | None
    push_urls: list[str]
    channels: list[str]
    urgent: bool
    channel_index: int
    channel_attempts: int
    detail: dict[str, Any]
    alert_status: str | None

    @property
    def channel(self) -> str:
        return self.channels[self.channel_index]


@dataclass(slots=True)
class _Group:
    rows: list[_Row]
    channel: str
    outgoing: Outgoing | None = None
    error: DeliveryError | None = None
    attempt_ids: list[int] = field(default_factory=list)
    accepted: Accepted | None = None
    recheck: bool = False  # an earlier attempt was cut short: ask the provider before resending
    reference: str | None = None  # our OutId/SessionContext for a provider send
    batch: list[_Group] | None = None  # groups sent together in one provider request


_CLAIM = """
    SELECT o.id, o.alert_id, o.purpose, o.recipient_key, o.role, o.name, o.language, o.phone,
           o.push_urls, o.channels, o.urgent, o.channel_index, o.channel_attempts, o.detail,
           a.status
    FROM alert_outbox o LEFT JOIN alert a ON a.id = o.alert_id
    WHERE o.state = 'pending' AND o.not_before <= %s
    ORDER BY o.urgent DESC, o.not_before, o.id
    LIMIT %s
    FOR NO KEY UPDATE OF o SKIP LOCKED
"""


def dispatch_once(
    conn: psycopg.Connection[Any],
    log_conn: psycopg.Connection[Any],
    send: Sender,
    ctx: DispatchContext,
    clock: Clock,
    *,
    executor: Executor | None = None,
    limit: int | None = None,
) -> DispatchReport:
    """Claim, send and record one batch. `log_conn` must be in autocommit mode."""
    settings = ctx.settings
    report = DispatchReport()
    with conn.transaction():
        now = clock()
        rows = [_Row(*r) for r in conn.execute(_CLAIM, (now, limit or settings.batch_size)).fetchall()]
        if not rows:
            return report
        report.claimed = len(rows)
        ids = [r.id for r in rows]
        interrupted = {
            (outbox_id, channel): reference
            for outbox_id, channel, reference in conn.execute(
                """
                UPDATE delivery_attempt SET result = 'interrupted', finished_at = %s,
                       error = 'worker stopped before the result was recorded'
                WHERE outbox_id = ANY(%s) AND result = 'started'
                RETURNING outbox_id, channel, reference
                """,
                (now, ids),
            )
        }
        report.interrupted = len(interrupted)

        rows, report.rows_sent = _already_accepted(conn, rows)
        live, cancelled = _drop_answered(rows)
        if cancelled:
            conn.execute(
                "UPDATE alert_outbox SET state = 'cancelled' WHERE id = ANY(%s)",
                ([r.id for r in cancelled],),
            )
            report.cancelled = len(cancelled)
        live, held = _hold_rate_limited(conn, live, settings, now)
        if held:
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE alert_outbox SET not_before = %s WHERE id = %s",
                    [(until, r.id) for r, until in held],
                )
            report.held = len(held)
        groups = _groups(live)
        for group in groups:
            _prepare(group, ctx, now)
            cut_short = [
                interrupted[(r.id, group.channel)] for r in group.rows if (r.id, group.channel) in interrupted
            ]
            if cut_short and group.outgoing is not None and group.outgoing.template is not None:
                # ask the provider for the reference the cut-short attempt was sent under
                group.recheck = True
                _set_reference(group, cut_short[0] or group.reference)
        _hold_per_number(conn, groups, settings, now)
        _form_batches(groups, send)

        _record_started(log_conn, groups, now, ctx.worker)
        _send_all(groups, send, executor)
        done = clock()
        _record_accepted(log_conn, groups, done)
        _record_results(conn, groups, settings, done, report)
    return report


def _already_accepted(conn: psycopg.Connection[Any], rows: list[_Row]) -> tuple[list[_Row], int]:
    """Rows a provider accepted before a worker died without recording it: sent, not again."""
    accepted = {
        outbox_id: (channel, at)
        for outbox_id, channel, at in conn.execute(
            """
            SELECT DISTINCT ON (outbox_id) outbox_id, channel, accepted_at FROM provider_message
            WHERE outbox_id = ANY(%s) ORDER BY outbox_id, id DESC
            """,
            ([r.id for r in rows],),
        )
    }
    if not accepted:
        return rows, 0
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE alert_outbox SET state = 'sent', sent_at = %s, sent_channel = %s WHERE id = %s",
            [(at, channel, outbox_id) for outbox_id, (channel, at) in accepted.items()],
        )
    _after_sent(
        conn,
        [r for r in rows if r.id in accepted and r.purpose == "alert"],
        min(at for _, at in accepted.values()),
    )
    return [r for r in rows if r.id not in accepted], len(accepted)


def _hold_per_number(
    conn: psycopg.Connection[Any], groups: Sequence[_Group], settings: AlertSettings, now: datetime
) -> None:
    """A provider's own per-number limit (`per_number_per_hour`): a message over it goes to
    the next channel (the other provider) instead of being refused by this one."""
    limited = [
        g
        for g in groups
        if g.outgoing is not None
        and g.outgoing.template is not None
        and (name := provider_of(g.channel)) in settings.providers
        and settings.providers[name].per_number_per_hour
    ]
    if not limited:
        return
    counts = {
        (provider, phone): n
        for provider, phone, n in conn.execute(
            """
            SELECT provider, phone, count(DISTINCT message_id) FROM provider_message
            WHERE phone = ANY(%s) AND accepted_at > %s GROUP BY provider, phone
            """,
            (sorted({g.rows[0].phone or "" for g in limited}), now - timedelta(hours=1)),
        )
    }
    for group in limited:
        name = provider_of(group.channel) or ""
        limit = settings.providers[name].per_number_per_hour or 0
        key = (name, group.rows[0].phone or "")
        if counts.get(key, 0) >= limit:
            group.error = ProviderError(
                group.channel,
                f"{limit} messages to this number through {name} within the hour",
                action=Action.NEXT_CHANNEL,
                code="lovekey.PER_NUMBER_LIMIT",
            )
            group.outgoing = None
        else:
            counts[key] = counts.get(key, 0) + 1


def _drop_answered(rows: Sequence[_Row]) -> tuple[list[_Row], list[_Row]]:
    """Alert notifications for alerts someone already took or that were resolved are
    cancelled: the escalation stopped, and whoever was told gets the stand-down."""
    live: list[_Row] = []
    cancelled: list[_Row] = []
    for row in rows:
        # a call for help comes after someone acknowledged: only resolution cancels it
        answered = row.alert_status == "resolved" or (
            row.alert_status == "acknowledged" and not row.detail.get("help_by")
        )
        (cancelled if row.purpose == "alert" and answered else live).append(row)
    return live, cancelled


def _hold_rate_limited(
    conn: psycopg.Connection[Any], rows: list[_Row], settings: AlertSettings, now: datetime
) -> tuple[list[_Row], list[tuple[_Row, datetime]]]:
    keys = sorted({r.recipient_key for r in rows if not r.urgent})
    if not keys:
        return rows, []
    recent: dict[str, list[datetime]] = {}
    for key, sent_at in conn.execute(
        """
        SELECT recipient_key, sent_at FROM alert_outbox
        WHERE recipient_key = ANY(%s) AND state = 'sent' AND sent_at > %s
          AND (bundle_id IS NULL OR bundle_id = id)
        """,
        (keys, now - timedelta(seconds=settings.rate_limit_window_s)),
    ):
        recent.setdefault(key, []).append(sent_at)
    live, held = [], []
    for row in rows:
        until = None
        if not row.urgent:
            until = rate_limited_until(
                recent.get(row.recipient_key, ()),
                now,
                limit=settings.rate_limit_messages,
                window_s=settings.rate_limit_window_s,
            )
        if until is None:
            live.append(row)
        else:
            held.append((row, until))
    return live, held


def _groups(rows: Sequence[_Row]) -> list[_Group]:
    by_key: dict[tuple[str, str, str], list[_Row]] = {}
    for row in rows:
        by_key.setdefault((row.recipient_key, row.channel, row.purpose), []).append(row)
    groups = []
    for (_, channel, purpose), members in by_key.items():
        # a check-in asks about one alert: never in a bundle
        asks = [m for m in members if m.role == ContactRole.RESIDENT]
        if asks:
            groups += [_Group([m], channel) for m in asks]
            members = [m for m in members if m.role != ContactRole.RESIDENT]
            if not members:
                continue
        if purpose == "digest":
            groups += [_Group([m], channel) for m in members]
        else:
            members.sort(key=lambda r: (not r.urgent, r.id))
            groups.append(_Group(members, channel))
    return groups


def _facts(row: _Row) -> texts.AlertFacts:
    d = row.detail
    return texts.AlertFacts(
        alert_id=row.alert_id or 0,
        kind=d.get("kind", ""),
        name=d.get("name", ""),
        address=d.get("address", ""),
        since=datetime.fromisoformat(d["since"]),
        urgent=bool(d.get("urgent")),
        outcome=d.get("outcome"),
        help_by=d.get("help_by"),
    )


def _prepare(group: _Group, ctx: DispatchContext, now: datetime) -> None:
    first = group.rows[0]
    sms = is_sms(group.channel)
    if first.purpose == "alert" and first.role == ContactRole.RESIDENT:  # the check-in
        message = texts.check_in_message(
            first.detail.get("name", ""), language=first.language, link=ctx.link(first, now), sms=sms
        )
    elif first.purpose == "alert":
        message = texts.alert_message(
            [_facts(r) for r in group.rows],
            language=first.language,
            link=ctx.link(first, now),
            sms=sms,
            zone=ctx.zone,
            now=now,
        )
    elif first.purpose == "stand_down":
        message = texts.stand_down_message([_facts(r) for r in group.rows], language=first.language, sms=sms)
    else:
        message = texts.digest_message(
            first.detail.get("name", ""),
            datetime.fromisoformat(first.detail["first_use_at"]),
            language=first.language,
            sms=sms,
            zone=ctx.zone,
        )
    provider = ctx.settings.providers.get(provider_of(group.channel) or "")
    if provider is not None and provider.kind != "apprise":
        group.outgoing = _template_outgoing(group, ctx, now, message.body)
        return
    try:
        url = channel_url(
            group.channel,
            phone=first.phone,
            push_urls=first.push_urls,
            sms_url_template=provider.url if provider is not None else ctx.settings.sms_url,
            idempotency_key=f"lovekey-{first.id}-{group.channel}",
        )
    except DeliveryError as exc:
        group.error = exc
        return
    group.outgoing = Outgoing(group.channel, url, message.title, message.body)


def _template_outgoing(group: _Group, ctx: DispatchContext, now: datetime, body: str) -> Outgoing:
    first = group.rows[0]
    digest = None
    if first.purpose == "digest":
        digest = (first.detail.get("name", ""), datetime.fromisoformat(first.detail["first_use_at"]))
    key, params, text = template_params(
        first.purpose,
        [_facts(r) for r in group.rows] if first.purpose != "digest" else [],
        voice=group.channel.startswith("voice"),
        language=first.language,
        link=ctx.link(first, now) if first.purpose == "alert" else "",
        naming=ctx.settings.resident_naming,
        zone=ctx.zone,
        now=now,
        digest=digest,
        check_in=first.purpose == "alert" and first.role == ContactRole.RESIDENT,
    )
    message = TemplateMessage(
        channel=group.channel,
        phone=first.phone or "",
        template_key=key,
        params=params,
        reference=f"lk{first.id}",  # OutId/SessionContext: short, ours, echoed in receipts
        text=text,
    )
    group.reference = message.reference
    return Outgoing(group.channel, "", "", body, template=message)


def _set_reference(group: _Group, reference: str | None) -> None:
    assert group.outgoing is not None
    assert group.outgoing.template is not None
    group.reference = reference
    group.outgoing = replace(
        group.outgoing, template=replace(group.outgoing.template, reference=reference or "")
    )


def _form_batches(groups: Sequence[_Group], send: Sender) -> None:
    """Template messages of one channel and template go to the provider in one request where
    it takes several (Alibaba's SendBatchSms): the SDK's cost is per request. A batch's
    reference is `lkb<first outbox id>`, recorded on each member's attempt."""
    batch_max = getattr(send, "batch_max", None)
    if batch_max is None:
        return
    buckets: dict[tuple[str, str], list[_Group]] = {}
    for group in groups:
        out = group.outgoing
        if out is None or out.template is None or group.recheck or group.error is not None:
            continue
        buckets.setdefault((group.channel, out.template.template_key), []).append(group)
    for members in buckets.values():
        size = int(batch_max(members[0].outgoing))
        if size < 2:
            continue
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            if len(chunk) < 2:
                continue
            reference = f"lkb{chunk[0].rows[0].id}"
            for group in chunk:
                _set_reference(group, reference)
                group.batch = chunk


def _record_accepted(log_conn: psycopg.Connection[Any], groups: Sequence[_Group], now: datetime) -> None:
    """What providers accepted, committed before the outbox rows are (see the module doc)."""
    rows = [(r, g, g.accepted) for g in groups if g.accepted is not None for r in g.rows]
    # a message found again after a crash keeps the reference it was sent under
    if not rows:
        return
    log_conn.execute(
        """
        INSERT INTO provider_message (outbox_id, alert_id, provider, channel, message_id,
                                      reference, phone, accepted_at)
        SELECT o, a, p, c, m, f, ph, %s
        FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[],
                    %s::text[]) AS t(o, a, p, c, m, f, ph)
        ON CONFLICT DO NOTHING
        """,
        (
            now,
            [r.id for r, _, _ in rows],
            [r.alert_id for r, _, _ in rows],
            [acc.provider for _, _, acc in rows],
            [g.channel for _, g, _ in rows],
            [acc.message_id for _, _, acc in rows],
            [g.reference or f"lk{g.rows[0].id}" for _, g, _ in rows],
            [r.phone or "" for r, _, _ in rows],
        ),
    )


def _record_started(
    log_conn: psycopg.Connection[Any], groups: Sequence[_Group], now: datetime, worker: str
) -> None:
    items = [(g, r) for g in groups for r in g.rows]
    if not items:
        return
    rows = log_conn.execute(
        """
        INSERT INTO delivery_attempt (outbox_id, started_at, channel, result, bundle_size, worker,
                                      reference)
        SELECT o, %s, c, 'started', n, %s, f
        FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::text[]) AS t(o, c, n, f)
        RETURNING id
        """,
        (
            now,
            worker,
            [r.id for _, r in items],
            [g.channel for g, _ in items],
            [len(g.rows) for g, _ in items],
            [g.reference for g, _ in items],
        ),
    ).fetchall()
    for (group, _), (attempt_id,) in zip(items, rows, strict=True):
        group.attempt_ids.append(attempt_id)


def _send_one(send: Sender, group: _Group) -> None:
    if group.outgoing is None:
        return
    try:
        already = getattr(send, "already_accepted", None)
        if group.recheck and group.outgoing.template is not None and already is not None:
            group.accepted = already(group.outgoing)  # the provider took it before a crash
            if group.accepted is not None:
                return
        group.accepted = send(group.outgoing)
    except DeliveryError as exc:
        group.error = exc


def _send_batch(send: Sender, batch: list[_Group]) -> None:
    """One provider request for the batch; if the provider refuses a number in it (which
    refuses the whole request), each message goes alone, so only that number fails."""
    outs = [g.outgoing for g in batch if g.outgoing is not None]
    try:
        accepted = send.send_batch(outs)  # type: ignore[attr-defined]  # see _form_batches
    except ProviderError as exc:
        if exc.action is Action.GIVE_UP:
            for group in batch:
                _send_one(send, group)
            return
        for group in batch:
            group.error = exc
        return
    except DeliveryError as exc:
        for group in batch:
            group.error = exc
        return
    for group in batch:
        group.accepted = accepted


def _send_all(groups: Sequence[_Group], send: Sender, executor: Executor | None) -> None:
    tasks: list[tuple[Callable[..., None], Any]] = []
    seen: set[int] = set()
    for group in groups:
        if group.batch is None:
            tasks.append((_send_one, group))
        elif id(group.batch) not in seen:
            seen.add(id(group.batch))
            tasks.append((_send_batch, group.batch))
    if executor is None:
        for task, arg in tasks:
            task(send, arg)
        return
    futures: list[Future[None]] = [executor.submit(task, send, arg) for task, arg in tasks]
    for future in futures:
        future.result()


def _record_results(
    conn: psycopg.Connection[Any],
    groups: Sequence[_Group],
    settings: AlertSettings,
    now: datetime,
    report: DispatchReport,
) -> None:
    attempts: list[tuple[str, str | None, datetime, int]] = []
    updates: list[dict[str, Any]] = []
    sent_alert_rows: list[_Row] = []
    failed_rows: list[tuple[_Row, DeliveryError]] = []
    operator_errors: list[tuple[int, str, Any]] = []
    for group in groups:
        error = group.error
        first = group.rows[0]
        if error is None:
            report.messages_sent += 1
            # ids only: the recipient's name, phone and the message (with its ack link) stay out
            log.debug(
                "sent outbox=%s alert=%s channel=%s rows=%d",
                first.id,
                first.alert_id,
                group.channel,
                len(group.rows),
            )
        else:
            operator = isinstance(error, ProviderError) and error.operator
            (log.error if operator else log.warning)(
                "delivery failed outbox=%s alert=%s channel=%s retryable=%s%s: %s",
                first.id,
                first.alert_id,
                group.channel,
                error.retryable,
                " (operator: fix the provider settings)" if operator else "",
                redact_text(error.detail),
            )
            if operator and first.alert_id is not None:
                assert isinstance(error, ProviderError)
                operator_errors.append(
                    (
                        first.alert_id,
                        "provider_error",
                        Jsonb(
                            {
                                "channel": group.channel,
                                "code": error.code,
                                "detail": redact_text(error.detail)[:300],
                                "operator": True,
                            }
                        ),
                    )
                )
        bundle = first.id if len(group.rows) > 1 else None
        for row, attempt_id in zip(group.rows, group.attempt_ids, strict=True):
            attempts.append(
                (
                    "ok" if error is None else "failed",
                    None if error is None else redact_text(error.detail)[:1000],
                    now,
                    attempt_id,
                )
            )
            update = {
                "id": row.id,
                "state": "pending",
                "index": row.channel_index,
                "attempts": row.channel_attempts,
                "not_before": now,
                "sent_at": None,
                "sent_channel": None,
                "bundle": bundle,
            }
            if error is None:
                update.update(state="sent", sent_at=now, sent_channel=group.channel)
                report.rows_sent += 1
                if row.purpose == "alert":
                    sent_alert_rows.append(row)
            else:
                failures = row.channel_attempts + 1
                action = error.action if isinstance(error, ProviderError) else None
                following = _next_channel(row, skip_phone=action is Action.GIVE_UP)
                if action is Action.NEXT_CHANNEL and following is not None:
                    update.update(index=following, attempts=0)  # the other provider, now
                    report.retried += 1
                elif (
                    action is not Action.GIVE_UP
                    and (error.retryable or action is Action.NEXT_CHANNEL)
                    and failures < settings.max_attempts_per_channel
                ):
                    delay = retry_delay_s(failures, base_s=settings.retry_base_s, max_s=settings.retry_max_s)
                    if isinstance(error, ProviderError) and error.retry_after_s:
                        delay = max(delay, error.retry_after_s)
                    update.update(attempts=failures, not_before=now + timedelta(seconds=delay))
                    report.retried += 1
                elif following is not None:
                    update.update(index=following, attempts=0)  # fall back now
                    report.retried += 1
                else:
                    update.update(state="failed", attempts=failures)
                    report.failed += 1
                    failed_rows.append((row, error))
            updates.append(update)
    # one statement each, whatever the batch size
    conn.execute(
        """
        UPDATE delivery_attempt d SET result = t.result, error = t.error, finished_at = %s
        FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS t(id, result, error)
        WHERE d.id = t.id
        """,
        (now, [a[3] for a in attempts], [a[0] for a in attempts], [a[1] for a in attempts]),
    )
    conn.execute(
        """
        UPDATE alert_outbox o SET state = t.state, channel_index = t.index,
               channel_attempts = t.attempts, not_before = t.not_before, sent_at = t.sent_at,
               sent_channel = t.sent_channel, bundle_id = t.bundle
        FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::int[], %s::timestamptz[],
                    %s::timestamptz[], %s::text[], %s::bigint[])
             AS t(id, state, index, attempts, not_before, sent_at, sent_channel, bundle)
        WHERE o.id = t.id
        """,
        [
            [u[k] for u in updates]
            for k in ("id", "state", "index", "attempts", "not_before", "sent_at", "sent_channel", "bundle")
        ],
    )
    _after_sent(conn, sent_alert_rows, now)
    if operator_errors:
        add_history(conn, operator_errors, now, actor="worker")
    if failed_rows:
        add_history(
            conn,
            [
                (
                    r.alert_id,
                    "delivery_failed",
                    Jsonb({"recipient": r.recipient_key, "role": r.role, **_failure(e)}),
                )
                for r, e in failed_rows
                if r.alert_id is not None
            ],
            now,
            actor="worker",
        )
        _go_on_when_nobody_was_reached(
            conn, [r.id for r, _ in failed_rows if r.alert_id is not None and r.purpose == "alert"], now
        )


def _go_on_when_nobody_was_reached(
    conn: psycopg.Connection[Any], outbox_ids: list[int], now: datetime
) -> None:
    """A round in which every notification failed for good (an invalid number, every channel
    spent) reached nobody, and nobody can acknowledge it: record that, and make the alert due
    now, so the chain goes on to its next people instead of waiting out the step."""
    if not outbox_ids:
        return
    rounds = conn.execute(
        """
        WITH failed AS (SELECT DISTINCT alert_id, round FROM alert_outbox WHERE id = ANY(%s))
        SELECT f.alert_id, f.round FROM failed f JOIN alert a ON a.id = f.alert_id
        WHERE a.status IN ('open', 'notified')
          AND NOT EXISTS (
              SELECT 1 FROM alert_outbox o
              WHERE o.alert_id = f.alert_id AND o.round = f.round AND o.purpose = 'alert'
                AND o.state IN ('pending', 'sent'))
        ORDER BY 1, 2
        """,
        (outbox_ids,),
    ).fetchall()
    if not rounds:
        return
    add_history(conn, [(a, "nobody_reached", Jsonb({"round": r})) for a, r in rounds], now, actor="worker")
    conn.execute("UPDATE alert SET escalation_due_at = %s WHERE id = ANY(%s)", (now, [a for a, _ in rounds]))


def _next_channel(row: _Row, *, skip_phone: bool) -> int | None:
    """The index of the channel to try next; past every channel to the phone when the number
    itself was refused."""
    for index in range(row.channel_index + 1, len(row.channels)):
        if not (skip_phone and to_phone(row.channels[index])):
            return index
    return None


def _failure(error: DeliveryError) -> dict[str, Any]:
    if not isinstance(error, ProviderError):
        return {}
    reason = "invalid_number" if error.action is Action.GIVE_UP else "provider_refused"
    return {"reason": reason, "code": error.code}


def _after_sent(conn: psycopg.Connection[Any], rows: Sequence[_Row], now: datetime) -> None:
    """open -> notified; and if the alert was stood down while we were sending, the people
    we just told get the stand-down too."""
    alert_ids = sorted({r.alert_id for r in rows if r.alert_id is not None})
    if not alert_ids:
        return
    state = {
        a: stood_down
        for a, stood_down in conn.execute(
            "SELECT id, stood_down_at IS NOT NULL FROM alert WHERE id = ANY(%s)"
            " ORDER BY id FOR NO KEY UPDATE",
            (alert_ids,),
        )
    }
    first = conn.execute(
        """
        UPDATE alert SET status = 'notified', notified_at = %s
        WHERE id = ANY(%s) AND status = 'open' RETURNING id
        """,
        (now, alert_ids),
    ).fetchall()
    add_history(conn, [(a, "notified", Jsonb({})) for (a,) in first], now, actor="worker")
    for row in rows:
        if row.alert_id is not None and state.get(row.alert_id):
            stand_down_for(conn, row.alert_id, row.recipient_key, now)
