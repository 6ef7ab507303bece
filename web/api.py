"""The JSON API under /api: the same data as the pages, scoped the same way.

Authentication is the console session cookie; every request that changes something must send
the session's CSRF token in the `X-CSRF-Token` header (`GET /api/me` returns it).
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from lovekey.errors import AlertStateError, ConsoleError
from lovekey.vocabulary import CHOSEN_OUTCOMES, ResidentStatus
from lovekey.web import actions, auth, queries
from lovekey.web.deps import CheckedSession, Conn, SignedIn, actor_for, console_of
from lovekey.web.reports import report_json
from lovekey.web.views import (
    ReportRequest,
    alert_or_404,
    build_resident_view,
    load_report,
    resident_or_404,
    resident_usage,
)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | memoryview):
        return None  # never serialise token digests or payloads
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_default, option=orjson.OPT_NON_STR_KEYS)


router = APIRouter(default_response_class=JSONBody)


@router.get("/me")
async def me(session: SignedIn) -> JSONBody:
    staff = session.staff
    return JSONBody(
        {
            "username": staff.username,
            "display_name": staff.display_name,
            "role": staff.role,
            "grid_ids": list(staff.scope.grid_ids),
            "community_ids": list(staff.scope.community_ids),
            "language": staff.language,
            "csrf_token": session.csrf_token,
            "session_expires_at": session.expires_at,
        }
    )


@router.get("/alerts")
async def alerts(
    conn: Conn,
    session: SignedIn,
    kind: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> JSONBody:
    rows = await queries.alert_queue(conn, session.staff.scope, kind=kind, offset=offset, limit=limit)
    return JSONBody({"alerts": rows, "offset": offset, "limit": limit})


@router.get("/provider-errors")
async def provider_errors(request: Request, conn: Conn, session: SignedIn) -> JSONBody:
    """Provider refusals the operator must fix, on alerts in scope, over the last 24 hours."""
    since = console_of(request).clock() - queries.OPERATOR_ERROR_WINDOW
    rows = await queries.operator_errors(conn, session.staff.scope, since=since)
    return JSONBody({"since": since, "provider_errors": rows})


@router.get("/alerts/{alert_id}")
async def alert(request: Request, conn: Conn, session: SignedIn, alert_id: int) -> JSONBody:
    return JSONBody(await alert_or_404(request, conn, session.staff, alert_id))


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge(request: Request, conn: Conn, session: CheckedSession, alert_id: int) -> JSONBody:
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
        raise HTTPException(status_code=409, detail=exc.detail) from exc
    return JSONBody({"id": alert_id, "acknowledged": True, "first": first})


class Resolution(BaseModel):
    outcome: str = Field(description="one of: " + ", ".join(CHOSEN_OUTCOMES))
    note: str | None = Field(None, max_length=actions.MAX_NOTE)


@router.post("/alerts/{alert_id}/resolve")
async def resolve(
    request: Request, conn: Conn, session: CheckedSession, alert_id: int, body: Resolution
) -> JSONBody:
    await alert_or_404(request, conn, session.staff, alert_id)
    console = console_of(request)
    try:
        await actions.resolve_alert(
            conn,
            alert_id,
            body.outcome,
            body.note,
            actor_for(request, session.staff),
            console.clock(),
        )
    except AlertStateError as exc:
        raise HTTPException(status_code=409, detail=exc.detail) from exc
    return JSONBody({"id": alert_id, "resolved": True, "outcome": body.outcome})


@router.get("/residents")
async def residents(
    conn: Conn,
    session: SignedIn,
    q: Annotated[str, Query(max_length=100)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONBody:
    rows = await queries.resident_list(conn, session.staff.scope, search=q, offset=offset, limit=limit)
    return JSONBody({"residents": rows, "offset": offset, "limit": limit})


@router.get("/residents/{resident_id}")
async def resident(request: Request, conn: Conn, session: SignedIn, resident_id: str) -> JSONBody:
    console = console_of(request)
    row = await resident_or_404(request, conn, session.staff, resident_id)
    view = await build_resident_view(conn, console, row)
    await auth.audit(
        conn, actor_for(request, session.staff), "view_resident", f"resident:{resident_id}", console.clock()
    )
    return JSONBody(view)


@router.get("/residents/{resident_id}/usage")
async def usage(
    request: Request,
    conn: Conn,
    session: SignedIn,
    resident_id: str,
    days: Annotated[int, Query(ge=1, le=31)] = 7,
) -> JSONBody:
    console = console_of(request)
    row = await resident_or_404(request, conn, session.staff, resident_id)
    return JSONBody(await resident_usage(conn, console, row, days=days))


class Absence(BaseModel):
    """`until` set: away until then; `until` null: home again."""

    until: datetime | None = None
    reason: str = Field("", max_length=actions.MAX_REASON)


@router.post("/residents/{resident_id}/absence")
async def absence(
    request: Request, conn: Conn, session: CheckedSession, resident_id: str, body: Absence
) -> JSONBody:
    console = console_of(request)
    await resident_or_404(request, conn, session.staff, resident_id)
    actor = actor_for(request, session.staff)
    now = console.clock()
    try:
        if body.until is None:
            changed = await actions.clear_absence(conn, resident_id, actor=actor, now=now)
            return JSONBody({"id": resident_id, "status": ResidentStatus.ACTIVE, "changed": changed})
        resolved = await actions.set_absence(
            conn,
            console.chains,
            resident_id,
            until=body.until,
            reason=body.reason,
            actor=actor,
            now=now,
        )
    except ConsoleError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    return JSONBody(
        {
            "id": resident_id,
            "status": ResidentStatus.AWAY,
            "away_until": body.until,
            "resolved_alerts": resolved,
        }
    )


@router.get("/devices/health")
async def device_health(
    request: Request, conn: Conn, session: SignedIn, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> JSONBody:
    console = console_of(request)
    web = console.settings.web
    health = await queries.device_health(
        conn,
        session.staff.scope,
        now=console.clock(),
        grace_s=web.silent_grace_s,
        low_battery_v=web.low_battery_v,
        limit=limit,
    )
    return JSONBody(health)


@router.get("/reports")
async def reports(
    request: Request, conn: Conn, session: SignedIn, months: Annotated[int, Query(ge=1, le=36)] = 6
) -> JSONBody:
    report = await load_report(conn, console_of(request), session.staff, ReportRequest(months))
    return JSONBody(report_json(report))


# ---------------------------------------------------------------- the schema, when switched on
# Mounted by `create_app` only when `web.api_docs` is true, and then for signed-in staff only:
# the schema is a map of every endpoint and parameter, nothing a stranger needs.
docs_router = APIRouter()

_SWAGGER_PAGE = get_swagger_ui_html(openapi_url="/api/openapi.json", title="LoveKey console API").body
_SWAGGER_SCRIPT = re.search(rb"<script>(.*?)</script>", bytes(_SWAGGER_PAGE), re.DOTALL)
assert _SWAGGER_SCRIPT is not None, "FastAPI's Swagger page changed shape"
# the console's own policy allows no other origin and no inline script; this page needs Swagger
# UI from its CDN and its one inline start-up script, allowed by hash rather than 'unsafe-inline'
_SWAGGER_POLICY = (
    "default-src 'none'; script-src https://cdn.jsdelivr.net 'sha256-"
    + base64.b64encode(hashlib.sha256(_SWAGGER_SCRIPT.group(1)).digest()).decode()
    + "'; style-src https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com;"
    " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@docs_router.get("/openapi.json", include_in_schema=False)
async def openapi_schema(request: Request, session: SignedIn) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@docs_router.get("/docs", include_in_schema=False)
async def api_docs(session: SignedIn) -> HTMLResponse:
    return HTMLResponse(_SWAGGER_PAGE, headers={"content-security-policy": _SWAGGER_POLICY})
