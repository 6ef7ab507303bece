"""Server-rendered console pages (HTML). Every form POST carries the session's CSRF token;
every read goes through a scoped query; every action is audited."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import URL

from lovekey.errors import AlertStateError, ConsoleError
from lovekey.vocabulary import CHOSEN_OUTCOMES
from lovekey.web import actions, auth, i18n, queries
from lovekey.web.auth import LANGUAGE_COOKIE, LOGIN_CSRF_COOKIE, SESSION_COOKIE, Session
from lovekey.web.deps import (
    CheckedSession,
    Conn,
    SignedIn,
    actor_for,
    console_of,
    language_for,
)
from lovekey.web.password_gate import PasswordGateBusy
from lovekey.web.views import (
    ReportRequest,
    alert_or_404,
    build_resident_view,
    load_report,
    resident_or_404,
)

router = APIRouter(default_response_class=HTMLResponse)

PAGE_SIZE = 50


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    session: Session | None = None,
    status_code: int = 200,
) -> Response:
    console = console_of(request)
    staff = session.staff if session else None
    lang = language_for(request, console.settings, staff)
    base = {
        "lang": lang,
        "staff": staff,
        "csrf": session.csrf_token if session else request.cookies.get(LOGIN_CSRF_COOKIE, ""),
        "now": console.clock(),
        "zone": console.settings.zone,
        "path": request.url.path,
        "notice": _known_notice(request.query_params.get("notice")),
    }
    return console.templates.TemplateResponse(request, template, {**base, **context}, status_code=status_code)


def _known_notice(notice: str | None) -> str | None:
    """Only notices the catalogue knows are shown: a link cannot put words on the page."""
    return notice if notice and f"notice_{notice}" in i18n.CATALOGUE else None


def _redirect(url: URL | str, **params: str) -> RedirectResponse:
    target = URL(str(url)).include_query_params(**params) if params else url
    return RedirectResponse(str(target), status_code=303)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect to another host after signing in."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/queue"


# ------------------------------------------------------------------------- sign in and out


@router.get("/", include_in_schema=False)
async def home() -> RedirectResponse:
    return RedirectResponse("/queue", status_code=303)


@router.get("/login", name="login_page")
async def login_page(
    request: Request, next: str | None = None, reason: str | None = None, error: str | None = None
) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or auth.new_token()
    response = render(
        request,
        "login.html",
        {"next": _safe_next(next), "reason": reason, "error": error, "csrf": token},
    )
    _set_cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.post("/login")
async def login(
    request: Request,
    conn: Conn,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/queue",
) -> Response:
    console = console_of(request)
    web = console.settings.web
    now = console.clock()
    username = username.strip()
    actor = actor_for(request, None, username)
    if not auth.same_token(request.cookies.get(LOGIN_CSRF_COOKIE), csrf):
        await auth.audit(conn, actor, "csrf_rejected", "/login", now, {"method": "POST"})
        raise HTTPException(status_code=403, detail="csrf")
    # count this attempt against its address, then against the name from that address, both
    # before the password is hashed; see auth's "sign-in throttling" for why both and why so
    address = actor.ip or "unknown"
    per_address = await auth.claim_attempt(conn, auth.address_key(address), now, web.login_lockout_s)
    if per_address.attempts > web.login_address_max_failures:
        if per_address.attempts == web.login_address_max_failures + 1:  # once per window, not per request
            await auth.audit(conn, actor, "login_refused", f"user:{username}", now, {"reason": "address"})
        return _too_many(request, per_address.retry_after_s(now))
    account = auth.account_key(username, address)
    per_account = await auth.claim_attempt(conn, account, now, web.login_lockout_s)
    if per_account.attempts > web.login_max_failures:
        await auth.audit(conn, actor, "login_refused", f"user:{username}", now, {"reason": "locked"})
        return _redirect(request.app.url_path_for("login_page"), error="locked", next=_safe_next(next))
    staff, password_hash = await auth.find_login(conn, username)
    try:
        ok, rehash = await console.password_gate.run(auth.verify_password, password_hash, password)
    except PasswordGateBusy as exc:
        # the console was busy, not the client wrong: this attempt counts against neither
        await auth.return_attempt(conn, auth.address_key(address))
        await auth.return_attempt(conn, account)
        return _too_many(request, exc.retry_after_s)
    if not ok or staff is None:
        await auth.audit(conn, actor, "login_failed", f"user:{username}", now)
        return _redirect(request.app.url_path_for("login_page"), error="bad_login", next=_safe_next(next))
    await auth.return_attempt(conn, auth.address_key(address))
    await auth.clear_attempts(conn, account)
    await auth.prune_attempts(conn, now, web.login_lockout_s)
    if rehash:
        # a busy console signs the user in with the old hash and upgrades it another time
        with contextlib.suppress(PasswordGateBusy):
            new_hash = await console.password_gate.run(auth.hash_password, password)
            await auth.store_rehash(conn, staff.id, new_hash, now)
    await auth.prune_sessions(conn, now)
    token, _ = await auth.create_session(
        conn, staff, now=now, ttl_s=web.session_ttl_s, ip=actor.ip, user_agent=actor.user_agent
    )
    await auth.audit(conn, actor_for(request, staff), "login", f"user:{staff.username}", now)
    response = _redirect(_safe_next(next))
    _set_cookie(request, response, SESSION_COOKIE, token, max_age=web.session_ttl_s)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


def _too_many(request: Request, retry_after_s: int) -> Response:
    response = render(request, "error.html", {"status": 429, "code": "too_many"}, status_code=429)
    response.headers["retry-after"] = str(retry_after_s)
    return response


@router.post("/logout")
async def logout(request: Request, conn: Conn, session: CheckedSession) -> Response:
    now = console_of(request).clock()
    await auth.end_session(conn, session.digest)
    await auth.audit(conn, actor_for(request, session.staff), "logout", f"user:{session.staff.username}", now)
    response = _redirect(request.app.url_path_for("login_page"), reason="signed_out")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/language")
async def choose_language(
    request: Request,
    conn: Conn,
    language: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
    back: Annotated[str, Form()] = "/queue",
) -> Response:
    """Switch language: stored on the staff member when signed in, else in a cookie."""
    if language not in i18n.LANGUAGES:
        raise HTTPException(status_code=400, detail="language")
    console = console_of(request)
    now = console.clock()
    token = request.cookies.get(SESSION_COOKIE)
    session = await auth.load_session(conn, token) if token else None
    if session and not auth.session_expired(session, now, idle_s=console.settings.web.session_idle_s):
        if not auth.same_token(session.csrf_token, csrf):
            raise HTTPException(status_code=403, detail="csrf")
        await auth.set_language(conn, session.staff.id, language, now)
        await auth.audit(
            conn,
            actor_for(request, session.staff),
            "set_language",
            f"user:{session.staff.username}",
            now,
            {"language": language},
        )
    elif not auth.same_token(request.cookies.get(LOGIN_CSRF_COOKIE), csrf):
        raise HTTPException(status_code=403, detail="csrf")
    response = _redirect(_safe_next(back))
    _set_cookie(request, response, LANGUAGE_COOKIE, language, max_age=365 * 24 * 3600, http_only=False)
    return response


def _set_cookie(
    request: Request, response: Response, name: str, value: str, *, max_age: int, http_only: bool = True
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=http_only,
        samesite="lax",
        secure=not console_of(request).settings.web.insecure_cookies,
    )


# ------------------------------------------------------------------------------ the queue


@router.get("/queue", name="queue")
async def queue(
    request: Request,
    conn: Conn,
    session: SignedIn,
    kind: str | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
) -> Response:
    kind = kind or None
    scope = session.staff.scope
    alerts = await queries.alert_queue(conn, scope, kind=kind, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    counts = await queries.alert_counts(conn, scope, kind=kind)
    total = sum(counts.values())
    # what the operator must fix in the provider settings, first, whatever the filter
    since = console_of(request).clock() - queries.OPERATOR_ERROR_WINDOW
    operator_errors = await queries.operator_errors(conn, scope, since=since)
    return render(
        request,
        "queue.html",
        {
            "operator_errors": operator_errors,
            "alerts": alerts,
            "kind": kind,
            "kinds": queries.QUEUE_KINDS,
            "counts": counts,
            "total": total,
            "page": page,
            "first": (page - 1) * PAGE_SIZE + 1,
            "more": page * PAGE_SIZE < total,
        },
        session=session,
    )


@router.get("/queue/{alert_id}", name="alert_page")
async def alert_page(request: Request, conn: Conn, session: SignedIn, alert_id: int) -> Response:
    return await _render_alert(request, conn, session, alert_id)


async def _render_alert(
    request: Request, conn: Conn, session: Session, alert_id: int, *, error: str | None = None
) -> Response:
    alert = await alert_or_404(request, conn, session.staff, alert_id)
    return render(
        request,
        "alert.html",
        {"alert": alert, "outcomes": CHOSEN_OUTCOMES, "error": error},
        session=session,
        status_code=409 if error else 200,
    )


@router.post("/queue/{alert_id}/acknowledge", name="acknowledge")
async def acknowledge(request: Request, conn: Conn, session: CheckedSession, alert_id: int) -> Response:
    await alert_or_404(request, conn, session.staff, alert_id)
    console = console_of(request)
    try:
        first = await actions.acknowledge_alert(
            conn,
            alert_id,
            actor_for(request, session.staff),
            console.clock(),
        )
    except AlertStateError as exc:
        return await _render_alert(request, conn, session, alert_id, error=exc.detail)
    return _redirect(
        request.app.url_path_for("alert_page", alert_id=alert_id),
        notice="acknowledged" if first else "already_acknowledged",
    )


@router.post("/queue/{alert_id}/resolve", name="resolve")
async def resolve(
    request: Request,
    conn: Conn,
    session: CheckedSession,
    alert_id: int,
    outcome: Annotated[str, Form()],
    note: Annotated[str, Form(max_length=actions.MAX_NOTE)] = "",
) -> Response:
    await alert_or_404(request, conn, session.staff, alert_id)
    console = console_of(request)
    try:
        await actions.resolve_alert(
            conn,
            alert_id,
            outcome,
            note,
            actor_for(request, session.staff),
            console.clock(),
        )
    except AlertStateError as exc:
        return await _render_alert(request, conn, session, alert_id, error=exc.detail)
    return _redirect(request.app.url_path_for("alert_page", alert_id=alert_id), notice="resolved")


# ------------------------------------------------------------------------------ residents


@router.get("/residents", name="residents")
async def residents(
    request: Request,
    conn: Conn,
    session: SignedIn,
    q: Annotated[str, Query(max_length=100)] = "",
    page: Annotated[int, Query(ge=1)] = 1,
) -> Response:
    rows = await queries.resident_list(
        conn, session.staff.scope, search=q, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE + 1
    )
    return render(
        request,
        "residents.html",
        {"residents": rows[:PAGE_SIZE], "q": q, "page": page, "more": len(rows) > PAGE_SIZE},
        session=session,
    )


@router.get("/residents/{resident_id}", name="resident_page")
async def resident_page(request: Request, conn: Conn, session: SignedIn, resident_id: str) -> Response:
    console = console_of(request)
    row = await resident_or_404(request, conn, session.staff, resident_id)
    await auth.audit(
        conn, actor_for(request, session.staff), "view_resident", f"resident:{resident_id}", console.clock()
    )
    return await _render_resident(request, conn, session, row)


async def _render_resident(
    request: Request, conn: Conn, session: Session, row: dict[str, Any], *, error: str | None = None
) -> Response:
    view = await build_resident_view(conn, console_of(request), row)
    return render(
        request, "resident.html", {**view, "error": error}, session=session, status_code=422 if error else 200
    )


@router.post("/residents/{resident_id}/absence", name="absence")
async def absence(
    request: Request,
    conn: Conn,
    session: CheckedSession,
    resident_id: str,
    action: Annotated[str, Form()],
    until: Annotated[str, Form()] = "",
    reason: Annotated[str, Form(max_length=actions.MAX_REASON)] = "",
) -> Response:
    console = console_of(request)
    row = await resident_or_404(request, conn, session.staff, resident_id)
    actor = actor_for(request, session.staff)
    now = console.clock()
    page = request.app.url_path_for("resident_page", resident_id=resident_id)
    try:
        if action == "clear":
            await actions.clear_absence(conn, resident_id, actor=actor, now=now)
            return _redirect(page, notice="absence_cleared")
        if action != "set":
            raise HTTPException(status_code=400, detail="action")
        end = _local_datetime(until, console.settings.zone)
        await actions.set_absence(
            conn,
            console.chains,
            resident_id,
            until=end,
            reason=reason,
            actor=actor,
            now=now,
        )
    except ConsoleError as exc:
        return await _render_resident(request, conn, session, row, error=str(exc))
    return _redirect(page, notice="absence_set")


def _local_datetime(text: str, zone: Any) -> datetime:
    """`2025-03-12T18:00` from a datetime-local input, in the district's time zone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConsoleError("give the end of the absence as a date and time") from exc
    return value.replace(tzinfo=zone) if value.tzinfo is None else value


