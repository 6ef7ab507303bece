"""`lovekey alerts list|ack|resolve|worker|serve` and `lovekey away`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from config import Settings


def add_commands(subparsers: Any) -> None:
    alerts = subparsers.add_parser("alerts", help="list, acknowledge and resolve alerts")
    sub = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="unresolved alerts, newest first")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--all", action="store_true", help="include resolved alerts")
    p.add_argument("--limit", type=int, default=None, help="at most this many")
    p.set_defaults(handler=_list)


def _now() -> datetime:
    return datetime.now(UTC)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.store import list_alerts
    from storage import connect, database_url

    with database_url(settings) as url, connect(url) as conn:
        rows = list_alerts(conn, include_resolved=args.all, limit=args.limit)
    if args.json:
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print("no alerts" if args.all else "no unresolved alerts")
        return 0
    print(f"{'id':>6}  {'kind':<16} {'subject':<14} {'status':<13} {'opened_at':<25} since")
    for r in rows:
        print(
            f"{r['id']:>6}  {r['kind']:<16} {r['subject']:<14} {r['status']:<13}"
            f" {r['opened_at']:<25} {r['since']}"
        )
    return 0
