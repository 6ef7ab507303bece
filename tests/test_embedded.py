"""The embedded default: with no database configured, commands start their own PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_migrate_and_import_with_nothing_configured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOVEKEY_")}
    env["LOVEKEY_DATA_DIR"] = str(tmp_path / "data")
    registry = tmp_path / "r.csv"
    registry.write_text("device_id,gateway_id,resident_id,kind\nWM-1,GW-1,R-1,water_meter\n")

    def lovekey(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lovekey", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    migrated = lovekey("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "layout: native" in migrated.stdout
    assert (tmp_path / "data" / "pgdata" / "PG_VERSION").exists()
    imported = lovekey("devices", "import", str(registry))
    assert imported.returncode == 0, imported.stderr
    assert "created" in imported.stdout
    listed = lovekey("devices", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"device_id": "WM-1"' in listed.stdout
