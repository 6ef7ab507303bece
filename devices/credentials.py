"""Gateway identity at the broker: per-gateway passwords and the Mosquitto files that enforce them.

DESIGN.md: "a gateway [publishes] only with its own broker credentials". Each gateway
connects with its registry id as user name and a random password issued here; the table
`gateway_credential` keeps only the password's hash, already in the form Mosquitto's
password file takes, so `broker_files()` can write that file without any password.

The files (`broker_files`, a pure function of what the registry holds):

- `passwd`: one `user:$7$...` line per gateway with a live credential, and one for the
  ingester (its user name and password are those of `mqtt_url`);
- `acl`: the ingester may only read `{prefix}/#` (its `$share/...` subscription included);
  gateway G may only write `{prefix}/G/+/reading`, `{prefix}/G/+/event`, `{prefix}/G/status`;
  anonymous clients get nothing;
- `lovekey.conf`: the snippet to include from mosquitto.conf (no anonymous access, the two
  files, `max_packet_size`).

The ACL names every gateway in a `user` block of its own instead of one `pattern ... %u`
line: a pattern applies to every user, the ingester's included, and a revoked gateway that
is still connected keeps its pattern rights, where a removed `user` block takes its rights
away at the broker's next reload (SIGHUP; Mosquitto keeps connected clients' sessions but
re-reads the ACL, see docs/deploy.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from lovekey.errors import RegistryError

# Mosquitto's `$7$` password hash: PBKDF2-HMAC-SHA512 over a 12-byte salt, 64 bytes out,
# both base64 with padding (mosquitto_passwd(1), Mosquitto 2.0). The iteration count is
# Mosquitto's own default: the passwords are 192 random bits, which no iteration count makes
# easier or harder to guess, and the broker pays the count again at every connect (a
# district's gateways all reconnect after a broker restart).
HASH_ITERATIONS = 101
_SALT_BYTES = 12
_PASSWORD_BYTES = 24  # 192 bits, 32 URL-safe characters

# A user name goes into `user:hash` lines, ACL `user` lines and topics: no separators,
# wildcards, whitespace or control characters (Mosquitto also refuses `+` and `#` in names
# it substitutes into ACLs, CVE-2017-7650).
_SAFE_NAME = re.compile(r"[^\s:/+#\x00-\x1f\x7f]{1,128}")

PASSWD_FILE = "passwd"  # noqa: S105 - a file name, not a password
ACL_FILE = "acl"
CONF_FILE = "lovekey.conf"


class CredentialError(RegistryError):
    """A gateway credential could not be issued, rotated or revoked, or the files written."""

    def __init__(self, message: str, *, gateway_id: str | None = None) -> None:
        super().__init__(message)
        self.gateway_id = gateway_id


def new_password() -> str:
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def mosquitto_hash(password: str, *, salt: bytes | None = None, iterations: int = HASH_ITERATIONS) -> str:
    """`$7$101$<salt>$<hash>`: a line's second half in a Mosquitto 2.0 password file."""
    salt = salt if salt is not None else os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def hash_matches(password: str, stored: str) -> bool:
    """Whether `password` is the one `stored` (a `$7$` hash) was made from."""
    try:
        _, seven, iterations, salt, _digest = stored.split("$")
        again = mosquitto_hash(password, salt=base64.b64decode(salt), iterations=int(iterations))
    except ValueError:
        return False
    return seven == "7" and hmac.compare_digest(again, stored)


def check_user_name(name: str) -> str:
    if not _SAFE_NAME.fullmatch(name):
        raise CredentialError(
            f"{name!r} cannot be a broker user name (no spaces, ':', '/', '+', '#', at most 128)",
            gateway_id=name,
        )
    return name


# -- the registry side: issue, rotate, revoke --------------------------------------------------


def issue_credential(conn: psycopg.Connection[Any], gateway_id: str, *, rotate: bool = False) -> str:
    """A new password for `gateway_id`, returned once; only its hash is stored.

    `issue` refuses a gateway that already has a live credential (rotate it instead) and
    `rotate` one that has none, so neither replaces a password by a slip of the command.
    """
    check_user_name(gateway_id)
    password = new_password()
    with conn.transaction():
        found = conn.execute("SELECT 1 FROM gateway WHERE id = %s", (gateway_id,)).fetchone()
        if found is None:
            raise CredentialError(f"gateway {gateway_id!r} is not in the registry", gateway_id=gateway_id)
        row = conn.execute(
            "SELECT revoked_at IS NULL FROM gateway_credential WHERE gateway_id = %s FOR UPDATE",
            (gateway_id,),
        ).fetchone()
        live = row is not None and bool(row[0])
        if rotate and not live:
            raise CredentialError(
                f"gateway {gateway_id!r} has no credential to rotate: issue one", gateway_id=gateway_id
            )
        if not rotate and live:
            raise CredentialError(
                f"gateway {gateway_id!r} already has a credential: rotate it", gateway_id=gateway_id
            )
        conn.execute(
            "INSERT INTO gateway_credential (gateway_id, password_hash) VALUES (%s, %s)"
            " ON CONFLICT (gateway_id) DO UPDATE SET password_hash = EXCLUDED.password_hash,"
            " issued_at = CASE WHEN gateway_credential.revoked_at IS NULL"
            " THEN gateway_credential.issued_at ELSE now() END,"
            " rotated_at = CASE WHEN gateway_credential.revoked_at IS NULL THEN now() END,"
            " revoked_at = NULL",
            (gateway_id, mosquitto_hash(password)),
        )
    return password


