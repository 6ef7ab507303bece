"""Fixtures shared by every test module: real PostgreSQL, real TimescaleDB, real Mosquitto.

- `LOVEKEY_TEST_DATABASE_URL` (default: the local server) is an admin URL; each test module
  gets databases of its own, created here and dropped afterwards.
- `LOVEKEY_TEST_MQTT_URL` (default mqtt://127.0.0.1:1883); tests use unique topic prefixes.
- TimescaleDB comes from `../shared/tools/timescaledb/start.sh`; when it cannot start, the
  tests that need it are skipped with the reason, and the run ends with a banner saying so.

Support for one area lives in a `fix_*.py` module of its own, loaded as a pytest plugin
(as psycopg does); helpers the benchmarks share are in `lovekey.bench.support`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from lovekey.config import Settings, load_settings
from lovekey.storage import connect, migrate
from lovekey.storage.scratch import with_database

ROOT = Path(__file__).resolve().parent.parent
TIMESCALE_START = ROOT.parent / "shared" / "tools" / "timescaledb" / "start.sh"

ADMIN_URL = os.environ.get("LOVEKEY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MQTT_URL = os.environ.get("LOVEKEY_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")

_timescale_skip_reason: list[str] = []

pytest_plugins = ["tests.fix_alerts", "tests.fix_broker", "tests.fix_web"]


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """Tests that call `lovekey.cli.main` get logging configured on their captured stderr;
    put the root logger back afterwards, so no later test logs into a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class DatabaseFactory:
    """Creates uniquely named databases on one server and drops them all at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    def create(self, label: str = "t", *, migrated: bool = True, **storage: Any) -> str:
        name = f"lk_{label[:30]}_{uuid.uuid4().hex[:8]}".lower()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        url = with_database(self.admin_url, name)
        if migrated:
            settings = load_settings(environ={}, storage=storage)
            with connect(url, autocommit=True) as conn:
                migrate(conn, settings.storage)
        return url

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.created:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.created.clear()


@pytest.fixture(scope="session")
def postgres_factory() -> Iterator[DatabaseFactory]:
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL for tests is not reachable at LOVEKEY_TEST_DATABASE_URL: {exc}")
    factory = DatabaseFactory(ADMIN_URL)
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session")
def timescale_factory() -> Iterator[DatabaseFactory]:
    url = os.environ.get("LOVEKEY_TEST_TIMESCALE_URL")
    if not url:
        if not TIMESCALE_START.exists():
            _skip_timescale(f"{TIMESCALE_START} not found")
        proc = subprocess.run(
            ["bash", str(TIMESCALE_START)], capture_output=True, text=True, timeout=600, check=False
        )
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            _skip_timescale(f"start.sh exited {proc.returncode}: {' | '.join(tail)}")
        url = lines[-1]
    factory = DatabaseFactory(url)
    yield factory
    factory.drop_all()


def _skip_timescale(reason: str) -> None:
    _timescale_skip_reason.append(reason)
    pytest.skip(f"TimescaleDB unavailable, TimescaleDB tests NOT run: {reason}")


@pytest.fixture(scope="module")
def database_url(postgres_factory: DatabaseFactory, request: pytest.FixtureRequest) -> str:
    """A migrated database on plain PostgreSQL, one per test module."""
    return postgres_factory.create(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(params=["postgres", "timescaledb"])
def backend(request: pytest.FixtureRequest) -> DatabaseFactory:
    """Storage tests run once on each backend; use `backend.create(...)` for a database."""
    name = "postgres_factory" if request.param == "postgres" else "timescale_factory"
    factory: DatabaseFactory = request.getfixturevalue(name)
    return factory


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    return MQTT_URL


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test (or run) shares."""
    return f"lktest/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """`make_settings(database_url=..., mqtt_url=..., mqtt={"topic_prefix": ...})`."""

    def build(**overrides: Any) -> Settings:
        overrides.setdefault("data_dir", str(tmp_path / "data"))
        return load_settings(environ={}, **overrides)

    return build


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _timescale_skip_reason:
        terminalreporter.write_sep("!", "TimescaleDB tests were SKIPPED", red=True, bold=True)
        terminalreporter.write_line(_timescale_skip_reason[0])
