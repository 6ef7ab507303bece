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

MIN_PASSWORD_CHARS = 10
CLI_ACTOR = Actor(staff_id=None, username="cli", ip=None, user_agent="lovekey users")


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConsoleError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if password.strip() != password or not password.isprintable():
        raise ConsoleError("a password may not start or end with spaces or hold control characters")


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
    check_password(password)
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
    check_password(password)
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