def revoke_credential(conn: psycopg.Connection[Any], gateway_id: str) -> None:
    with conn.transaction():
        revoked = conn.execute(
            "UPDATE gateway_credential SET revoked_at = now()"
            " WHERE gateway_id = %s AND revoked_at IS NULL RETURNING 1",
            (gateway_id,),
        ).fetchone()
    if revoked is None:
        raise CredentialError(f"gateway {gateway_id!r} has no live credential", gateway_id=gateway_id)


def live_credentials(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Gateway id -> password hash, for every gateway whose credential is not revoked."""
    rows = conn.execute(
        "SELECT gateway_id, password_hash FROM gateway_credential"
        " WHERE revoked_at IS NULL ORDER BY gateway_id"
    ).fetchall()
    return {gateway_id: password_hash for gateway_id, password_hash in rows}


# -- the broker side: the files ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """The three files' text, by file name."""

    passwd: str
    acl: str
    conf: str

    def by_name(self) -> dict[str, str]:
        return {PASSWD_FILE: self.passwd, ACL_FILE: self.acl, CONF_FILE: self.conf}


def broker_files(
    gateways: Mapping[str, str],
    *,
    ingest_user: str,
    ingest_password_hash: str,
    topic_prefix: str,
    max_packet_bytes: int,
    directory_on_broker: Path,
) -> BrokerFiles:
    """The password file, ACL and config snippet for `gateways` (id -> hash) and the ingester.

    `directory_on_broker` is where the broker will find the files (the snippet names them
    by absolute path; in a container that is the mount point, not where they were written).
    """
    check_user_name(ingest_user)
    if ingest_user in gateways:
        raise CredentialError(
            f"the ingester's broker user {ingest_user!r} is also a gateway id: rename one",
            gateway_id=ingest_user,
        )
    header = "# Generated by `lovekey broker-config` from the LoveKey registry; do not edit.\n"
    passwd = [f"{ingest_user}:{ingest_password_hash}"]
    acl = [
        header.rstrip("\n"),
        "# No topic lines before the first `user`: anonymous clients may do nothing.",
        "",
        "# the ingester reads everything under the prefix (shared subscriptions too), writes nothing",
        f"user {ingest_user}",
        f"topic read {topic_prefix}/#",
    ]
    for gateway_id, password_hash in sorted(gateways.items()):
        check_user_name(gateway_id)
        passwd.append(f"{gateway_id}:{password_hash}")
        acl += [
            "",
            f"user {gateway_id}",
            f"topic write {topic_prefix}/{gateway_id}/+/reading",
            f"topic write {topic_prefix}/{gateway_id}/+/event",
            f"topic write {topic_prefix}/{gateway_id}/status",
        ]
    directory = directory_on_broker.as_posix().rstrip("/")
    conf = (
        header + "# Include it from mosquitto.conf (`include_dir` or copy it in). These options are\n"
        "# global while per_listener_settings is false, Mosquitto's default: keep it so.\n"
        "allow_anonymous false\n"
        f"password_file {directory}/{PASSWD_FILE}\n"
        f"acl_file {directory}/{ACL_FILE}\n"
        "# a client sending a bigger packet is disconnected before the broker holds it\n"
        f"max_packet_size {max_packet_bytes}\n"
    )
    return BrokerFiles(passwd="\n".join(passwd) + "\n", acl="\n".join(acl) + "\n", conf=conf)


def write_broker_files(directory: Path, files: BrokerFiles) -> list[Path]:
    """Write each file next to its final place, then rename it over it (a reload never reads
    half a file); the password file is readable by its owner and group only."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in files.by_name().items():
            path = directory / name
            partial = directory / f".{name}.partial"
            partial.write_text(text, encoding="utf-8")
            partial.chmod(0o640 if name == PASSWD_FILE else 0o644)
            partial.replace(path)
            written.append(path)
    except OSError as exc:
        raise CredentialError(f"cannot write the broker files in {directory}: {exc}") from exc
    return written
