"""Staff sign-in: argon2id password hashes, server-side sessions, CSRF tokens, the audit log.

A session is a random token in an HttpOnly cookie; the database keeps only its SHA-256 with
the staff member, a per-session CSRF token and the session's deadlines. Every form POST and
every API call that changes something must present that CSRF token (a hidden field, or the
`X-CSRF-Token` header). The sign-in form itself, which has no session yet, uses a
double-submit cookie.

Time comes from the caller (`now`); nothing here reads a clock.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from lovekey.web.scope import Scope

# argon2id with the library's defaults (RFC 9106 "low memory" profile: t=3, m=64 MiB, p=4)
_HASHER = PasswordHasher()

SESSION_COOKIE = "lk_session"
LOGIN_CSRF_COOKIE = "lk_login_csrf"
LANGUAGE_COOKIE = "lk_lang"
# last_seen_at is written at most this often per session (not on every request)
_TOUCH_EVERY = timedelta(seconds=60)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the name is unknown, so a miss costs as much as a wrong password."""
    return _HASHER.hash(secrets.token_urlsafe(16))


def verify_password(password_hash: str | None, password: str) -> tuple[bool, bool]:
    """(matches, needs_rehash). An unknown user (hash None) still costs one verification."""
    try:
        _HASHER.verify(password_hash or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False, False
    if password_hash is None:
        return False, False
    return True, _HASHER.check_needs_rehash(password_hash)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def same_token(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; a missing token never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


@dataclass(frozen=True, slots=True)
class Staff:
    id: int
    username: str
    display_name: str
    language: str | None
    scope: Scope

    @property
    def role(self) -> str:
        return self.scope.role

    @property
    def label(self) -> str:
        return self.display_name or self.username


@dataclass(frozen=True, slots=True)
class Session:
    staff: Staff
    digest: bytes
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


def session_expired(session: Session, now: datetime, *, idle_s: int) -> bool:
    """Past its absolute end, or idle for longer than `idle_s`."""
    return now >= session.expires_at or now >= session.last_seen_at + timedelta(seconds=idle_s)


def _staff_from_row(row: dict[str, Any]) -> Staff:
    scope = Scope(row["role"], tuple(row["grid_ids"]), tuple(row["community_ids"]))
    return Staff(row["id"], row["username"], row["display_name"], row["language"], scope)


_STAFF_COLUMNS = "u.id, u.username, u.display_name, u.role, u.grid_ids, u.community_ids, u.language"


async def find_login(conn: psycopg.AsyncConnection[Any], username: str) -> tuple[Staff | None, str | None]:
    """The active staff member of that name and their password hash (None, None if unknown)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT " + _STAFF_COLUMNS + ", u.password_hash FROM staff_user u"  # noqa: S608 - constant
            " WHERE u.username = %s AND u.active",
            (username,),
        )
        row = await cur.fetchone()
    if row is None:
        return None, None
    return _staff_from_row(row), row["password_hash"]


# ---------------------------------------------------------------------- sign-in throttling
# Two counters per attempt, both in `login_throttle`: the client address (whatever the name) and
# the name from that address. Keying the name's counter by address too means a stranger who
# guesses wrong locks out only themselves, never the real user at another address; the address
# counter bounds how many names one address may try, so the many-names way round that limit is
# closed as well. An attempt is counted before its password is hashed (the expensive part).


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[IPv4Network | IPv6Network]
) -> str | None:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the last
    address in X-Forwarded-For that is not itself a trusted proxy (the ones before it are
    whatever the client chose to send)."""
    address = peer
    hops = [hop.strip() for hop in forwarded_for.split(",")] if forwarded_for else []
    while address is not None and hops and _is_trusted(address, trusted_proxies):
        address = hops.pop() or None
    return address


def _is_trusted(address: str, trusted_proxies: Sequence[IPv4Network | IPv6Network]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted_proxies)


def address_key(address: str) -> str:
    return f"addr:{address}"


def account_key(username: str, address: str) -> str:
    return f"user:{username} addr:{address}"


@dataclass(frozen=True, slots=True)
class Claim:
    """The attempts counted under a key in the current window, this one included."""

    attempts: int
    window_end: datetime

    def retry_after_s(self, now: datetime) -> int:
        return max(1, math.ceil((self.window_end - now).total_seconds()))


# One statement: the row lock taken by ON CONFLICT orders parallel attempts, so each sees its
# own count. A window older than window_s starts again at this attempt.
_CLAIM_SQL = """
INSERT INTO login_throttle AS t (key, window_start, attempts) VALUES (%(key)s, %(now)s, 1)
ON CONFLICT (key) DO UPDATE SET
    window_start = CASE WHEN t.window_start <= %(stale)s THEN %(now)s ELSE t.window_start END,
    attempts = CASE WHEN t.window_start <= %(stale)s THEN 1 ELSE t.attempts + 1 END
RETURNING attempts, window_start
"""


async def claim_attempt(conn: psycopg.AsyncConnection[Any], key: str, now: datetime, window_s: int) -> Claim:
    window = timedelta(seconds=window_s)
    cur = await conn.execute(_CLAIM_SQL, {"key": key, "now": now, "stale": now - window})
    row = await cur.fetchone()
    assert row is not None
    return Claim(int(row[0]), row[1] + window)


async def return_attempt(conn: psycopg.AsyncConnection[Any], key: str) -> None:
    """A successful sign-in does not count against its address."""
    await conn.execute(
        "UPDATE login_throttle SET attempts = attempts - 1 WHERE key = %s AND attempts > 0", (key,)
    )


async def clear_attempts(conn: psycopg.AsyncConnection[Any], key: str) -> None:
    """The real user signed in: the name's failures from that address are forgiven."""
    await conn.execute("DELETE FROM login_throttle WHERE key = %s", (key,))


async def prune_attempts(conn: psycopg.AsyncConnection[Any], now: datetime, window_s: int) -> int:
    cur = await conn.execute(
        "DELETE FROM login_throttle WHERE window_start <= %s", (now - timedelta(seconds=window_s),)
    )
    return cur.rowcount


async def store_rehash(
    conn: psycopg.AsyncConnection[Any], staff_id: int, password_hash: str, now: datetime
) -> None:
    await conn.execute(
        "UPDATE staff_user SET password_hash = %s, updated_at = %s WHERE id = %s",
        (password_hash, now, staff_id),
    )


async def create_session(
    conn: psycopg.AsyncConnection[Any],
    staff: Staff,
    *,
    now: datetime,
    ttl_s: int,
    ip: str | None,
    user_agent: str,
) -> tuple[str, Session]:
    """A new session; returns the cookie token (shown once, never stored) and the session."""
    token = new_token()
    session = Session(
        staff=staff,
        digest=token_digest(token),
        csrf_token=new_token(),
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    await conn.execute(
        """
        INSERT INTO staff_session (token_sha256, staff_id, csrf_token, created_at, last_seen_at,
                                   expires_at, ip, user_agent)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (session.digest, staff.id, session.csrf_token, now, now, session.expires_at, ip, user_agent[:300]),
    )
    return token, session


async def load_session(conn: psycopg.AsyncConnection[Any], token: str) -> Session | None:
    """The session of a cookie token with its (active) staff member, expired or not."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT " + _STAFF_COLUMNS + ", s.token_sha256, s.csrf_token, s.created_at,"  # noqa: S608
            " s.last_seen_at, s.expires_at"
            " FROM staff_session s JOIN staff_user u ON u.id = s.staff_id"
            " WHERE s.token_sha256 = %s AND u.active",
            (token_digest(token),),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    return Session(
        staff=_staff_from_row(row),
        digest=row["token_sha256"],
        csrf_token=row["csrf_token"],
        created_at=row["created_at"],
        last_seen_at=row["last_seen_at"],
        expires_at=row["expires_at"],
    )


async def touch_session(conn: psycopg.AsyncConnection[Any], session: Session, now: datetime) -> None:
    """Move the idle deadline; written at most once a minute per session."""
    if now - session.last_seen_at >= _TOUCH_EVERY:
        await conn.execute(
            "UPDATE staff_session SET last_seen_at = %s WHERE token_sha256 = %s",
            (now, session.digest),
        )


async def end_session(conn: psycopg.AsyncConnection[Any], digest: bytes) -> None:
    await conn.execute("DELETE FROM staff_session WHERE token_sha256 = %s", (digest,))


async def expire_session(conn: psycopg.AsyncConnection[Any], digest: bytes) -> bool:
    """Mark a session found expired as over for good (its end moves back to its start), so
    every later request with it, even one racing this one, is told 'expired'. True the
    first time only."""
    cur = await conn.execute(
        "UPDATE staff_session SET expires_at = created_at"
        " WHERE token_sha256 = %s AND expires_at > created_at",
        (digest,),
    )
    return cur.rowcount == 1


# expired sessions are kept this long (to say "expired" rather than "signed out"), then deleted
KEEP_EXPIRED = timedelta(days=1)


async def prune_sessions(conn: psycopg.AsyncConnection[Any], now: datetime) -> int:
    cur = await conn.execute("DELETE FROM staff_session WHERE expires_at < %s", (now - KEEP_EXPIRED,))
    return cur.rowcount


async def set_language(
    conn: psycopg.AsyncConnection[Any], staff_id: int, language: str, now: datetime
) -> None:
    await conn.execute(
        "UPDATE staff_user SET language = %s, updated_at = %s WHERE id = %s",
        (language, now, staff_id),
    )


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts and from where, for the audit log."""

    staff_id: int | None
    username: str
    ip: str | None
    user_agent: str


async def audit(
    conn: psycopg.AsyncConnection[Any],
    actor: Actor,
    action: str,
    target: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(AUDIT_SQL, audit_params(actor, action, target, now, detail))


def audit_sync(
    conn: psycopg.Connection[Any],
    actor: Actor,
    action: str,
    target: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    conn.execute(AUDIT_SQL, audit_params(actor, action, target, now, detail))


AUDIT_SQL = (
    "INSERT INTO audit_log (at, staff_id, username, action, target, ip, user_agent, detail)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)


def audit_params(
    actor: Actor, action: str, target: str, now: datetime, detail: dict[str, Any] | None
) -> tuple[Any, ...]:
    return (
        now,
        actor.staff_id,
        actor.username,
        action,
        target,
        actor.ip,
        actor.user_agent[:300],
        Jsonb(detail or {}),
    )
