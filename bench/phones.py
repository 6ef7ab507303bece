"""`lovekey bench phones`: 1,000 simultaneous alerts through the SMS providers' SDK path.

Like `bench alerts`, but every love-key holder is reached by a template SMS through the
official SDK of a provider (Alibaba Cloud by default, `--provider tencent` for Tencent Cloud,
`--voice` for voice calls), against the provider stand-in in this process
(`alerts.providers.standins`, which verifies every request's signature). A `lovekey alerts
worker` runs as a subprocess. N low-usage alerts are committed in one transaction, and for
each the time from that commit to the stand-in accepting its first request is measured, with
the worker's CPU time per notification (all its processes, from /proc).
Target: p99 under 1 s.

The stand-in answers from this process, on the same cores as the worker and PostgreSQL, so
its own cost counts: it reads requests without the standard library's email header parser,
and the wait for arrivals counts before it builds the per-resident table. The SDKs build,
sign and parse every request; their HTTP goes over kept-alive connections (`alerts.keepalive`)
(`alerts.providers.tencent._PooledConnection`, `alerts.providers.aliyun.PooledSession`).
On a shared machine the figures move with the load of the moment: `--baseline` measures the
plain json:// gateway in the same run to read them against. Figures: docs/alerts.md.

Runs in a scratch database created next to the configured one and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg

from lovekey.alerts.providers.standins import FakeAliyun, FakeTencent
from lovekey.alerts.store import AlertCandidate, raise_alerts
from lovekey.bench.support.cpu import MachineCpu, burst_figures, machine_text
from lovekey.bench.support.provider import FakeProvider
from lovekey.bench.support.seeding import ContactSpec, seed_resident
from lovekey.bench.support.worker_process import WorkerProcess, cpu_ms_each, database_cpu_s, database_cpu_text
from lovekey.config import Settings
from lovekey.storage import connect, database_url, migrate
from lovekey.storage.scratch import scratch_database

KEY_ID, KEY_SECRET = "bench-key-id", "bench-key-secret"
# the wording is the operator's (docs/alerts.md); the stand-in only needs it to exist
ALIYUN = {
    "SMS_900001": "${name}${what}（${since}起），请查看：https://lk.example/a/${link}",
    "TTS_900001": "${name}${what}。请按1或2。",
}
TENCENT = {"9001": "{1}{2}（{3}起），请查看：https://lk.example/a/{4}", "9002": "{1}{2}。请按1或2。"}


def main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="lovekey bench phones")
    parser.add_argument("--alerts", type=int, default=1000, help="alerts committed at once")
    parser.add_argument("--rounds", type=int, default=1, help="repeat with fresh alerts")
    parser.add_argument("--provider", choices=["aliyun", "tencent"], default="aliyun")
    parser.add_argument("--voice", action="store_true", help="voice calls instead of SMS")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="first measure the same alerts through a plain JSON SMS gateway (json://, kept-alive"
        " connections; no SDK), in the same run, to read the SDK path against the machine's load",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a worker setting (alerts.KEY)",
    )
    parser.add_argument(
        "--provider-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a provider setting (alerts.providers.<name>.KEY, a JSON value), e.g. batch_max=1",
    )
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.set)
    runs = []
    with database_url(settings) as url:
        for gateway in (True, False) if args.baseline else (False,):
            with scratch_database(url, "phones") as scratch_url:
                runs.append(_run(scratch_url, settings, args, overrides, gateway=gateway))
    if args.json:
        print(json.dumps(runs, indent=1))
        return 0
    for figures in runs:
        _print(figures)
    return 0


def _print(figures: dict[str, Any]) -> None:
    for r in figures["rounds"]:
        print(
            f"round {r['round']}: {r['alerts']} alerts in one commit -> first request at the"
            f" {figures['path']}: min {r['min_ms']:.0f} ms, p50 {r['p50_ms']:.0f} ms,"
            f" p90 {r['p90_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, max {r['max_ms']:.0f} ms;"
            f" worker CPU {r['worker_cpu_ms_per_notification']:.2f} ms per notification"
            f"{database_cpu_text(r['database_cpu_ms_per_notification'])}"
            f"{machine_text(r['machine'])}"
            f" (load average {r['load_average_1m']:.1f}, {os.cpu_count()} CPUs)"
        )
    verdict = "PASS" if figures["p99_ms"] < 1000 else "FAIL"
    print(f"{figures['path']}: p99 over all rounds {figures['p99_ms']:.0f} ms (target < 1000 ms): {verdict}")
    print(f"signatures refused by the stand-in: {figures['refused']}")


def _provider_settings(args: argparse.Namespace, endpoint: str) -> dict[str, Any]:
    settings = _provider_defaults(args, endpoint)
    for item in args.provider_set:
        key, _, value = item.partition("=")
        settings[key] = json.loads(value)
    return settings


def _provider_defaults(args: argparse.Namespace, endpoint: str) -> dict[str, Any]:
    credentials = {"access_key_id": KEY_ID, "access_key_secret": KEY_SECRET, "endpoint": endpoint}
    if args.provider == "aliyun":
        if args.voice:
            return {
                "kind": "aliyun_voice",
                **credentials,
                "caller_number": "057100000000",
                "templates": {"call.zh": "TTS_900001"},
            }
        return {
            "kind": "aliyun_sms",
            **credentials,
            "sign_name": "爱心钥匙",
            "templates": {"alert.zh": "SMS_900001"},
        }
    if args.voice:
        return {
            "kind": "tencent_voice",
            **credentials,
            "app_id": "1400000002",
            "templates": {"call.zh": "9002"},
        }
    return {
        "kind": "tencent_sms",
        **credentials,
        "sign_name": "爱心钥匙",
        "app_id": "1400000001",
        "templates": {"alert.zh": "9001"},
    }


def _run(
    url: str,
    settings: Settings,
    args: argparse.Namespace,
    overrides: dict[str, str],
    *,
    gateway: bool = False,
) -> dict[str, Any]:
    with connect(url, autocommit=True) as conn:
        migrate(conn, settings.storage)
    n, rounds = args.alerts, args.rounds
    fake_class = FakeAliyun if args.provider == "aliyun" else FakeTencent
    templates = ALIYUN if args.provider == "aliyun" else TENCENT
    channel = "voice" if args.voice else "sms"
    results = []
    all_latencies: list[float] = []
    with (
        fake_class(key_id=KEY_ID, key_secret=KEY_SECRET, sign_name="爱心钥匙", templates=templates) as cloud,
        FakeProvider() as unused,
        connect(url, autocommit=True) as conn,
    ):
        total = n * rounds + 10
        for i in range(total):
            with conn.transaction():  # one resident a transaction: a shared server's lock table is small
                seed_resident(
                    conn,
                    f"R-{i:06d}",
                    name=f"住户{i}",
                    address=f"{i // 6}号楼",
                    contacts=[ContactSpec("love_key_holder", f"邻居{i}", phone=f"+86139{i:08d}")],
                )
        alerts_env: dict[str, object] = {
            "providers": json.dumps({"bench": _provider_settings(args, cloud.endpoint)}),
            f"{channel}_providers": json.dumps(["bench"]),
            "role_channels": json.dumps({"default": [channel]}),
            **overrides,
        }
        if gateway:  # the baseline: the old free-text JSON gateway (WorkerProcess sets sms_url)
            alerts_env = {"role_channels": json.dumps({"default": ["sms"]}), **overrides}
        arrivals: _CloudArrivals | _GatewayArrivals = (
            _GatewayArrivals(unused) if gateway else _CloudArrivals(cloud, conn)
        )
        worker = WorkerProcess(url, unused, **alerts_env)
        try:
            worker.wait_started()
            _raise(conn, range(n * rounds, total))  # warm-up: 10 alerts
            _wait(lambda: arrivals.enough(10), 60, "warm-up messages")
            for r in range(rounds):
                arrivals.clear()
                first = r * n
                load_1m = os.getloadavg()[0]
                cpu_before = worker.cpu_s()
                db_before = database_cpu_s()
                with MachineCpu() as machine:
                    committed = _raise(conn, range(first, first + n))
                    _wait(lambda: arrivals.enough(n), 180, f"{n} messages")
                time.sleep(0.5)  # let the worker record the last results
                worker_cpu_s = worker.cpu_s() - cpu_before
                db_cpu_ms = cpu_ms_each(db_before, database_cpu_s(), n)
                arrival = arrivals.by_resident()
                latencies_ms = np.array([arrival[i] - committed for i in range(first, first + n)]) * 1000
                all_latencies += list(latencies_ms)
                results.append(
                    {
                        "round": r + 1,
                        "alerts": n,
                        "min_ms": float(latencies_ms.min()),
                        "p50_ms": float(np.percentile(latencies_ms, 50)),
                        "p90_ms": float(np.percentile(latencies_ms, 90)),
                        "p99_ms": float(np.percentile(latencies_ms, 99)),
                        "max_ms": float(latencies_ms.max()),
                        "worker_cpu_ms_per_notification": worker_cpu_s * 1000 / n,
                        "database_cpu_ms_per_notification": db_cpu_ms,
                        "machine": burst_figures(machine, committed, latencies_ms),
                        "load_average_1m": load_1m,
                    }
                )
        finally:
            worker.stop()
    return {
        "path": "JSON SMS gateway (json://, no SDK)"
        if gateway
        else f"{args.provider} {channel} (official SDK)",
        "rounds": results,
        "p99_ms": float(np.percentile(np.array(all_latencies), 99)),
        "refused": list(cloud.refused),
        "worker_settings": overrides,
    }


class _CloudArrivals:
    """First acceptance per resident at the cloud stand-in (by number: +86139<index>; one
    batch request carries several)."""

    def __init__(self, cloud: Any, conn: psycopg.Connection[Any]) -> None:
        self.cloud = cloud

    def enough(self, n: int) -> bool:
        # counted first: the stand-in answers in this process, and building the per-resident
        # table every 20 ms while 1,000 requests arrive takes its GIL from it
        return len(self.cloud.sent) >= n and len(self.pending()) >= n

    def pending(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for m in list(self.cloud.sent):
            i = int(m.phone.lstrip("+").removeprefix("86")[3:])
            out[i] = min(out.get(i, m.at), m.at)
        return out

    def clear(self) -> None:
        self.cloud.sent.clear()
        self.cloud.first_request_at.clear()

    def by_resident(self) -> dict[int, float]:
        return self.pending()


class _GatewayArrivals:
    """First request per resident at the JSON gateway (path /sms/86139<index>)."""

    def __init__(self, fake: FakeProvider) -> None:
        self.fake = fake

    def enough(self, n: int) -> bool:
        return len(self.pending()) >= n

    def pending(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for req in self.fake.received():
            i = int(req.path.rstrip("/").rsplit("/", 1)[-1][5:])
            out[i] = min(out.get(i, req.at_wall), req.at_wall)
        return out

    def clear(self) -> None:
        self.fake.clear()

    def by_resident(self) -> dict[int, float]:
        return self.pending()


def _wait(done: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _raise(conn: psycopg.Connection[object], indexes: range) -> float:
    now = datetime.now(UTC)
    with conn.transaction():
        raise_alerts(
            conn,
            [AlertCandidate("low_usage", f"R-{i:06d}", f"R-{i:06d}", None, None, now, {}) for i in indexes],
            now,
        )
    return time.time()
