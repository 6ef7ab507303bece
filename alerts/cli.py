"""`lovekey alerts list|ack|resolve|worker|serve|staff|check-in` and `lovekey away`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, time
from typing import Any

from lovekey.config import Settings
from lovekey.vocabulary import CHOSEN_OUTCOMES, COMMUNITY_CONTACT_ROLES, Language


def add_commands(subparsers: Any) -> None:
    alerts = subparsers.add_parser("alerts", help="list, acknowledge and resolve alerts")
    sub = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)

    p = sub.add_parser(
        "list",
        help="unresolved alerts, newest first, with their stage"
        " ('check_in' while only the resident has been asked, then the role reached)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--all", action="store_true", help="include resolved alerts")
    p.add_argument("--limit", type=int, default=None, help="at most this many")
    p.set_defaults(handler=_list)

    p = sub.add_parser("ack", help="acknowledge an alert (someone is going)")
    p.add_argument("id", type=int)
    p.add_argument("--by", default=None, help="who (default: the user running the command)")
    p.set_defaults(handler=_ack)

    p = sub.add_parser("resolve", help="resolve an alert with the outcome of the visit")
    p.add_argument("id", type=int)
    p.add_argument(
        "--outcome",
        required=True,
        choices=[o.value for o in CHOSEN_OUTCOMES],
    )
    p.add_argument("--note", default=None, help="free text (required with --outcome other)")
    p.add_argument("--by", default=None)
    p.set_defaults(handler=_resolve)

    p = sub.add_parser("worker", help="run escalation and delivery until stopped")
    p.set_defaults(handler=_worker)

    p = sub.add_parser("serve", help="serve the acknowledgement pages and the SMS webhook")
    p.add_argument("--host", default=None, help="default: web.host")
    p.add_argument("--port", type=int, default=None, help="default: web.port")
    p.set_defaults(handler=_serve)

    p = sub.add_parser("staff", help="community-level contacts (maintenance, fallback staff)")
    staff = p.add_subparsers(dest="staff_command", metavar="ACTION", required=True)
    q = staff.add_parser("add", help="add a contact to a community (or the whole district)")
    q.add_argument("--community", default=None, help="community id (omit: district-wide)")
    q.add_argument("--grid", default=None, help="only for this grid of the community")
    q.add_argument(
        "--role",
        required=True,
        choices=[r.value for r in COMMUNITY_CONTACT_ROLES],
    )
    q.add_argument("--name", required=True)
    q.add_argument("--phone", default=None, help="E.164, e.g. +8613812345678")
    q.add_argument("--push", default=None, help="Apprise URL(s), space separated")
    q.add_argument("--language", choices=[lang.value for lang in Language], default=Language.ZH.value)
    q.add_argument("--position", type=int, default=1)
    q.set_defaults(handler=_staff_add)
    q = staff.add_parser("list", help="community-level contacts")
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=_staff_list)

    p = sub.add_parser(
        "check-in",
        help="the check-in stage per community: on/off and its quiet hours (no options: show them)",
    )
    p.add_argument("--community", default=None, help="community id (required to change anything)")
    switch = p.add_mutually_exclusive_group()
    switch.add_argument("--on", dest="enabled", action="store_const", const=True, help="ask residents first")
    switch.add_argument("--off", dest="enabled", action="store_const", const=False, help="never ask first")
    switch.add_argument(
        "--default", dest="enabled", action="store_const", const="default", help="follow the settings"
    )
    hours = p.add_mutually_exclusive_group()
    hours.add_argument(
        "--quiet", default=None, metavar="HH:MM-HH:MM", help="local night hours, e.g. 21:30-07:00"
    )
    hours.add_argument("--quiet-default", action="store_true", help="the settings' quiet hours")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_check_in)

    p = subparsers.add_parser("away", help="plan a resident's absence (or end it)")
    p.add_argument("resident")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--until", help="'2025-03-09 18:00', '2025-03-09', or '3d' / '12h'")
    group.add_argument("--clear", action="store_true", help="the resident is back home")
    p.add_argument("--reason", default=None, help="why (required with --until)")
    p.set_defaults(handler=_away)


def _now() -> datetime:
    return datetime.now(UTC)


def _operator(name: str | None) -> str:
    if name:
        return name
    import getpass

    return f"cli:{getpass.getuser()}"


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.alerts.store import list_alerts
    from lovekey.storage import connect, database_url

    with database_url(settings) as url, connect(url) as conn:
        rows = list_alerts(conn, include_resolved=args.all, limit=args.limit)
    if args.json:
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print("no alerts" if args.all else "no unresolved alerts")
        return 0
    print(f"{'id':>6}  {'kind':<16} {'subject':<14} {'status':<13} {'stage':<16} {'opened_at':<25} since")
    for r in rows:
        print(
            f"{r['id']:>6}  {r['kind']:<16} {r['subject']:<14} {r['status']:<13} {r['stage'] or '-':<16}"
            f" {r['opened_at']:<25} {r['since']}"
        )
    return 0


def _ack(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.alerts.store import acknowledge
    from lovekey.storage import connect, database_url

    by = _operator(args.by)
    with database_url(settings) as url, connect(url) as conn, conn.transaction():
        first = acknowledge(conn, args.id, by=by, channel="cli", now=_now())
    print(
        f"alert {args.id} acknowledged by {by}"
        if first
        else f"alert {args.id} was already acknowledged (noted in its history)"
    )
    return 0


def _resolve(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.alerts.store import resolve
    from lovekey.storage import connect, database_url

    by = _operator(args.by)
    with database_url(settings) as url, connect(url) as conn, conn.transaction():
        resolve(conn, args.id, outcome=args.outcome, note=args.note, by=by, channel="cli", now=_now())
    print(f"alert {args.id} resolved: {args.outcome}")
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import signal

    from lovekey.alerts.worker import run_worker
    from lovekey.storage import database_url

    async def main(url: str) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, url, stop)

    with database_url(settings) as url:
        asyncio.run(main(url))
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from lovekey.alerts.ack_pages import create_app
    from lovekey.signals import serve_until_signalled
    from lovekey.storage import database_url

    with database_url(settings) as url:
        app = create_app(settings, url)
        config = uvicorn.Config(
            app,
            host=args.host or settings.web.host,
            port=args.port if args.port is not None else settings.web.port,
            log_config=None,  # logging is configured once, by lovekey.cli
            proxy_headers=True,
        )
        serve_until_signalled(config)
    return 0


def _staff_add(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.errors import AlertError
    from lovekey.storage import connect, database_url

    if not args.phone and not args.push:
        raise AlertError("a contact needs --phone or --push")
    if args.grid and not args.community:
        raise AlertError("--grid needs --community")
    with database_url(settings) as url, connect(url) as conn, conn.transaction():
        row = conn.execute(
            """
            INSERT INTO community_contact (community_id, grid_id, role, position, name, phone,
                                           push_url, language)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id
            """,
            (
                args.community,
                args.grid,
                args.role,
                args.position,
                args.name,
                args.phone,
                args.push,
                args.language,
            ),
        ).fetchone()
    assert row is not None
    print(f"community contact {row[0]} added: {args.role} {args.name} ({args.community or 'district-wide'})")
    return 0


def _staff_list(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.redact import redact_phone
    from lovekey.storage import connect, database_url

    with database_url(settings) as url, connect(url) as conn:
        rows = conn.execute(
            """
            SELECT id, community_id, grid_id, role, position, name, phone, push_url IS NOT NULL,
                   language
            FROM community_contact ORDER BY community_id NULLS FIRST, role, position, id
            """
        ).fetchall()
    items = [
        {
            "id": r[0],
            "community_id": r[1],
            "grid_id": r[2],
            "role": r[3],
            "position": r[4],
            "name": r[5],
            "phone": redact_phone(r[6]),
            "push": r[7],
            "language": r[8],
        }
        for r in rows
    ]
    if args.json:
        json.dump(items, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
    else:
        for i in items:
            print(
                f"{i['id']:>4} {i['community_id'] or '*':<12} {i['role']:<16} {i['position']}"
                f" {i['name']} {i['phone']}{' +push' if i['push'] else ''}"
            )
    return 0


def _quiet_hours(text: str) -> tuple[time, time]:
    from lovekey.errors import AlertError

    start, sep, end = text.partition("-")
    try:
        if not sep:
            raise ValueError(text)
        return time.fromisoformat(start.strip()), time.fromisoformat(end.strip())
    except ValueError as exc:
        raise AlertError(f"--quiet {text!r}: expected HH:MM-HH:MM, e.g. 21:30-07:00") from exc


def _check_in(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.errors import AlertError
    from lovekey.storage import connect, database_url

    changing = args.enabled is not None or args.quiet is not None or args.quiet_default
    if changing and not args.community:
        raise AlertError("--community is required to change the check-in stage")
    with database_url(settings) as url, connect(url) as conn, conn.transaction():
        if changing:
            quiet = _quiet_hours(args.quiet) if args.quiet else None
            found = conn.execute(
                """
                UPDATE community SET
                    check_in_enabled = CASE WHEN %(keep)s THEN check_in_enabled ELSE %(enabled)s END,
                    check_in_quiet_start = CASE WHEN %(keep_quiet)s THEN check_in_quiet_start
                                                ELSE %(start)s END,
                    check_in_quiet_end = CASE WHEN %(keep_quiet)s THEN check_in_quiet_end
                                              ELSE %(end)s END,
                    updated_at = now()
                WHERE id = %(community)s
                """,
                {
                    "keep": args.enabled is None,
                    "enabled": args.enabled if isinstance(args.enabled, bool) else None,
                    "keep_quiet": quiet is None and not args.quiet_default,
                    "start": quiet[0] if quiet else None,
                    "end": quiet[1] if quiet else None,
                    "community": args.community,
                },
            ).rowcount
            if not found:
                raise AlertError(f"no community {args.community!r}")
        rows = conn.execute(
            """
            SELECT id, name, check_in_enabled, check_in_quiet_start, check_in_quiet_end
            FROM community WHERE %s::text IS NULL OR id = %s ORDER BY id
            """,
            (args.community, args.community),
        ).fetchall()
    a = settings.alerts
    items = [
        {
            "community_id": r[0],
            "name": r[1],
            "enabled": a.check_in_enabled if r[2] is None else r[2],
            "enabled_from": "settings" if r[2] is None else "community",
            "quiet": f"{(r[3] or a.check_in_quiet_start):%H:%M}-{(r[4] or a.check_in_quiet_end):%H:%M}",
            "quiet_from": "settings" if r[3] is None else "community",
        }
        for r in rows
    ]
    if args.json:
        json.dump(items, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return 0
    for i in items:
        print(
            f"{i['community_id']:<14} check-in {'on ' if i['enabled'] else 'off'} ({i['enabled_from']})"
            f"  quiet {i['quiet']} ({i['quiet_from']})  {i['name']}"
        )
    return 0


def _away(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.alerts.absence import clear_away, parse_until, set_away
    from lovekey.alerts.chains import ChainBook
    from lovekey.errors import AlertError
    from lovekey.storage import connect, database_url

    now = _now()
    with database_url(settings) as url, connect(url, autocommit=True) as conn:
        if args.clear:
            if clear_away(conn, args.resident, now=now):
                print(f"{args.resident} is back home")
            else:
                print(f"{args.resident} was not away")
            return 0
        if not args.reason:
            raise AlertError("--until needs --reason")
        until = parse_until(args.until, now, settings.zone)
        resolved = set_away(
            conn,
            args.resident,
            until=until,
            reason=args.reason,
            now=now,
            chains=ChainBook.load(settings.alerts.chains_file),
        )
    local = until.astimezone(settings.zone)
    print(
        f"{args.resident} is away until {local:%Y-%m-%d %H:%M}"
        + (f"; resolved alert(s) {', '.join(map(str, resolved))} as 'away'" if resolved else "")
    )
    return 0
