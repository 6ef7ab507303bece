"""The alert worker as a process: LISTEN wake-up, crash (SIGKILL) and restart, two workers."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from lovekey.alerts.store import AlertCandidate, raise_alerts
from lovekey.alerts.worker import _dispatch_process
from lovekey.bench.support.provider import FakeProvider
from lovekey.bench.support.seeding import ContactSpec, seed_resident
from lovekey.bench.support.worker_process import WorkerProcess
from lovekey.config import Settings


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.close()


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE delivery_attempt, alert_outbox, alert_history, alert, contact,"
            " community_contact, device, gateway, resident, household, grid, community"
            " RESTART IDENTITY CASCADE"
        )
        yield conn


def seed_and_raise(conn: psycopg.Connection, fake: FakeProvider, n: int, prefix: str) -> None:
    with conn.transaction():
        for i in range(n):
            seed_resident(
                conn,
                f"{prefix}{i}",
                name=f"住户{i}",
                contacts=[
                    ContactSpec("love_key_holder", f"邻居{i}", push_url=fake.url(f"push/{prefix}{i}")),
                ],
            )
    now = datetime.now(UTC)
    with conn.transaction():
        raise_alerts(
            conn,
            [
                AlertCandidate("low_usage", f"{prefix}{i}", f"{prefix}{i}", None, None, now, {})
                for i in range(n)
            ],
            now,
        )


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def sent_rows(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM alert_outbox WHERE state = 'sent'").fetchone()
    assert row is not None
    return int(row[0])


def test_listen_wakes_the_worker_without_polling(
    database_url: str, conn: psycopg.Connection, workers: list[WorkerProcess]
) -> None:
    with FakeProvider() as fake:
        # polling so slow that only LISTEN/NOTIFY can deliver within the test's patience
        worker = WorkerProcess(database_url, fake, escalation_interval_s=600, poll_interval_s=600)
        workers.append(worker)
        worker.wait_started()
        time.sleep(0.5)  # the first (startup) escalation pass has run
        seed_and_raise(conn, fake, 1, "L")
        assert fake.wait_for(1, timeout_s=30), "".join(worker.lines[-20:])
        assert worker.stop() == 0


def test_sigkill_mid_dispatch_then_restart_sends_each_notification_once(
    database_url: str, conn: psycopg.Connection, workers: list[WorkerProcess]
) -> None:
    n = 30
    with FakeProvider(hold_s=1.0) as fake:
        seed_and_raise(conn, fake, n, "K")
        first = WorkerProcess(database_url, fake, processes=1, dispatchers=2, batch_size=5, send_threads=10)
        workers.append(first)
        assert fake.wait_for(5, timeout_s=60), "".join(first.lines[-20:])
        first.kill()  # requests are in flight (held by the fake)
        in_flight = {r.idempotency_key for r in fake.received()}
        sent_before_kill = sent_rows(conn)

        fake.hold_s = 0.0
        second = WorkerProcess(database_url, fake, processes=1, dispatchers=2, batch_size=5)
        workers.append(second)
        wait_until(lambda: sent_rows(conn) == n, 60, "all notifications sent after restart")
        assert second.stop() == 0

    counts = fake.counts_by_key()
    assert len(counts) == n  # every notification reached the provider
    assert all(key is not None for key in counts)
    duplicated = {key for key, c in counts.items() if c > 1}
    # a provider honouring Idempotency-Key delivers each once; raw resends happened only for
    # requests the killed worker had in flight, each exactly once more
    assert duplicated <= in_flight
    assert all(counts[key] == 2 for key in duplicated)
    assert sent_before_kill < n
    attempts = dict(conn.execute("SELECT result, count(*) FROM delivery_attempt GROUP BY result").fetchall())
    assert attempts.get("ok") == n  # one recorded success per notification
    # each resend follows an attempt the crash cut short (some of those had not yet reached
    # the provider: their resend is their first delivery)
    interrupted = {
        f"lovekey-{o}-{c}"
        for o, c in conn.execute(
            "SELECT outbox_id, channel FROM delivery_attempt WHERE result = 'interrupted'"
        )
    }
    assert duplicated <= interrupted
    assert len(interrupted) == attempts.get("interrupted")
    assert interrupted
    assert attempts.get("started", 0) == 0
    per_path = {}
    for r in fake.received():
        per_path.setdefault(r.path, set()).add(r.idempotency_key)
    assert len(per_path) == n
    assert all(len(keys) == 1 for keys in per_path.values())  # same key on a resend


def test_two_workers_never_send_the_same_notification(
    database_url: str, conn: psycopg.Connection, workers: list[WorkerProcess]
) -> None:
    n = 120
    with FakeProvider(hold_s=0.02) as fake:
        for _ in range(2):
            workers.append(
                WorkerProcess(database_url, fake, processes=1, dispatchers=3, batch_size=4, send_threads=8)
            )
        for w in workers:
            w.wait_started()
        seed_and_raise(conn, fake, n, "T")
        wait_until(lambda: sent_rows(conn) == n, 60, "all notifications sent")
        for w in workers:
            assert w.stop() == 0
    counts = fake.counts_by_key()
    assert len(counts) == n
    assert set(counts.values()) == {1}  # nobody sent anything twice
    assert len(fake.received()) == n
    by_worker = conn.execute(
        "SELECT count(DISTINCT worker) FROM delivery_attempt WHERE result = 'ok'"
    ).fetchone()
    assert by_worker == (2,)  # both took part


def test_a_process_beside_the_main_one_escalates_a_burst_by_itself(
    database_url: str, conn: psycopg.Connection, make_settings: Callable[..., Settings]
) -> None:
    """`alerts.processes` > 1: the extra processes escalate too (they share due alerts with
    the main one through SKIP LOCKED), so a burst's escalation is not one process's queue.
    Only the extra process runs here: without it escalating, nobody would be told."""
    with FakeProvider() as fake:
        settings = make_settings(
            database_url=database_url,
            alerts={"sms_url": fake.sms_template(), "ack_secret": "worker-test-secret-0123456789"},
        )
        context = multiprocessing.get_context("spawn")
        parent_alive, keep = context.Pipe(duplex=False)
        child = context.Process(
            target=_dispatch_process, args=(settings.model_dump(mode="json"), database_url, parent_alive)
        )
        child.start()
        parent_alive.close()
        try:
            seed_and_raise(conn, fake, 5, "BESIDE-")
            wait_until(lambda: sent_rows(conn) >= 5, 60, "the extra process to escalate and send")
            assert len({r.path for r in fake.received()}) == 5
        finally:
            keep.close()  # the main process "ends": the extra one finishes and exits
            child.join(60)
        assert child.exitcode == 0
