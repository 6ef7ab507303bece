"""The acknowledgement pages behind the links in messages, and the inbound-SMS webhook.

`create_router(settings, pool)` returns an `APIRouter` whose routes run on a pool the host
app owns (an `AsyncConnectionPool`, autocommit, opened in the host's lifespan): the console
includes it with its one pool (`app.include_router(create_router(settings, pool))`, no
prefix), so a console process holds one pool, not one per package; `create_app()` is the
stand-alone host for `lovekey alerts serve`, with its own pool opened in its lifespan.
Routes:

    GET/POST /a/{token}            the page for one alert and one recipient (zh/en, mobile)
    POST     /alerts/sms/{secret}  replies from the SMS gateway: `1` or an alert's number

The token in the path is the credential (see alerts.tokens): nothing else is needed to act,
and nothing works without it. Endpoints are asynchronous and use the `*_async` shells of the
alert store, `alerts.inbound` and `alerts.escalation_pass`: no blocking call on the loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from psycopg_pool import AsyncConnectionPool

from lovekey.alerts import check_in, inbound, store
from lovekey.alerts.chains import ChainBook
from lovekey.alerts.escalation_pass import EscalationContext, request_help_async
from lovekey.alerts.texts import OUTCOME_TEXT, WHAT
from lovekey.alerts.worker import load_secret_async, utc_now
from lovekey.config import Settings
from lovekey.errors import AckTokenError, AlertStateError
from lovekey.redact import redact_phone
from lovekey.vocabulary import CHOSEN_OUTCOMES, CheckInAnswer, ContactRole

log = logging.getLogger(__name__)

TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "title": "爱心钥匙",
        "invalid": "链接无效",
        "forged": "这个链接无法识别。",
        "expired": "这个链接已过期，请联系社区。",
        "malformed": "这个链接不完整。",
        "since": "开始于",
        "alert_no": "编号",
        "status": "状态",
        "status_open": "待处理",
        "status_notified": "已通知",
        "status_acknowledged": "有人前往",
        "status_resolved": "已处理",
        "going": "我这就去",
        "fine": "老人平安",
        "help": "需要帮助",
        "call": "拨打 120",
        "outcome": "处理结果",
        "note": "备注",
        "save": "保存结果",
        "others": "您的其他提醒",
        "done_going": "谢谢！已记录您正在前往。",
        "done_fine": "谢谢！已记录老人平安。",
        "done_help": "已通知家属、网格员和社区工作人员。如有危险请立即拨打120，之后填写处理结果。",
        "done_help_nobody": (
            "没有通知到任何人：这位老人没有登记家属、网格员或社区工作人员。如有危险请立即拨打120，"
            "并打电话给社区。提醒仍未处理，会继续通知其他联系人。"
        ),
        "done_resolve": "谢谢！处理结果已保存。",
        "done_already": "此提醒已处理，谢谢。",
        "note_required": "选择“其他”时请填写备注。",
        "check_in_hello": "{name}您好",
        "check_in_question": "社区问候您：一切都好吗？",
        "i_am_fine": "我很好",
        "i_need_help": "我需要帮助",
        "done_i_am_fine": "谢谢！祝您平安。",
        "done_i_need_help": "已通知您的联系人，他们会尽快联系您。如有危险请立即拨打120。",
        "done_answered": "您已经回答过了，谢谢。",
    },
    "en": {
        "title": "LoveKey",
        "invalid": "Link not valid",
        "forged": "This link is not recognised.",
        "expired": "This link has expired; please contact the community office.",
        "malformed": "This link is incomplete.",
        "since": "Since",
        "alert_no": "Alert",
        "status": "Status",
        "status_open": "open",
        "status_notified": "people notified",
        "status_acknowledged": "someone is going",
        "status_resolved": "resolved",
        "going": "I'm going",
        "fine": "Resident is fine",
        "help": "Needs help",
        "call": "Call 120",
        "outcome": "Outcome",
        "note": "Note",
        "save": "Save outcome",
        "others": "Your other alerts",
        "done_going": "Thank you! We noted that you are on your way.",
        "done_fine": "Thank you! We noted that the resident is fine.",
        "done_help": (
            "Family, the grid worker and community staff are being told. If it is an"
            " emergency call 120 now; record the outcome afterwards."
        ),
        "done_help_nobody": (
            "Nobody could be told: no family, grid worker or community staff is registered for"
            " this resident. If it is an emergency call 120 now, then call the community office."
            " The alert stays open and keeps going to the remaining contacts."
        ),
        "done_resolve": "Thank you! The outcome is saved.",
        "done_already": "This alert was already resolved. Thank you.",
        "note_required": "Please add a note when the outcome is 'other'.",
        "check_in_hello": "Hello {name}",
        "check_in_question": "The community is checking on you: are you all right?",
        "i_am_fine": "I am fine",
        "i_need_help": "I need help",
        "done_i_am_fine": "Thank you! Take care.",
        "done_i_need_help": (
            "Your contacts are being told and will be in touch soon. In an emergency call 120 now."
        ),
        "done_answered": "You have already answered. Thank you.",
    },
}
for _lang, _texts in TEXT.items():
    _texts.update({f"outcome_{k}": v for k, v in OUTCOME_TEXT[_lang].items()})


# the `?done=` values the page shows a message for, and those that also offer "call 120"
_DONES: tuple[str, ...] = ("going", "fine", "help", "help_nobody", "resolve", "already")
_DONES += ("i_am_fine", "i_need_help", "answered")  # the resident's own page
# what the resident's own buttons answer
_CHECK_IN_ACTIONS = {"i_am_fine": CheckInAnswer.FINE, "i_need_help": CheckInAnswer.NEED_HELP}
_HELP_FLASHES = ("done_help", "done_help_nobody")


class AckService:
    """The state the routes share: settings, the host's pool and the signing secret (read
    once, on first use, from settings or the database; see `alerts.worker.load_secret`)."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool[Any],
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.clock = clock
        self.zone: ZoneInfo = settings.zone
        self._secret: bytes | None = None
        self.escalation = EscalationContext(
            ChainBook.load(settings.alerts.chains_file), settings.alerts, settings.zone
        )

    async def secret(self, conn: psycopg.AsyncConnection[Any]) -> bytes:
        # two first requests at once both load it: the same value (kept with ON CONFLICT)
        if self._secret is None:
            self._secret = await load_secret_async(conn, self.settings)
        return self._secret


