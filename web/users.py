"""Staff accounts, for the command line: create, list, disable, set a password.

Synchronous psycopg; the caller passes a connection and owns the transaction. Each change
is written to the audit log with the acting process as `cli`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from lovekey.errors import ConsoleError
from lovekey.vocabulary import ConsoleRole
from lovekey.web.auth import Actor, audit_sync, hash_password
from lovekey.web.scope import Scope

CLI_ACTOR = Actor(staff_id=None, username="cli", ip=None, user_agent="lovekey users")

# The policy (NIST SP 800-63B: length and a blocklist, no composition rules). A console account
# sees residents' addresses and phone numbers, and its sign-in is reachable from the network.
MIN_PASSWORD_CHARS = 12
MIN_DISTINCT_CHARS = 5  # refuses "aaaaaaaaaaaa" and "abababababab"
# a user name this short ("li") is too common a substring to forbid inside passwords
MIN_NAME_CHARS_CHECKED = 3
# The most used passwords of 12 characters or more (from the public breach-corpus top lists,
# lower-cased); shorter ones fail on length. Not a breach database: the first guesses of anyone.
COMMON_PASSWORDS = frozenset(
    {
        "123456789012", "1234567890123", "12345678901234", "123456789123", "123123123123",
        "qwertyuiop12", "qwertyuiop123", "qwerty123456", "1q2w3e4r5t6y", "1qaz2wsx3edc",
        "qazwsxedcrfv", "zaq12wsxcde3", "asdfghjkl123", "zxcvbnm12345", "password1234",
        "password12345", "password123!", "passw0rd1234", "p@ssw0rd1234", "p@ssword1234",
        "iloveyou1234", "welcome12345", "administrator", "admin1234567", "admin@123456",
        "letmein12345", "changeme1234", "abc123456789", "abcdefghijkl", "a1b2c3d4e5f6",
        "woaini1314520", "woaini123456",
        "football1234", "baseball1234", "sunshine1234", "princess1234", "superman1234",
        "trustno1trustno1", "qwertyqwerty", "asdfasdfasdf", "lovekey12345", "lovekey2026!",
    }
)  # fmt: skip


def check_password(password: str, username: str) -> None:
    """Refuse a password a guesser would try early: short, digits only, one of the most common,
    the user name inside it, or a few characters repeated."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConsoleError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if password.strip() != password or not password.isprintable():
        raise ConsoleError("a password may not start or end with spaces or hold control characters")
    if password.isdigit():
        raise ConsoleError("a password may not be digits only")
    if password.casefold() in COMMON_PASSWORDS:
        raise ConsoleError("that password is one of the most common ones; choose another")
    if len(set(password.casefold())) < MIN_DISTINCT_CHARS:
        raise ConsoleError(f"a password needs at least {MIN_DISTINCT_CHARS} different characters")
    name = username.casefold()
    if len(name) >= MIN_NAME_CHARS_CHECKED and name in password.casefold():
        raise ConsoleError("a password may not contain the user name")


def add_user(
    conn: psycopg.Connection[Any],
    username: str,
    *,
    role: str,
    password: str,
    grid_ids: Sequence[str] = (),
    community_ids: Sequence[str] = (),
    display_name: str = "",
    language: str | None = None,
    now: datetime,
    actor: Actor = CLI_ACTOR,
) -> int:
    """Create a staff account; its grids or communities must exist. Returns its id."""
    if role not in tuple(ConsoleRole):
        raise ConsoleError(f"unknown role {role!r}; one of {', '.join(ConsoleRole)}")
    try:
        Scope(ConsoleRole(role), tuple(grid_ids), tuple(community_ids))
    except ValueError as exc:
        raise ConsoleError(str(exc)) from exc
    check_password(password, username)
    _check_exist(conn, "grid", grid_ids)
    _check_exist(conn, "community", community_ids)
    try:
        with conn.transaction():
            row = conn.execute(
                """
                INSERT INTO staff_user (username, display_name, role, grid_ids, community_ids,
                                        password_hash, language, created_at, updated_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id
                """,
                (
                    username,
                    display_name,
                    role,
                    list(grid_ids),
                    list(community_ids),
                    hash_password(password),
                    language,
                    now,
                    now,
                ),
            ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        raise ConsoleError(f"a staff member named {username!r} exists already") from exc
    except psycopg.errors.CheckViolation as exc:
        raise ConsoleError(f"invalid staff account: {exc.diag.message_primary}") from exc
    assert row is not None
    audit_sync(
        conn,
        actor,
        "user_created",
        f"user:{username}",
        now,
        {"role": role, "grid_ids": list(grid_ids), "community_ids": list(community_ids)},
    )
    return int(row[0])


def _check_exist(conn: psycopg.Connection[Any], table: str, ids: Sequence[str]) -> None:
    if not ids:
        return
    query = (
        "SELECT id FROM grid WHERE id = ANY(%s)"
        if table == "grid"
        else "SELECT id FROM community WHERE id = ANY(%s)"
    )
    found = {r[0] for r in conn.execute(query, (list(ids),))}
    missing = [i for i in ids if i not in found]
    if missing:
        raise ConsoleError(f"no such {table}: {', '.join(missing)}")


def set_password(
    conn: psycopg.Connection[Any], username: str, password: str, *, now: datetime, actor: Actor = CLI_ACTOR
) -> None:
    """Set a new password and end the account's sessions."""
    check_password(password, username)
    row = conn.execute(
        "UPDATE staff_user SET password_hash = %s, updated_at = %s WHERE username = %s RETURNING id",
        (hash_password(password), now, username),
    ).fetchone()
    if row is None:
        raise ConsoleError(f"no staff member named {username!r}")
    conn.execute("DELETE FROM staff_session WHERE staff_id = %s", (row[0],))
    audit_sync(conn, actor, "password_set", f"user:{username}", now)


def set_active(
    conn: psycopg.Connection[Any], username: str, active: bool, *, now: datetime, actor: Actor = CLI_ACTOR
) -> None:
    """Enable or disable an account; disabling ends its sessions at once."""
    row = conn.execute(
        "UPDATE staff_user SET active = %s, updated_at = %s WHERE username = %s RETURNING id",
        (active, now, username),
    ).fetchone()
    if row is None:
        raise ConsoleError(f"no staff member named {username!r}")
    if not active:
        conn.execute("DELETE FROM staff_session WHERE staff_id = %s", (row[0],))
    audit_sync(conn, actor, "user_enabled" if active else "user_disabled", f"user:{username}", now)


def list_users(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT username, display_name, role, grid_ids, community_ids, language, active,"
            " created_at FROM staff_user ORDER BY username"
        )
        return cur.fetchall()
