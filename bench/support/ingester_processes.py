"""The ingesters under test in `lovekey bench ingest`: `lovekey ingest` as subprocesses.

`IngesterProcess` runs one `python -m lovekey ingest` (optionally under py-spy) on the
scratch database and reads it from outside: its metrics endpoint for counters, /proc for
peak memory and CPU time. `Members` reads N of them on one shared subscription as one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Protocol

from lovekey.bench.support.publisher import Publisher, wait_for
from lovekey.ingest.broker import free_port


class MessageSource(Protocol):
    """What the ingesters need of the bench's load: its next message to publish."""

    def message(self) -> tuple[str, bytes, int, tuple[int, datetime]]:
        """(topic, payload, readings, (device key, ts of its last reading))."""
        ...


class IngesterProcess:
    """`python -m lovekey ingest` on the scratch database, with a metrics port to read."""

    def __init__(
        self,
        db: str,
        mqtt_url: str,
        prefix: str,
        *,
        shared: str | None = None,
        member: int = 0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.shared = shared
        self.env = {
            **os.environ,
            "LOVEKEY_DATABASE_URL": db,
            "LOVEKEY_MQTT_URL": mqtt_url,
            "LOVEKEY_MQTT__TOPIC_PREFIX": prefix,
            "LOVEKEY_MQTT__CLIENT_ID": f"lovekey-bench-{prefix.rsplit('/', 1)[-1]}-{member}",
            "LOVEKEY_MQTT__SESSION_EXPIRY_S": "600",
            "LOVEKEY_INGEST__METRICS_PORT": str(self.port),
            "LOVEKEY_INGEST__SUMMARY_INTERVAL_S": "10",
            "LOVEKEY_LOG_LEVEL": "INFO",
            **(extra_env or {}),  # e.g. LOVEKEY_SOURCES for `--source`
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.profiling = False
        self.last_peak_mb = 0.0

    @contextmanager
    def running(self, *, profile: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
        command = [sys.executable, "-m", "lovekey", "ingest"]
        if self.shared:
            command += ["--shared", self.shared, "--client-id", self.env["LOVEKEY_MQTT__CLIENT_ID"]]
        self.profiling = bool(profile)
        if profile:
            spy = Path(sys.executable).with_name("py-spy")
            # .txt: collapsed stacks (for reading); anything else: a flame graph SVG
            kind = "raw" if profile.endswith(".txt") else "flamegraph"
            command = [
                str(spy) if spy.exists() else "py-spy",
                "record",
                "-o",
                profile,
                "--format",
                kind,
                "--threads",
                "--gil",
                "--subprocesses",
                "--",
                *command,
            ]
        with subprocess.Popen(command, env=self.env) as process:
            self.process = process
            try:
                yield process
            finally:
                self.last_peak_mb = self.peak_rss_mb()
                # stop the ingester itself: under py-spy, the profile is written when it ends
                pid = self._ingest_pid()
                if pid is not None:
                    os.kill(pid, signal.SIGTERM)
                else:
                    process.terminate()
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                self.process = None

    def wait_ready(self, publisher: Publisher, load: MessageSource) -> None:
        def up() -> bool:
            try:
                return self.stored() >= 0
            except OSError:
                return False

        wait_for(up, timeout_s=60, interval_s=0.2)
        before = self.stored()
        topic, payload, count, _ = load.message()
        publisher.publish(topic, payload)
        wait_for(lambda: self.stored() >= before + count, timeout_s=60, interval_s=0.1)

    def counters(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            match = re.match(r"^lovekey_ingest_(\w+?)(?:_total)?(\{[^}]*\})? ([0-9.e+-]+)$", line)
            if match and "bucket" not in match[1]:
                out[match[1] + (match[2] or "")] = float(match[3])
        return out

    def stored(self) -> float:
        return sum(v for k, v in self.counters().items() if k.startswith("stored_rows"))

    def catch_up(self, load: MessageSource) -> None:
        wait_for(lambda: self.counters().get("pending_messages", 1) == 0, timeout_s=300)

    def peak_rss_mb(self) -> float:
        pid = self._ingest_pid()
        if pid is None:
            return self.last_peak_mb
        status = Path(f"/proc/{pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match[1]) / 1024 if match else 0.0

    def cpu_s(self) -> float:
        """User + system CPU seconds the ingester has used so far."""
        pid = self._ingest_pid()
        if pid is None:
            return 0.0
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _ingest_pid(self) -> int | None:
        if self.process is None:
            return None
        if not self.profiling:
            return self.process.pid
        # under py-spy the ingester is its child
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        kids = children.read_text().split() if children.exists() else []
        return int(kids[0]) if kids else None


class Members:
    """N ingesters on one `$share` group, read as one (counters summed, memory per process)."""

    def __init__(self, members: list[IngesterProcess]) -> None:
        self.members = members

    @property
    def last_peak_mb(self) -> float:
        return max(m.last_peak_mb for m in self.members)

    @contextmanager
    def running(self, *, profile: str | None = None) -> Iterator[None]:
        with ExitStack() as stack:
            for n, member in enumerate(self.members):
                stack.enter_context(member.running(profile=profile if n == 0 else None))
            yield

    def wait_ready(self, publisher: Publisher, load: MessageSource) -> None:
        """Every member answers and has written something (the group shares the stream)."""
        if len(self.members) == 1:
            self.members[0].wait_ready(publisher, load)
            return
        wait_for(
            lambda: all(_stored_or_none(m) is not None for m in self.members), timeout_s=60, interval_s=0.2
        )
        before = [m.stored() for m in self.members]

        def all_writing() -> bool:
            topic, payload, _, _ = load.message()
            publisher.publish(topic, payload)
            return all(m.stored() > b for m, b in zip(self.members, before, strict=True))

        wait_for(all_writing, timeout_s=60, interval_s=0.1)

    def counters(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for member in self.members:
            for key, value in member.counters().items():
                total[key] = total.get(key, 0.0) + value
        return total

    def stored(self) -> float:
        return sum(m.stored() for m in self.members)

    def catch_up(self, load: MessageSource) -> None:
        for member in self.members:
            member.catch_up(load)

    def peak_rss_mb(self) -> float:
        return max(m.peak_rss_mb() for m in self.members)

    def cpu_s(self) -> float:
        return sum(m.cpu_s() for m in self.members)


def _stored_or_none(member: IngesterProcess) -> float | None:
    try:
        return member.stored()
    except OSError:
        return None
