"""Retention of alert records (alerts/records.py) on real PostgreSQL: what is purged, what is
kept, and that every table hanging off an alert is found."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import psycopg
import pytest

from lovekey.alerts.records import purge_alert_records
from lovekey.alerts.store import resolve
from lovekey.bench.support.provider import FakeProvider
from lovekey.cli import main
from lovekey.config import Settings
from tests.fix_alerts import DeliveryRig, at_local, delivery_rig

T0 = at_local("2022-03-01 09:00")


@pytest.fixture
def rig(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[DeliveryRig]:
    with FakeProvider() as fake:
        settings = make_settings(
            database_url=database_url,
            alerts={"sms_url": fake.sms_template(), "public_base_url": "https://lk.example"},
        )
        with delivery_rig(database_url, settings, fake) as r:
            yield r


def notified_and_resolved(rig: DeliveryRig, kind: str, at: timedelta) -> int:
    """An alert raised, sent through two chain steps (outbox rows, delivery attempts, history)
    and resolved, all at T0 + `at`."""
    now = T0 + at
    alert_id = rig.raise_(kind, "R-1", now)
    rig.run(now)
    rig.run(now + timedelta(minutes=10))
    with rig.conn.transaction():
        resolve(rig.conn, alert_id, outcome="resident_ok", note=None, by="t", channel="cli", now=now)
    return alert_id


def counts(conn: psycopg.Connection[object], alert_id: int) -> tuple[int, int, int, int]:
    row = conn.execute(
        """
        SELECT (SELECT count(*) FROM alert WHERE id = %(a)s),
               (SELECT count(*) FROM alert_history WHERE alert_id = %(a)s),
               (SELECT count(*) FROM alert_outbox WHERE alert_id = %(a)s),
               (SELECT count(*) FROM delivery_attempt d JOIN alert_outbox o ON o.id = d.outbox_id
                WHERE o.alert_id = %(a)s)
        """,
        {"a": alert_id},
    ).fetchone()
    assert row is not None
    return (int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def test_resolved_alerts_past_the_cutoff_go_with_everything_hanging_off_them(rig: DeliveryRig) -> None:
    old = notified_and_resolved(rig, "low_usage", timedelta(0))
    recent = notified_and_resolved(rig, "routine_break", timedelta(days=400))
    still_open = rig.raise_("running_tap", "R-1", T0)  # older than the cutoff, never resolved
    rig.run(T0)
    before_old, before_recent = counts(rig.conn, old), counts(rig.conn, recent)
    assert all(n > 0 for n in before_old), before_old  # history, outbox and attempts exist
    assert all(n > 0 for n in before_recent), before_recent

    for at in (T0, T0 + timedelta(days=400)):  # a provider's callback, old and recent
        rig.conn.execute(
            "INSERT INTO provider_callback (received_at, provider, topic, accepted, reason, body)"
            " VALUES (%s, 'aliyun', 'SmsReport', true, 'ok', '[{\"phone_number\": \"138...\"}]')",
            (at,),
        )

    report = purge_alert_records(rig.conn, T0 + timedelta(days=200))

    assert report.alerts == 1
    assert counts(rig.conn, old) == (0, 0, 0, 0)
    assert counts(rig.conn, recent) == before_recent
    assert counts(rig.conn, still_open)[0] == 1
    assert report.rows["alert"] == 1
    assert report.rows["alert_outbox"] == before_old[2]
    assert report.rows["delivery_attempt"] == before_old[3]
    callbacks = rig.conn.execute("SELECT received_at FROM provider_callback").fetchall()
    assert [at for (at,) in callbacks] == [T0 + timedelta(days=400)]
    # nothing left to do: a second purge finds nothing
    assert purge_alert_records(rig.conn, T0 + timedelta(days=200)).alerts == 0


def test_the_history_stays_append_only_outside_the_purge(rig: DeliveryRig) -> None:
    alert_id = notified_and_resolved(rig, "low_usage", timedelta(0))
    with pytest.raises(psycopg.errors.RestrictViolation):
        rig.conn.execute("DELETE FROM alert_history WHERE alert_id = %s", (alert_id,))
    with pytest.raises(psycopg.errors.RestrictViolation):
        rig.conn.execute("UPDATE alert_history SET actor = 'x' WHERE alert_id = %s", (alert_id,))
    # the purge's own switch allows deletes only: no update, even inside it
    with pytest.raises(psycopg.errors.RestrictViolation):
        while_purging(rig.conn, "UPDATE alert_history SET actor = 'x'")
    rig.conn.execute("INSERT INTO audit_log (at, action) VALUES (now(), 'login')")
    with pytest.raises(psycopg.errors.RestrictViolation):
        while_purging(rig.conn, "UPDATE audit_log SET action = 'x'")


def while_purging(conn: psycopg.Connection[object], statement: str) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL lovekey.purging = 'on'")
        conn.execute(statement)  # type: ignore[arg-type]


def test_every_column_naming_an_alert_or_a_notification_has_a_foreign_key(database_url: str) -> None:
    # the purge finds dependents by foreign key; a column that points at an alert or an outbox
    # row without one would keep personal data past its retention
    with psycopg.connect(database_url) as conn:
        loose = conn.execute(
            """
            SELECT c.table_name || '.' || c.column_name
            FROM information_schema.columns c
            WHERE c.table_schema = current_schema()
              AND c.column_name IN ('alert_id', 'outbox_id', 'notification_id')
              AND NOT EXISTS (
                SELECT 1 FROM pg_constraint k
                JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
                WHERE k.contype = 'f' AND k.conrelid = (c.table_schema || '.' || c.table_name)::regclass
                  AND a.attname = c.column_name)
            ORDER BY 1
            """
        ).fetchall()
    assert loose == []


def test_the_command_counts_then_purges(
    rig: DeliveryRig, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    old = notified_and_resolved(rig, "low_usage", timedelta(0))
    url = rig.settings.database_url
    assert url is not None
    config = f"{tmp_path}/lovekey.toml"
    with open(config, "w") as f:
        f.write(f'database_url = "{url}"\n')
    assert main(["--config", config, "alerts", "purge", "--before", "2023-01-01", "--dry-run"]) == 0
    assert "would purge 1 alerts" in capsys.readouterr().out
    assert counts(rig.conn, old)[0] == 1
    assert main(["--config", config, "alerts", "purge", "--before", "2023-01-01"]) == 0
    out = capsys.readouterr().out
    assert "purged 1 alerts" in out
    assert "delivery_attempt:" in out
    assert counts(rig.conn, old) == (0, 0, 0, 0)
    assert main(["--config", config, "alerts", "purge", "--before", "2999-01-01"]) == 2
