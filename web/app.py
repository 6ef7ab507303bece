"""The console application: `create_app(settings, database_url) -> FastAPI`.

Nothing connects when the app is created: its one pool (an `AsyncConnectionPool`; the staff
actions that change alerts and the acknowledgement pages it mounts use the alert store's async
variants over it) is made with `open=False`, opened by the app's lifespan inside the running
event loop, and closed when it shuts down. So the app can be served by `lovekey serve`,
mounted by `lovekey run`, or driven by tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.datastructures import URL
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lovekey.alerts.chains import ChainBook
from lovekey.config import Settings
from lovekey.redact import redact_url
from lovekey.web import i18n
from lovekey.web.deps import Console, NotSignedIn, language_for
from lovekey.web.password_gate import PasswordGate

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
# The console runs many small queries side by side on a machine it shares with ingest and the
# detectors: parallel workers (each rebuilding the same hash tables) and JIT compilation cost
# more than they save at this size (measured: device health 134 ms with 2 workers, loaded box).
SESSION_OPTIONS = "-c max_parallel_workers_per_gather=0 -c jit=off"
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings, database_url: str, *, clock: Clock = system_clock) -> FastAPI:
    """The console as an ASGI app. `clock` is the only source of time (tests pass their own)."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=settings.web.pool_max_size,
        open=False,
        name="lovekey-web",
        kwargs={"autocommit": True, "application_name": "lovekey-web", "options": SESSION_OPTIONS},
    )
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    console = Console(
        settings=settings,
        pool=pool,
        clock=clock,
        templates=templates,
        chains=ChainBook.load(settings.alerts.chains_file),
        password_gate=PasswordGate(
            max_concurrent=settings.web.max_concurrent_hashes, wait_s=settings.web.hash_wait_s
        ),
    )
    i18n.install(templates.env, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("console starting database=%s", redact_url(database_url))
        await pool.open(wait=True, timeout=30)
        try:
            yield
        finally:
            await pool.close()
            log.info("console stopped")

    # no public schema or docs page: `api.docs_router` serves them to signed-in staff, and
    # only when web.api_docs is set
    app = FastAPI(title="LoveKey console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = console
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    from lovekey.web import api, pages

    add_health_routes(app, pool)
    app.include_router(pages.router)
    app.include_router(api.router, prefix="/api")
    if settings.web.api_docs:
        app.include_router(api.docs_router, prefix="/api")
    mount_ack_pages(app, settings, pool, clock)

    app.add_exception_handler(NotSignedIn, _not_signed_in)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(psycopg.DataError, _value_the_database_cannot_hold)
    return app


# a readiness probe that waits longer than this is "not ready" (orchestrators give up at 1-5 s)
READY_TIMEOUT_S = 2.0


def add_health_routes(app: FastAPI, pool: AsyncConnectionPool[Any]) -> None:
    """`/healthz` (the process answers) and `/readyz` (the database answers `SELECT 1` within
    `READY_TIMEOUT_S`). No sign-in, no data beyond ok / not ok, and nothing audited: both
    are GETs that change nothing, so CSRF (checked on state-changing requests) never applies."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S), pool.connection(timeout=READY_TIMEOUT_S) as conn:
                await conn.execute("SELECT 1")
            database = "ok"
        except (TimeoutError, psycopg.Error, PoolTimeout):
            database = "not ok"
        ready = database == "ok"
        return JSONResponse(
            {"status": "ok" if ready else "not ok", "database": database},
            status_code=200 if ready else 503,
            headers={"cache-control": "no-store"},
        )


def mount_ack_pages(app: FastAPI, settings: Settings, pool: AsyncConnectionPool[Any], clock: Clock) -> None:
    """The alerts package's pages, served by the same process: the acknowledgement links in
    messages (`/a/{token}`) and the inbound-SMS webhook (`/alerts/sms/...`). They run on the
    console's own pool (opened and closed by its lifespan), so the console holds one pool. The
    console keeps its own pages off `/a` and `/alerts` so the two never collide."""
    from lovekey.alerts.ack_pages import create_router

    app.include_router(create_router(settings, pool, clock=clock))


async def _not_signed_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotSignedIn)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": "not_signed_in", "reason": exc.reason}, status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    login = URL(str(request.app.url_path_for("login_page")))
    response = RedirectResponse(
        str(login.include_query_params(next=target, reason=exc.reason)), status_code=303
    )
    if exc.reason == "expired":
        from lovekey.web.auth import SESSION_COOKIE

        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if request.url.path.startswith("/api/") or request.url.path.startswith("/static/"):
        return JSONResponse(
            {"error": _error_code(exc.status_code), "detail": exc.detail},
            status_code=exc.status_code,
            headers=exc.headers,
        )
    console: Console = request.app.state.console
    lang = language_for(request, console.settings, None)
    return console.templates.TemplateResponse(
        request,
        "error.html",
        {
            "lang": lang,
            "status": exc.status_code,
            "code": _error_code(exc.status_code),
            "staff": None,
            "csrf": request.cookies.get("lk_login_csrf", ""),
        },
        status_code=exc.status_code,
    )


# what a 422 says about each invalid field: where and why, never the value that was sent
# (FastAPI's own answer echoes it as `input`: a password typed into the sign-in form)
_VALIDATION_FIELDS = ("type", "loc", "msg")


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """A request that fails validation: 422 with the fields and reasons (JSON under /api,
    the error page elsewhere), without the values the client sent."""
    assert isinstance(exc, RequestValidationError)
    if request.url.path.startswith("/api/"):
        errors = [{k: e[k] for k in _VALIDATION_FIELDS if k in e} for e in exc.errors()]
        return JSONResponse({"error": "invalid", "detail": errors}, status_code=422)
    return await _http_error(request, StarletteHTTPException(status_code=422, detail="invalid"))


async def _value_the_database_cannot_hold(request: Request, exc: Exception) -> Response:
    """A value from the request that PostgreSQL refuses to hold (a NUL character in a text, a
    number past bigint in a page or offset) is the client's mistake: 400, not a 500 with a
    traceback. The connection's transaction was rolled back by the pool."""
    assert isinstance(exc, psycopg.DataError)
    log.info(
        "refused a request value the database cannot hold path=%r sqlstate=%s", request.url.path, exc.sqlstate
    )
    return await _http_error(request, StarletteHTTPException(status_code=400, detail="bad_value"))


def _error_code(status: int) -> str:
    return {
        400: "bad_request",
        401: "not_signed_in",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        422: "invalid",
        429: "too_many",
    }.get(status, "error")


class SecurityHeaders:
    """Headers every response carries: no framing, no sniffing; on the console's own pages a
    Content-Security-Policy that allows scripts and styles only from /static. Pages mounted
    from other packages (`/a/`, `/alerts/`) keep their own policy (theirs inline a style)."""

    _COMMON: tuple[tuple[bytes, bytes], ...] = (
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    )
    _CONSOLE: tuple[tuple[bytes, bytes], ...] = (
        (
            b"content-security-policy",
            b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
            b" object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    )
    _FOREIGN = ("/a/", "/alerts/")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        extra = [*self._COMMON]
        if not path.startswith(self._FOREIGN):
            extra += self._CONSOLE
            if not path.startswith("/static/"):
                extra.append((b"cache-control", b"no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                message["headers"] = headers + [h for h in extra if h[0] not in present]
            await send(message)

        await self.app(scope, receive, send_with_headers)
