"""Numbered SQL migrations, applied once each, in order, under an advisory lock.

Files in `storage/migrations/` are named `NNNN_name.sql`, or come as a pair
`NNNN_name.native.sql` / `NNNN_name.timescale.sql` when the two storage layouts differ.
The layout is chosen once, on the first migrate, from what the server offers and the
`storage.timescaledb` setting, and recorded; later runs follow the recorded choice.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass, field
from importlib import resources

import psycopg

from lovekey.config import StorageSettings
from lovekey.errors import MigrationError, StorageError

log = logging.getLogger(__name__)

# Any fixed 64-bit number; every lovekey process that migrates takes this lock first.
_MIGRATION_LOCK = 0x4C4F56454B4559  # "LOVEKEY"
_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+?)(?:\.(?P<variant>native|timescale))?\.sql$")


class Layout(enum.StrEnum):
    NATIVE = "native"  # PostgreSQL declarative range partitions
    TIMESCALE = "timescale"  # TimescaleDB hypertables


@dataclass(frozen=True, slots=True)
class ServerFeatures:
    server_version_num: int
    timescaledb_available: bool  # in pg_available_extensions
    timescaledb_version: str | None  # installed in this database
    timescaledb_license: str | None  # 'apache' or 'timescale' when installed

    @property
    def can_compress(self) -> bool:
        return self.timescaledb_license == "timescale"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: dict[str | None, str]  # variant (None for common) -> SQL text

    def text_for(self, layout: Layout) -> str:
        if None in self.sql:
            return self.sql[None]
        return self.sql[layout.value]


@dataclass(slots=True)
class MigrateResult:
    layout: Layout
    applied: list[str] = field(default_factory=list)
    features: ServerFeatures | None = None


def discover() -> list[Migration]:
    """Read the migration files shipped with the package, in version order."""
    found: dict[int, Migration] = {}
    for entry in resources.files("lovekey.storage.migrations").iterdir():
        match = _FILE.match(entry.name)
        if not match:
            continue
        version = int(match["version"])
        variant = match["variant"]
        migration = found.setdefault(version, Migration(version, match["name"], {}))
        if migration.name != match["name"]:
            raise MigrationError(entry.name, f"version {version} is used by two names")
        migration.sql[variant] = entry.read_text(encoding="utf-8")
    for migration in found.values():
        variants = set(migration.sql)
        if variants != {None} and variants != {"native", "timescale"}:
            raise MigrationError(
                f"{migration.version:04d}_{migration.name}",
                "needs either one common file or both .native and .timescale files",
            )
    return [found[v] for v in sorted(found)]


def server_features(conn: psycopg.Connection) -> ServerFeatures:
    row = conn.execute(
        """
        SELECT current_setting('server_version_num')::int,
               EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
               (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
               current_setting('timescaledb.license', true)
        """
    ).fetchone()
    assert row is not None
    return ServerFeatures(row[0], row[1], row[2], row[3] if row[2] else None)


def migrate(conn: psycopg.Connection, storage: StorageSettings) -> MigrateResult:
    """Bring the schema up to date. Safe to run twice and from racing processes.

    `conn` must be in autocommit mode; each migration runs in its own transaction.
    """
    if not conn.autocommit:
        raise StorageError("migrate() needs an autocommit connection")
    features = server_features(conn)
    if features.server_version_num < 150000:
        raise StorageError(f"PostgreSQL 15 or newer is required (server is {features.server_version_num})")
    conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        _ensure_bookkeeping(conn)
        layout = _recorded_layout(conn) or _choose_layout(conn, storage, features)
        if layout is Layout.TIMESCALE:
            # a later migration may need it even if the extension was dropped by hand
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        applied = {r[0] for r in conn.execute("SELECT version FROM lovekey_schema_migration")}
        result = MigrateResult(layout=layout)
        for migration in discover():
            if migration.version in applied:
                continue
            label = f"{migration.version:04d}_{migration.name}"
            try:
                with conn.transaction():
                    conn.execute(migration.text_for(layout).encode())
                    conn.execute(
                        "INSERT INTO lovekey_schema_migration (version, name, layout) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, layout.value),
                    )
            except psycopg.Error as exc:
                raise MigrationError(label, str(exc).strip()) from exc
            log.info("applied migration %s layout=%s", label, layout.value)
            result.applied.append(label)
        result.features = server_features(conn)
        _configure_layout(conn, layout, storage, result.features)
        return result
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))


def _ensure_bookkeeping(conn: psycopg.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS lovekey_schema_migration (
            version     integer PRIMARY KEY,
            name        text NOT NULL,
            layout      text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE IF NOT EXISTS lovekey_meta (
            key    text PRIMARY KEY,
            value  text NOT NULL
        );
        """
    )


def _recorded_layout(conn: psycopg.Connection) -> Layout | None:
    row = conn.execute("SELECT value FROM lovekey_meta WHERE key = 'storage_layout'").fetchone()
    return Layout(row[0]) if row else None


def recorded_layout(conn: psycopg.Connection) -> Layout:
    """The layout of a migrated database; raises if `lovekey migrate` never ran."""
    try:
        layout = _recorded_layout(conn)
    except psycopg.errors.UndefinedTable as exc:
        raise StorageError("the database is not migrated: run `lovekey migrate`") from exc
    if layout is None:
        raise StorageError("the database is not migrated: run `lovekey migrate`")
    return layout


def _choose_layout(conn: psycopg.Connection, storage: StorageSettings, features: ServerFeatures) -> Layout:
    layout = Layout.NATIVE
    if storage.timescaledb != "off" and features.timescaledb_available:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            layout = Layout.TIMESCALE
        except psycopg.Error as exc:
            # typically: available on disk but not in shared_preload_libraries
            if storage.timescaledb == "on":
                raise StorageError(f"timescaledb is required but cannot be enabled: {exc}") from exc
            log.warning("timescaledb is installed but cannot be enabled, using native partitions: %s", exc)
    elif storage.timescaledb == "on":
        raise StorageError("storage.timescaledb = 'on' but the server has no timescaledb extension")
    conn.execute("INSERT INTO lovekey_meta (key, value) VALUES ('storage_layout', %s)", (layout.value,))
    log.info("storage layout chosen: %s", layout.value)
    return layout


def _configure_layout(
    conn: psycopg.Connection, layout: Layout, storage: StorageSettings, features: ServerFeatures
) -> None:
    # imported here: maintenance imports this module for Layout
    from lovekey.storage import maintenance

    if layout is Layout.TIMESCALE:
        maintenance.configure_hypertables(conn, storage, features)
    else:
        maintenance.ensure_partitions(conn, storage)
