"""Bad input on the command line (docs/bad-input.md, "Settings and CLI"): ids that cannot
exist, absences that are too long or past the last date there is, files that are not files,
gateways not in the registry, and settings of the wrong type. Each ends in one line on stderr
and exit 1 (argparse's own usage errors: exit 2), never a traceback, and changes nothing in
the real PostgreSQL database.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from lovekey.cli import main
from tests.conftest import DatabaseFactory

REGISTRY = "device_id,gateway_id,resident_id,kind\nWM-1,GW-1,R-1,water_meter\n"


@pytest.fixture
def db(postgres_factory: DatabaseFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = postgres_factory.create("badinput_cli")
    monkeypatch.setenv("LOVEKEY_DATABASE_URL", url)
    monkeypatch.setenv("LOVEKEY_DATA_DIR", str(tmp_path / "data"))
    registry = tmp_path / "registry.csv"
    registry.write_text(REGISTRY, encoding="utf-8")
    assert main(["devices", "import", str(registry)]) == 0
    return url


def resident(url: str) -> tuple[object, ...] | None:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT status, away_until FROM resident WHERE id = 'R-1'").fetchone()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alerts", "ack", "999999"], "no such alert"),
        (["alerts", "ack", "99999999999999999999"], "no such alert"),
        (["alerts", "resolve", "99999999999999999999", "--outcome", "resident_ok"], "no such alert"),
        (["away", "R-1", "--until", "9999999999d", "--reason", "x"], "too far"),
        (["away", "R-1", "--until", "400d", "--reason", "x"], "at most a year"),
        (["away", "R-1", "--until", "2999-01-01", "--reason", "x"], "at most a year"),
        (["away", "R-1", "--until", "yesterday", "--reason", "x"], "not a time"),
        (["away", "R-1", "--until", "2001-01-01 08:00", "--reason", "x"], "in the future"),
        (["away", "R-1", "--until", "3d", "--reason", "   "], "needs a reason"),
        (["away", "R-NOPE", "--until", "3d", "--reason", "x"], "no active resident"),
        (["devices", "import", "/"], "cannot read"),
        (["gateways", "credentials", "issue", "GW-NOPE"], "not in the registry"),
        (["gateways", "credentials", "issue", "GW 1"], "GW 1"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_a_bad_argument_is_one_line_and_exit_1(
    db: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    before = resident(db)
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert resident(db) == before == ("active", None)


@pytest.mark.parametrize(
    "args",
    [
        ["alerts", "ack", "abc"],
        ["alerts", "resolve", "1", "--outcome", "nonsense"],
        ["users", "add", "x", "--role", "king"],
    ],
)
def test_a_malformed_argument_is_argparse_usage_and_exit_2(
    db: str, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_a_setting_of_the_wrong_type_names_the_setting_and_hides_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "lovekey.toml"
    config.write_text(
        'database_url = "postgresql://lk:hunter2@db.example/lovekey"\n[ingest]\nmax_flow_lpm = "lots"\n'
        "[web]\nport = 99999\n",
        encoding="utf-8",
    )
    monkeypatch.delenv("LOVEKEY_DATABASE_URL", raising=False)
    assert main(["--config", str(config), "migrate"]) == 1
    err = capsys.readouterr().err
    assert "ingest.max_flow_lpm" in err
    assert "web.port" in err
    assert "hunter2" not in err
    assert "Traceback" not in err
