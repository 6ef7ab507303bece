"""`lovekey run` hosting and `lovekey demo` end to end."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from lovekey.config import load_settings
from lovekey.run import in_thread, run_pipeline
from lovekey.storage.maintenance import existing_partitions
from tests.conftest import DatabaseFactory


def test_one_part_failing_stops_every_other_part() -> None:
    stop = threading.Event()
    ended: list[str] = []

    def blocking_part() -> None:  # a thread-hosted part that ends only on the stop event...
        stop.wait()
        time.sleep(0.3)  # ...and takes a while to wind down
        ended.append("thread")

    async def patient(astop: asyncio.Event) -> None:
        await in_thread("test-blocking", blocking_part)
        ended.append("patient")  # never reached: the failure cancels this part

    async def failing(astop: asyncio.Event) -> None:
        await asyncio.sleep(0.1)
        raise RuntimeError("boom")

    settings = load_settings(environ={})
    with pytest.raises(ExceptionGroup) as caught:
        asyncio.run(
            run_pipeline(
                settings, "", "", stop=stop, parts=(), extra={"patient": patient, "failing": failing}
            )
        )
    assert caught.group_contains(RuntimeError, match="boom")
    assert stop.is_set()
    assert ended == ["thread"]  # the thread was joined before run_pipeline returned


def test_stop_event_ends_the_pipeline_cleanly() -> None:
    stop = threading.Event()
    seen: list[str] = []

    async def waits(astop: asyncio.Event) -> None:
        await astop.wait()
        seen.append("stopped")

    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    asyncio.run(run_pipeline(load_settings(environ={}), "", "", stop=stop, parts=(), extra={"w": waits}))
    assert seen == ["stopped"]
    assert time.monotonic() - started < 10


def test_maintenance_part_runs_its_first_pass_and_ends_on_the_stop_event(
    postgres_factory: DatabaseFactory,
) -> None:
    url = postgres_factory.create("run_maintain")
    with psycopg.connect(url, autocommit=True) as conn:
        for name, _, _ in existing_partitions(conn, "water_reading"):  # only maintenance adds them
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    asyncio.run(run_pipeline(load_settings(environ={}), url, "", stop=stop, parts=("maintain",)))
    assert time.monotonic() - started < 10
    with psycopg.connect(url) as conn:
        assert existing_partitions(conn, "water_reading")  # the first pass ran, then the schedule


@pytest.mark.slow
def test_demo_reaches_an_escalated_alert(tmp_path: Path) -> None:
    """The README's first command, bounded: nothing configured, alerts must escalate."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOVEKEY_")}
    env["LOVEKEY_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.run(
        [sys.executable, "-m", "lovekey", "demo", "--residents", "200", "--exit-after", "120", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    escalated = re.search(r"alerts escalated: (\d+)", proc.stdout)
    assert escalated is not None, proc.stdout
    assert int(escalated.group(1)) >= 1
    assert "login: demo /" in proc.stdout
    assert "SMS →" in proc.stdout  # the stand-in gateway received real deliveries
    # the check-in: one resident answered "1" (closed, nobody woken), one never did
    # the check-in is a call through the Alibaba Cloud stand-in; the key 1 came back as the
    # provider's VoiceReport push to the secret callback URL, verified and matched to the call
    assert re.search(r"Call → \S+: \(call, read \dx\) .+(?:平安请按1|Press 1 if you are fine)", proc.stdout)
    assert re.search(r"Call ← \S+: key 1 .*HTTP 200\)", proc.stdout), proc.stdout[-3000:]
    answered = re.search(
        r"check-in: (.+): fine \(by voice@aliyun_voice\); alert resident_ok, stage check_in", proc.stdout
    )
    assert answered is not None, proc.stdout[-3000:]
    # the resident on the floor: each call rings out and the stand-in reports it, as Alibaba
    # Cloud does; the stage's last ask is a text, which reached the phone: 'none', not unreachable
    assert re.search(r"Call ← \S+: rang out, nobody picked up .*HTTP 200\)", proc.stdout), proc.stdout[-3000:]
    silent = re.search(r"check-in: (.+): none \(by -\); alert \w+, stage (\w+)", proc.stdout)
    assert silent is not None, proc.stdout[-3000:]
    assert silent.group(2) != "check_in"  # the stage ended: the neighbour and onwards were told
