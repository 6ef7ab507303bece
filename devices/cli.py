"""`lovekey devices import|export|list`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lovekey.config import Settings
from lovekey.devices.model import DEVICE_KINDS
from lovekey.errors import RegistryError


def add_commands(subparsers: Any) -> None:
    devices = subparsers.add_parser("devices", help="the device registry")
    sub = devices.add_subparsers(dest="devices_command", metavar="ACTION", required=True)

    p = sub.add_parser("import", help="import a registry CSV file (all or nothing)")
    p.add_argument("file", type=Path, help="CSV file, see docs/registry.md ('-' for stdin)")
    p.add_argument("--check", action="store_true", help="validate only, change nothing")
    p.set_defaults(handler=_import)

    p = sub.add_parser("export", help="write the registry as CSV (full form)")
    p.add_argument("--out", type=Path, help="file to write (default: stdout)")
    p.set_defaults(handler=_export)

    p = sub.add_parser("list", help="show devices, their residents and health")
    p.add_argument("--json", action="store_true", help="a JSON list, for scripts")
    p.add_argument("--kind", choices=DEVICE_KINDS)
    p.add_argument("--gateway", dest="gateway_id")
    p.add_argument("--resident", dest="resident_id")
    p.add_argument("--community", dest="community_id")
    p.add_argument("--limit", type=int)
    p.set_defaults(handler=_list)

    from lovekey.devices import broker_cli

    broker_cli.add_commands(subparsers)


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.devices import apply_registry, parse_registry
    from lovekey.storage import connect, database_url, migrate

    name = str(args.file)
    try:
        text = sys.stdin.read() if name == "-" else args.file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"cannot read {name}: {exc}") from exc
    registry = parse_registry(text, name=name, default_country_code=settings.registry.default_country_code)
    if args.check:
        print(f"{name}: OK, {len(registry.devices)} devices of {len(registry.residents)} residents")
        return 0
    with database_url(settings) as url, connect(url, autocommit=True) as conn:
        migrate(conn, settings.storage)
        report = apply_registry(conn, registry)
    print(f"{name}: {report.summary()}")
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.devices import export_registry
    from lovekey.storage import connect, database_url

    with database_url(settings) as url, connect(url) as conn:
        text = export_registry(conn)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.devices import list_devices
    from lovekey.storage import connect, database_url

    with database_url(settings) as url, connect(url) as conn:
        rows = list_devices(
            conn,
            kind=args.kind,
            gateway_id=args.gateway_id,
            resident_id=args.resident_id,
            community_id=args.community_id,
            limit=args.limit,
        )
    if args.json:
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} device(s)")
    columns = (
        "device_id",
        "kind",
        "gateway_id",
        "resident_id",
        "resident_name",
        "grid_id",
        "resident_status",
        "last_seen",
        "battery_v",
    )
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
    Console().print(table)
    return 0
