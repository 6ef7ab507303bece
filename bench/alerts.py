"""`lovekey bench alerts`: from an alert's commit to the first provider request.

N residents (default 1,000), each with a love-key holder reached by push (`json://`, even
residents) or through the SMS gateway (odd residents), both served by a local fake provider
in this process. `--set keepalive_webhooks=false` sends them through Apprise instead of the
kept-alive sender (`alerts.webhook`). A `lovekey alerts worker` runs as a subprocess with its
default settings. After a warm-up, N low-usage alerts are committed in one transaction
("simultaneous"), and for each the time from that commit to the provider receiving its first
request is measured.
Target: p99 under 1 s.

Runs in a scratch database created next to the configured one and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psycopg

from lovekey.alerts.channels import Outgoing
from lovekey.alerts.store import AlertCandidate, raise_alerts
from lovekey.alerts.worker import AlertWorker
from lovekey.bench.support.cpu import MachineCpu, burst_figures, machine_text
from lovekey.bench.support.provider import FakeProvider
from lovekey.bench.support.seeding import ContactSpec, seed_resident
from lovekey.bench.support.worker_process import (
    WorkerProcess,
    cpu_ms_each,
    database_cpu_s,
    database_cpu_text,
    process_cpu_s,
)
from lovekey.config import Settings
from lovekey.storage import connect, database_url, migrate
from lovekey.storage.scratch import scratch_database


def main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="lovekey bench alerts")
    parser.add_argument("--alerts", type=int, default=1000, help="alerts committed at once")
    parser.add_argument("--rounds", type=int, default=1, help="repeat with fresh alerts")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--null-sender",
        action="store_true",
        help="run the worker in this process with a sender that only records the time, to"
        " measure the pipeline without Apprise (one process)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a worker setting (alerts.KEY), e.g. --set processes=1; default: none",
    )
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.set)
    settings = settings.model_copy(
        update={"alerts": settings.alerts.model_validate({**settings.alerts.model_dump(), **overrides})}
    )

    with database_url(settings) as url, scratch_database(url, "alerts") as scratch_url:
        figures = _run(
            scratch_url, settings, args.alerts, args.rounds, overrides, null_sender=args.null_sender
        )
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        what = "send call (null sender)" if args.null_sender else "provider request"
        for r in figures["rounds"]:
            print(
                f"round {r['round']}: {r['alerts']} alerts in one commit -> first {what}:"
                f" min {r['min_ms']:.0f} ms, p50 {r['p50_ms']:.0f} ms, p90 {r['p90_ms']:.0f} ms,"
                f" p99 {r['p99_ms']:.0f} ms, max {r['max_ms']:.0f} ms;"
                f" {r['requests_per_s']:.0f} requests/s;"
                f" worker CPU {r['worker_cpu_ms_per_alert']:.2f} ms per alert"
                f"{database_cpu_text(r['database_cpu_ms_per_alert'])}"
                f"{machine_text(r['machine'])}"
                f" (machine load average {r['load_average_1m']:.1f}, {os.cpu_count()} CPUs)"
            )
        verdict = "PASS" if figures["p99_ms"] < 1000 else "FAIL"
        print(f"p99 over all rounds: {figures['p99_ms']:.0f} ms (target < 1000 ms): {verdict}")
        print(f"worker settings: {figures['worker_settings']}")
    return 0


def _run(
    url: str,
    settings: Settings,
    n: int,
    rounds: int,
    overrides: dict[str, str],
    *,
    null_sender: bool = False,
) -> dict[str, Any]:
    with connect(url, autocommit=True) as conn:
        migrate(conn, settings.storage)
    a = settings.alerts
    worker_settings = {
        "processes": a.processes,
        "dispatchers": a.dispatchers,
        "batch_size": a.batch_size,
        "send_threads": a.send_threads,
        "poll_interval_s": a.poll_interval_s,
        "keepalive_webhooks": a.keepalive_webhooks,
    }
    results = []
    all_latencies: list[float] = []
    with FakeProvider() as fake, connect(url, autocommit=True) as conn:
        total = n * rounds + 10
        # one transaction per resident: each upsert stages through temporary tables that its
        # commit drops; a single transaction over thousands held a lock per table and ran the
        # server out of lock memory (max_locks_per_transaction)
        for i in range(total):
            contact = (
                ContactSpec("love_key_holder", f"邻居{i}", push_url=fake.url(f"push/{i}"))
                if i % 2 == 0
                else ContactSpec("love_key_holder", f"邻居{i}", phone=f"+86139{i:08d}")
            )
            seed_resident(conn, f"R-{i:06d}", name=f"住户{i}", address=f"{i // 6}号楼", contacts=[contact])
        worker: WorkerProcess | _InProcessWorker = (
            _InProcessWorker(url, settings, fake) if null_sender else WorkerProcess(url, fake, **overrides)
        )
        try:
            worker.wait_started()
            _raise(conn, range(n * rounds, total))  # warm-up: 10 alerts
            if not fake.wait_for(10, timeout_s=60):
                raise RuntimeError("warm-up notifications did not arrive")
            for r in range(rounds):
                fake.clear()
                first = r * n
                load_1m = os.getloadavg()[0]
                cpu_before = worker.cpu_s()
                db_before = database_cpu_s()
                with MachineCpu() as machine:
                    committed = _raise(conn, range(first, first + n))
                    if not fake.wait_for(n, timeout_s=120):
                        raise RuntimeError(f"only {len(fake.received())} of {n} requests arrived")
                time.sleep(0.5)  # let the worker record the last results
                worker_cpu_s = worker.cpu_s() - cpu_before
                db_cpu_ms = cpu_ms_each(db_before, database_cpu_s(), n)
                arrival: dict[int, float] = {}
                for req in fake.received():
                    i = _resident_index(req.path)
                    arrival[i] = min(arrival.get(i, req.at_wall), req.at_wall)
                latencies = np.array([arrival[i] - committed for i in range(first, first + n)])
                latencies_ms = latencies * 1000
                all_latencies += list(latencies_ms)
                span = max(arrival.values()) - min(arrival.values())
                results.append(
                    {
                        "round": r + 1,
                        "alerts": n,
                        "min_ms": float(latencies_ms.min()),
                        "p50_ms": float(np.percentile(latencies_ms, 50)),
                        "p90_ms": float(np.percentile(latencies_ms, 90)),
                        "p99_ms": float(np.percentile(latencies_ms, 99)),
                        "max_ms": float(latencies_ms.max()),
                        "requests_per_s": n / span if span > 0 else float("inf"),
                        "worker_cpu_ms_per_alert": worker_cpu_s * 1000 / n,
                        "database_cpu_ms_per_alert": db_cpu_ms,
                        "machine": burst_figures(machine, committed, latencies_ms),
                        "load_average_1m": load_1m,
                    }
                )
        finally:
            worker.stop()
    return {
        "rounds": results,
        "p99_ms": float(np.percentile(np.array(all_latencies), 99)),
        "worker_settings": worker_settings,
    }


def _raise(conn: psycopg.Connection[object], indexes: range) -> float:
    now = datetime.now(UTC)
    with conn.transaction():
        raise_alerts(
            conn,
            [AlertCandidate("low_usage", f"R-{i:06d}", f"R-{i:06d}", None, None, now, {}) for i in indexes],
            now,
        )
    return time.time()


class _InProcessWorker:
    """An AlertWorker on a thread of this process whose sender records each call as a request
    at the fake provider (path and time), without Apprise or HTTP."""

    def __init__(self, url: str, settings: Settings, fake: FakeProvider) -> None:
        self._fake = fake
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        settings = settings.model_copy(
            update={
                "database_url": url,
                "alerts": settings.alerts.model_copy(update={"sms_url": fake.sms_template()}),
            }
        )
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(settings, url),))
        self._thread.start()

    async def _main(self, settings: Settings, url: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with AlertWorker(settings, url, sender=self._record) as worker:
            self._started.set()
            await worker.run(self._stop)

    def _record(self, out: Outgoing) -> None:
        self._fake._record(urlsplit(out.url.replace("json://", "http://", 1)).path, {}, {})

    def wait_started(self) -> None:
        if not self._started.wait(60):
            raise RuntimeError("in-process worker did not start")

    def cpu_s(self) -> float:
        return process_cpu_s(os.getpid())

    def stop(self) -> int:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        return 0


def _resident_index(path: str) -> int:
    # /push/{i} or /sms/86139{i:08d}
    tail = path.rstrip("/").rsplit("/", 1)[-1]
    return int(tail[5:]) if path.startswith("/sms/") else int(tail)