# ------------------------------------------------------------------ devices, reports, audit


@router.get("/devices", name="devices")
async def devices(request: Request, conn: Conn, session: SignedIn) -> Response:
    console = console_of(request)
    web = console.settings.web
    health = await queries.device_health(
        conn,
        session.staff.scope,
        now=console.clock(),
        grace_s=web.silent_grace_s,
        low_battery_v=web.low_battery_v,
    )
    return render(request, "devices.html", {"health": health}, session=session)


@router.get("/reports", name="reports")
async def reports(
    request: Request, conn: Conn, session: SignedIn, months: Annotated[int, Query(ge=1, le=36)] = 6
) -> Response:
    from lovekey.web.reports import report_charts

    report = await load_report(conn, console_of(request), session.staff, ReportRequest(months))
    return render(
        request,
        "reports.html",
        {"report": report, "months": months, "charts": report_charts(report)},
        session=session,
    )


@router.get("/reports.csv", name="reports_csv")
async def reports_csv(
    request: Request, conn: Conn, session: SignedIn, months: Annotated[int, Query(ge=1, le=36)] = 6
) -> Response:
    from lovekey.web.reports import report_csv

    console = console_of(request)
    report = await load_report(conn, console, session.staff, ReportRequest(months))
    await auth.audit(
        conn, actor_for(request, session.staff), "export_csv", "reports", console.clock(), {"months": months}
    )
    name = f"lovekey-report-{report.start:%Y%m}-{report.end:%Y%m}.csv"
    return Response(
        report_csv(report).encode("utf-8-sig"),  # with a BOM so spreadsheet programs read UTF-8
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


@router.get("/audit", name="audit")
async def audit_page(
    request: Request, conn: Conn, session: SignedIn, before: Annotated[int | None, Query(ge=1)] = None
) -> Response:
    if not session.staff.scope.is_admin:
        await auth.audit(
            conn, actor_for(request, session.staff), "access_denied", "audit", console_of(request).clock()
        )
        raise HTTPException(status_code=403, detail="admin only")
    rows = await queries.audit_entries(conn, before_id=before)
    return render(request, "audit.html", {"entries": rows}, session=session)