def create_router(
    settings: Settings,
    pool: AsyncConnectionPool[Any],
    *,
    clock: Callable[[], datetime] = utc_now,
) -> APIRouter:
    """The routes, over `pool`: made with `open=False` by the host, which opens it in its
    lifespan (inside the running loop) and closes it; the router opens nothing."""
    service = AckService(settings, pool, clock=clock)
    router = APIRouter()
    templates = _templates()

    def render(request: Request, lang: str, status_code: int = 200, **context: Any) -> Response:
        lang = request.query_params.get("lang") or lang
        lang = "en" if lang == "en" else "zh"
        html = templates.get_template("ack.html").render(
            lang=lang, t=TEXT[lang], outcomes=CHOSEN_OUTCOMES, css=_CSS, **context
        )
        return HTMLResponse(html, status_code=status_code, headers=_NO_STORE)

    async def page(request: Request, token: str, flash: str | None) -> Response:
        now = service.clock()
        async with service.pool.connection() as conn:
            secret = await service.secret(conn)
            try:
                holder = await inbound.holder_of_async(conn, secret, token, now)
            except AckTokenError as exc:
                return render(request, "zh", 403 if exc.reason != "malformed" else 404, error=exc.reason)
            alert = await store.get_alert_async(conn, holder.alert_id)
            others = await inbound.other_alerts_async(
                conn,
                secret,
                holder,
                now,
                settings.alerts.token_ttl_s,
                settings.alerts.public_base_url,
            )
        assert alert is not None
        lang = "en" if (request.query_params.get("lang") or holder.language) == "en" else "zh"
        what = WHAT[lang]
        d = holder.detail
        view = {
            "id": alert["id"],
            "what": what.get(alert["kind"], alert["kind"]),
            "name": d.get("name", ""),
            "address": d.get("address", ""),
            "since": alert["since"].astimezone(service.zone).strftime("%Y-%m-%d %H:%M"),
            "status": alert["status"],
            "acknowledged_by": alert["acknowledged_by"],
            "urgent": bool(d.get("urgent")),
        }
        other_views = [
            {
                "alert_id": o["alert_id"],
                "link": o["link"],
                "name": o["detail"].get("name", ""),
                "what": what.get(o["detail"].get("kind", ""), ""),
            }
            for o in others
        ]
        if holder.role == ContactRole.RESIDENT:  # the check-in: the resident's own page
            return render(request, lang, alert=view, others=[], flash=flash, check_in=True)
        return render(request, lang, alert=view, others=other_views, flash=flash, help=flash in _HELP_FLASHES)

    @router.get("/a/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def ack_page(request: Request, token: str, done: str | None = None) -> Response:
        flash = f"done_{done}" if done in _DONES else None
        if done == "note_required":
            flash = "note_required"
        return await page(request, token, flash)

    @router.post("/a/{token}", include_in_schema=False)
    async def ack_action(
        request: Request,
        token: str,
        action: str = Form(...),
        outcome: str | None = Form(None),
        note: str | None = Form(None),
    ) -> Response:
        now = service.clock()
        async with service.pool.connection() as conn:
            secret = await service.secret(conn)
            try:
                holder = await inbound.holder_of_async(conn, secret, token, now)
            except AckTokenError as exc:
                return render(request, "zh", 403, error=exc.reason)
            by = holder.name or holder.contact_ref
            done = action
            if (holder.role == ContactRole.RESIDENT) != (action in _CHECK_IN_ACTIONS):
                return Response(status_code=400)  # a resident answers; a contact acts
            try:
                # one transaction: the transition, its history rows and the outbox rows of a
                # help request commit together or not at all
                async with conn.transaction():
                    if action in _CHECK_IN_ACTIONS:
                        try:
                            answer = _CHECK_IN_ACTIONS[action]
                            await check_in.answer_async(
                                conn, holder.alert_id, answer, by=by, channel="link", now=now
                            )
                        except AlertStateError:
                            done = "answered"
                    elif action == "going":
                        await store.acknowledge_async(
                            conn,
                            holder.alert_id,
                            by=by,
                            channel="link",
                            now=now,
                            contact_id=inbound.contact_id_of(holder.contact_ref),
                        )
                    elif action == "fine":
                        await store.resolve_async(
                            conn,
                            holder.alert_id,
                            outcome="resident_ok",
                            note=None,
                            by=by,
                            channel="link",
                            now=now,
                        )
                    elif action == "help":
                        # help first: only when someone was told does the person on site
                        # count as having the alert in hand; when nobody could be, the
                        # alert keeps escalating and the page says so
                        alert = await store.get_alert_async(conn, holder.alert_id)
                        if alert is None or alert["status"] == "resolved":
                            raise AlertStateError(holder.alert_id, "already resolved")
                        queued = await request_help_async(
                            conn, holder.alert_id, by=by, ctx=service.escalation, now=now
                        )
                        if not queued:
                            done = "help_nobody"
                        elif alert["status"] != "acknowledged":
                            await store.acknowledge_async(
                                conn, holder.alert_id, by=by, channel="link", now=now
                            )
                    elif action == "resolve":
                        if outcome == "other" and not (note or "").strip():
                            done = "note_required"
                        else:
                            await store.resolve_async(
                                conn,
                                holder.alert_id,
                                outcome=outcome or "",
                                note=(note or "").strip()[:2000] or None,
                                by=by,
                                channel="link",
                                now=now,
                            )
                    else:
                        return Response(status_code=400)
            except AlertStateError:
                done = "already"
        return RedirectResponse(f"{request.url.path}?done={done}", status_code=303)

    @router.post("/alerts/sms/{secret}", include_in_schema=False)
    async def inbound_sms(request: Request, secret: str) -> Response:
        expected = settings.alerts.inbound_sms_token
        if not expected or not hmac.compare_digest(secret.encode(), expected.encode()):
            return JSONResponse({"error": "not_found"}, status_code=404)
        fields = await _fields(request)
        sender = _first(fields, "from", "sender", "phone", "mobile", "msisdn")
        text = _first(fields, "text", "message", "body", "content")
        if not sender or text is None:
            return JSONResponse({"error": "need 'from' and 'text'"}, status_code=400)
        async with service.pool.connection() as conn:
            reply = await inbound.acknowledge_by_sms_async(
                conn,
                sender,
                text,
                service.clock(),
                ttl_s=settings.alerts.token_ttl_s,
                default_country_code=settings.registry.default_country_code,
            )
        log.info(
            "inbound sms from=%s result=%s alert=%s", redact_phone(sender), reply.reason, reply.acknowledged
        )
        return JSONResponse(
            {"acknowledged": reply.acknowledged, "first": reply.first, "result": reply.reason}
        )

    return router


def create_app(settings: Settings, database_url: str, *, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    """A stand-alone app serving only the acknowledgement routes (`lovekey alerts serve`). Its
    pool is made here with `open=False` and opened by the lifespan, inside the running loop."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=4,
        open=False,
        name="lovekey-alerts-web",
        kwargs={"autocommit": True, "application_name": "lovekey-alerts-web"},
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=30)
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="LoveKey acknowledgements",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(create_router(settings, pool, clock=clock))
    return app


def _page_css() -> str:
    return (resources.files("lovekey.alerts") / "templates" / "ack.css").read_text(encoding="utf-8")


_CSS = _page_css()
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()

_NO_STORE = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never leak it onwards
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # the page's one stylesheet is inline (one request on a slow phone), allowed by its hash
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; base-uri 'none'"
    ),
}


def _templates() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("lovekey.alerts", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
    )


async def _fields(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = await request.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _first(fields: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = fields.get(name)
        if isinstance(value, str | int):
            return str(value)
    return None
