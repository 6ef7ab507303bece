"""Request plumbing shared by pages and API: the console's state, a pooled connection per
request, the signed-in session, CSRF checks, the acting staff member and the language."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request
from fastapi.templating import Jinja2Templates
from psycopg_pool import AsyncConnectionPool

from lovekey.alerts.chains import ChainBook
from lovekey.config import Settings
from lovekey.web import i18n
from lovekey.web.auth import (
    LANGUAGE_COOKIE,
    SESSION_COOKIE,
    Actor,
    Session,
    Staff,
    audit,
    client_address,
    expire_session,
    load_session,
    same_token,
    session_expired,
    touch_session,
)
from lovekey.web.password_gate import PasswordGate

CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"


@dataclass(frozen=True, slots=True)
class Console:
    settings: Settings
    pool: AsyncConnectionPool[Any]
    clock: Callable[[], datetime]
    templates: Jinja2Templates
    chains: ChainBook  # escalation chains: which kinds an absence suppresses
    password_gate: PasswordGate  # bounds the argon2 work running at once


class NotSignedIn(Exception):
    """No valid session: `reason` is 'missing' (none or signed out) or 'expired'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


async def connection(request: Request) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """One pooled (autocommit) connection for the whole request."""
    async with console_of(request).pool.connection() as conn:
        yield conn


# in route signatures only: FastAPI hands in the request's connection (helpers take `queries.AsyncConn`)
Conn = Annotated[psycopg.AsyncConnection[Any], Depends(connection)]


async def current_session(request: Request, conn: Conn) -> Session:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise NotSignedIn("missing")
    session = await load_session(conn, token)
    if session is None:
        raise NotSignedIn("missing")
    console = console_of(request)
    now = console.clock()
    if session_expired(session, now, idle_s=console.settings.web.session_idle_s):
        if await expire_session(conn, session.digest):
            await audit(
                conn,
                actor_for(request, session.staff),
                "session_expired",
                f"user:{session.staff.username}",
                now,
            )
        raise NotSignedIn("expired")
    await touch_session(conn, session, now)
    request.state.session = session
    return session


SignedIn = Annotated[Session, Depends(current_session)]


async def checked_session(request: Request, session: SignedIn, conn: Conn) -> Session:
    """The session, for a request that changes something: it must carry the session's CSRF
    token (form field `csrf` or header `X-CSRF-Token`), or it is refused with 403."""
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not same_token(session.csrf_token, given):
        await audit(
            conn,
            actor_for(request, session.staff),
            "csrf_rejected",
            request.url.path,
            console_of(request).clock(),
            {"method": request.method},
        )
        raise HTTPException(status_code=403, detail="csrf")
    return session


CheckedSession = Annotated[Session, Depends(checked_session)]


def actor_for(request: Request, staff: Staff | None, username: str = "") -> Actor:
    return Actor(
        staff_id=staff.id if staff else None,
        username=staff.username if staff else username,
        ip=client_address(
            request.client.host if request.client else None,
            request.headers.get("x-forwarded-for"),
            console_of(request).settings.web.trusted_proxies,
        ),
        user_agent=request.headers.get("user-agent", ""),
    )


def language_for(request: Request, settings: Settings, staff: Staff | None) -> str:
    """The staff member's choice, else the language cookie, else Accept-Language."""
    return i18n.choose(
        staff.language if staff else None,
        request.cookies.get(LANGUAGE_COOKIE),
        request.headers.get("accept-language"),
        default=settings.web.default_language,
    )
