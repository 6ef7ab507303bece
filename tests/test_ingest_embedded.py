"""`lovekey ingest` with nothing configured: its own PostgreSQL and its own broker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from lovekey.bench.support.publisher import Publisher, wait_for
from lovekey.bench.support.seeding import register_devices
from lovekey.ingest.broker import find_mosquitto
from lovekey.storage import connect, database_url

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="no mosquitto binary on this machine"),
]
ROOT = Path(__file__).resolve().parent.parent


def test_ingest_with_nothing_configured_starts_database_and_broker(tmp_path, make_settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOVEKEY_")}
    env["LOVEKEY_DATA_DIR"] = str(tmp_path / "data")
    log = tmp_path / "ingest.log"
    with (
        log.open("wb") as sink,
        subprocess.Popen(
            [sys.executable, "-m", "lovekey", "ingest"], cwd=ROOT, env=env, stdout=sink, stderr=sink
        ) as process,
    ):
        try:

            def started() -> re.Match[str] | None:
                assert process.poll() is None, log.read_text()
                text = log.read_text()
                port = re.search(r"starting mosquitto on 127\.0\.0\.1:(\d+)", text)
                return port if port and "connected to the broker" in text else None

            port = int(wait_for(started, timeout_s=120, interval_s=0.1)[1])
            settings = make_settings()  # the same data_dir: attaches to the running server
            assert settings.database_url is None
            with database_url(settings) as url:
                with connect(url) as conn:
                    keys = register_devices(conn, [("WM-1", "GW-1", "water_meter", "R-1")])
                ts = datetime.now(UTC).replace(microsecond=0)
                with Publisher(f"mqtt://127.0.0.1:{port}") as publisher:
                    publisher.publish(
                        "lovekey/GW-1/WM-1/reading", orjson.dumps({"ts": ts.isoformat(), "total_l": 42.0})
                    )

                def stored() -> list[tuple[object, ...]]:
                    with connect(url) as conn:
                        return conn.execute(
                            "SELECT device_key, ts, total_l FROM water_reading_wide"
                        ).fetchall()

                assert wait_for(stored, timeout_s=30) == [(keys["WM-1"], ts, 42.0)]
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert (tmp_path / "data" / "mosquitto" / "mosquitto.conf").exists()
