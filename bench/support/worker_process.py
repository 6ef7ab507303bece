"""`lovekey alerts worker` as a subprocess, and the CPU time a process tree has used."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from lovekey.bench.support.provider import FakeProvider
from lovekey.config import AlertSettings


class WorkerProcess:
    """`lovekey alerts worker` in a subprocess; stderr is collected by a reader thread."""

    def __init__(self, database_url: str, fake: FakeProvider, **alerts: object) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOVEKEY_")}
        env.update(
            {
                "LOVEKEY_DATABASE_URL": database_url,
                "LOVEKEY_ALERTS__SMS_URL": fake.sms_template(),
                "LOVEKEY_ALERTS__ACK_SECRET": "worker-test-secret-0123456789",
                "LOVEKEY_LOG_LEVEL": "INFO",
            }
        )
        env.update({f"LOVEKEY_ALERTS__{k.upper()}": str(v) for k, v in alerts.items()})
        # the main process and `alerts.processes - 1` beside it each log their start
        self.processes = int(str(alerts.get("processes", AlertSettings.model_fields["processes"].default)))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lovekey", "alerts", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_started(self, timeout_s: float = 60) -> None:
        """Until every process of the worker has started (a burst measured while one is still
        importing would time its start, not the pipeline)."""
        deadline = time.monotonic() + timeout_s
        while sum("alert worker" in line and " started " in line for line in self.lines) < self.processes:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("worker did not start:\n" + "".join(self.lines[-30:]))
            time.sleep(0.05)

    def cpu_s(self) -> float:
        """CPU seconds used so far by the worker and its dispatch processes (Linux)."""
        return process_cpu_s(self.proc.pid)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.close()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _stat(pid: int | str) -> tuple[str, float]:
    """A process's name and CPU seconds (user + system) from /proc/<pid>/stat (Linux)."""
    with open(f"/proc/{pid}/stat") as fh:
        head, tail = fh.read().rsplit(")", 1)
    fields = tail.split()
    return head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its descendants, from /proc (Linux)."""
    total = 0.0
    try:
        total += _stat(pid)[1]
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = [int(c) for c in fh.read().split()]
    except (OSError, ValueError):
        return total
    return total + sum(process_cpu_s(c) for c in children)


def database_cpu_s() -> float | None:
    """CPU seconds (user + system) used so far by every PostgreSQL process on this machine
    (Linux), or None when there is none here (a remote database): how much of a burst's cost
    is the server's. Counts other databases' work too: measure on a quiet server."""
    total, found = 0.0, False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            name, cpu_s = _stat(entry.name)
        except OSError:
            continue  # gone since the listing
        if name == "postgres":
            total += cpu_s
            found = True
    return total if found else None


def cpu_ms_each(before_s: float | None, after_s: float | None, n: int) -> float | None:
    """CPU milliseconds per item between two readings of `database_cpu_s` (None: not here)."""
    if before_s is None or after_s is None or n <= 0:
        return None
    return (after_s - before_s) * 1000 / n


def database_cpu_text(ms: float | None) -> str:
    return "" if ms is None else f", database CPU {ms:.2f} ms"
