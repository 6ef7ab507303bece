"""`lovekey serve` (the console) and `lovekey users add|list|passwd|disable`."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from lovekey.config import Settings
from lovekey.errors import ConsoleError
from lovekey.vocabulary import ConsoleRole, Language

log = logging.getLogger(__name__)


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="run the staff web console")
    p.add_argument("--host", help="address to listen on (default: web.host)")
    p.add_argument("--port", type=int, help="port (default: web.port)")
    p.set_defaults(handler=_serve)

    users = subparsers.add_parser("users", help="staff accounts of the web console")
    sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)

    p = sub.add_parser("add", help="create a staff account")
    p.add_argument("name", help="user name to sign in with")
    p.add_argument("--role", required=True, choices=[r.value for r in ConsoleRole])
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="G",
        help="a grid the grid worker looks after (repeat for several)",
    )
    scope.add_argument(
        "--community",
        action="append",
        default=[],
        metavar="C",
        help="a community the staff member looks after (repeat for several)",
    )
    p.add_argument("--display-name", default="", help="the name shown in the console and audit log")
    p.add_argument(
        "--language",
        choices=[lang.value for lang in Language],
        help="console language (default: the browser's)",
    )
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin instead of prompting",
    )
    p.set_defaults(handler=_add)

    p = sub.add_parser("list", help="show staff accounts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_list)

    p = sub.add_parser("passwd", help="set a staff member's password (ends their sessions)")
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true")
    p.set_defaults(handler=_passwd)

    p = sub.add_parser("disable", help="disable an account (ends its sessions)")
    p.add_argument("name")
    p.set_defaults(handler=_disable)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ConsoleError("the two passwords differ")
    return first


def _now() -> datetime:
    return datetime.now(UTC)


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.storage import connect, database_url, migrate
    from lovekey.web.users import add_user, check_password

    password = _read_password(args.password_stdin)
    check_password(password, args.name)
    with database_url(settings) as url:
        with connect(url, autocommit=True) as conn:
            migrate(conn, settings.storage)
        with connect(url) as conn:
            add_user(
                conn,
                args.name,
                role=args.role,
                password=password,
                grid_ids=args.grid,
                community_ids=args.community,
                display_name=args.display_name,
                language=args.language,
                now=_now(),
            )
            conn.commit()
    where = ", ".join(args.grid or args.community) or "everything"
    print(f"created {args.role} {args.name} ({where})")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.storage import connect, database_url
    from lovekey.web.users import list_users

    with database_url(settings) as url, connect(url) as conn:
        rows = list_users(conn)
    if args.json:
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=1, default=str)
        sys.stdout.write("\n")
        return 0
    for r in rows:
        scope = ",".join(r["grid_ids"] or r["community_ids"]) or "*"
        state = "" if r["active"] else "  (disabled)"
        print(f"{r['username']:<24} {r['role']:<16} {scope}{state}")
    return 0


def _passwd(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.storage import connect, database_url
    from lovekey.web.users import set_password

    password = _read_password(args.password_stdin)
    with database_url(settings) as url, connect(url) as conn:
        set_password(conn, args.name, password, now=_now())
        conn.commit()
    print(f"password set for {args.name}; their sessions were ended")
    return 0


def _disable(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.storage import connect, database_url
    from lovekey.web.users import set_active

    with database_url(settings) as url, connect(url) as conn:
        set_active(conn, args.name, False, now=_now())
        conn.commit()
    print(f"disabled {args.name}")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from lovekey.signals import serve_until_signalled
    from lovekey.storage import connect, database_url, migrate
    from lovekey.web import create_app

    host = args.host or settings.web.host
    port = settings.web.port if args.port is None else args.port
    with database_url(settings) as url:
        with connect(url, autocommit=True) as conn:
            migrate(conn, settings.storage)
        app = create_app(settings, url)
        # log_config=None: logging was configured once by the lovekey entry point
        log.info("console on http://%s:%s/", host, port)
        serve_until_signalled(uvicorn.Config(app, host=host, port=port, log_config=None))
    return 0
