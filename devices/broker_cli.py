"""`lovekey gateways credentials issue|rotate|revoke GATEWAY` and `lovekey broker-config --out DIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from lovekey.config import Settings
from lovekey.devices.credentials import CredentialError


def add_commands(subparsers: Any) -> None:
    gateways = subparsers.add_parser("gateways", help="gateways and their broker credentials")
    sub = gateways.add_subparsers(dest="gateways_command", metavar="ACTION", required=True)
    credentials = sub.add_parser("credentials", help="a gateway's own broker user and password")
    actions = credentials.add_subparsers(dest="credentials_command", metavar="ACTION", required=True)
    for action, text in (
        ("issue", "give a gateway its broker password (printed once, only a hash is kept)"),
        ("rotate", "replace a gateway's password (the old one stops working at the broker's reload)"),
        ("revoke", "take a gateway's broker access away"),
    ):
        p = actions.add_parser(action, help=text)
        p.add_argument("gateway_id", metavar="GATEWAY")
        p.add_argument(
            "--out", type=Path, help="rewrite the broker files here (default: mqtt.broker_files_dir)"
        )
        p.set_defaults(handler=_credentials, action=action)

    p = subparsers.add_parser("broker-config", help="write Mosquitto's password file, ACL and config snippet")
    p.add_argument("--out", type=Path, help="directory to write (default: mqtt.broker_files_dir)")
    p.add_argument(
        "--broker-dir",
        type=Path,
        help="where the broker reads the files, if not --out (e.g. a container's mount point)",
    )
    p.set_defaults(handler=_broker_config)


def _credentials(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.devices.credentials import issue_credential, revoke_credential
    from lovekey.storage import connect, database_url, migrate

    with database_url(settings) as url, connect(url, autocommit=True) as conn:
        migrate(conn, settings.storage)
        if args.action == "revoke":
            revoke_credential(conn, args.gateway_id)
            print(f"gateway {args.gateway_id}: broker credential revoked")
        else:
            password = issue_credential(conn, args.gateway_id, rotate=args.action == "rotate")
            # the only time the password exists outside the gateway: stdout, never a log line
            print(f"gateway {args.gateway_id}: broker user {args.gateway_id}, password {password}")
            print("(shown once; LoveKey keeps only its hash)", file=sys.stderr)
        out = args.out or settings.mqtt.broker_files_dir
        if out is None:
            print(
                "broker files not rewritten: run `lovekey broker-config --out DIR`, then reload"
                " the broker (SIGHUP)",
                file=sys.stderr,
            )
            return 0
        _write(conn, settings, out, out)
    return 0


def _broker_config(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.storage import connect, database_url, migrate

    out = args.out or settings.mqtt.broker_files_dir
    if out is None:
        raise CredentialError("say where to write the files: --out DIR (or mqtt.broker_files_dir)")
    with database_url(settings) as url, connect(url, autocommit=True) as conn:
        migrate(conn, settings.storage)
        _write(conn, settings, out, args.broker_dir or out)
    return 0


def _write(conn: Any, settings: Settings, out: Path, broker_dir: Path) -> None:
    from lovekey.devices.credentials import broker_files, live_credentials, mosquitto_hash, write_broker_files

    user, password = _ingest_login(settings.mqtt_url)
    gateways = live_credentials(conn)
    files = broker_files(
        gateways,
        ingest_user=user,
        ingest_password_hash=mosquitto_hash(password),
        topic_prefix=settings.mqtt.topic_prefix,
        max_packet_bytes=settings.mqtt.max_packet_bytes,
        directory_on_broker=broker_dir.resolve() if broker_dir == out else broker_dir,
    )
    for path in write_broker_files(out, files):
        print(f"wrote {path}", file=sys.stderr)
    print(
        f"{len(gateways)} gateway(s) and the ingester ({user}); reload the broker to apply (SIGHUP)",
        file=sys.stderr,
    )


def _ingest_login(mqtt_url: str | None) -> tuple[str, str]:
    """The ingester's broker user and password: those of `mqtt_url`, which it connects with."""
    parts = urlsplit(mqtt_url or "")
    if not parts.username or not parts.password:
        raise CredentialError(
            "mqtt_url must name the ingester's broker user and password"
            " (mqtt://lovekey-ingest:PASSWORD@host): the files grant that user read access"
        )
    return unquote(parts.username), unquote(parts.password)
