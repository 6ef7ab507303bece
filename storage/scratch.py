"""Throw-away databases next to a configured one, for benchmarks.

A benchmark never touches the real registry or readings: it creates a database of its own on
the same server, and drops it afterwards unless asked to keep it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from lovekey.config import StorageSettings
from lovekey.storage.connections import connect
from lovekey.storage.migrate import migrate


def with_database(url: str, name: str) -> str:
    """The same server and credentials as `url`, database `name`."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


@contextmanager
def scratch_database(
    server_url: str,
    label: str,
    *,
    storage: StorageSettings | None = None,
    keep: bool = False,
) -> Iterator[str]:
    """Yield the URL of a new database `lk_bench_{label}_{random}`, migrated when `storage`
    is given; it is dropped on exit unless `keep` (then its name is printed)."""
    name = f"lk_bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(server_url, name)
    try:
        if storage is not None:
            with connect(url, autocommit=True) as conn:
                migrate(conn, storage)
        yield url
    finally:
        if keep:
            print(f"kept scratch database {name}")
        else:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
