"""alerts.store on real PostgreSQL: one unresolved alert per (kind, subject), history, listing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from lovekey.alerts.store import (
    AlertCandidate,
    acknowledge,
    acknowledge_async,
    clear_alerts,
    get_alert,
    history,
    list_alerts,
    raise_alerts,
    resolve,
    resolve_async,
)
from lovekey.cli import main as lovekey_main
from lovekey.errors import AlertStateError

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def low_usage(resident: str, **details: object) -> AlertCandidate:
    return AlertCandidate(
        kind="low_usage",
        subject=resident,
        resident_id=resident,
        device_id=f"WM-{resident}",
        gateway_id="GW-1",
        since=T0 - timedelta(hours=12),
        details=details,
    )


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url) as conn:
        conn.execute("TRUNCATE alert_history, alert RESTART IDENTITY CASCADE")
        conn.commit()
        yield conn


def test_raise_opens_once_then_updates(conn: psycopg.Connection) -> None:
    first = raise_alerts(conn, [low_usage("R-1", usage_l=2.0), low_usage("R-2")], T0)
    assert len(first.opened) == 2
    assert first.updated == []
    again = raise_alerts(conn, [low_usage("R-1", usage_l=1.0)], T0 + timedelta(minutes=5))
    assert again.opened == []
    assert again.updated == [first.opened[0]]
    alert = get_alert(conn, first.opened[0])
    assert alert is not None
    assert alert["last_triggered_at"] == T0 + timedelta(minutes=5)
    assert alert["opened_at"] == T0
    assert alert["details"] == {"usage_l": 1.0}
    # same details again: refreshed, but no new history row
    raise_alerts(conn, [low_usage("R-1", usage_l=1.0)], T0 + timedelta(minutes=6))
    events = [h["event"] for h in history(conn, first.opened[0])]
    assert events == ["opened", "updated"]


def test_duplicate_candidates_in_one_batch_make_one_alert(conn: psycopg.Connection) -> None:
    result = raise_alerts(conn, [low_usage("R-1"), low_usage("R-1")], T0)
    assert len(result.opened) == 1
    assert conn.execute("SELECT count(*) FROM alert").fetchone() == (1,)


def test_a_neighbour_raise_lifts_a_check_in_alert_and_makes_it_due_now(conn: psycopg.Connection) -> None:
    from dataclasses import replace

    first = raise_alerts(conn, [replace(low_usage("R-1"), tier="check_in")], T0)
    (alert_id,) = first.opened
    conn.execute("UPDATE alert SET escalation_due_at = NULL WHERE id = %s", (alert_id,))
    # the sensitive tier again: stays check_in, nothing becomes due
    again = raise_alerts(conn, [replace(low_usage("R-1"), tier="check_in")], T0 + timedelta(minutes=5))
    assert again.raised_tier == []
    later = T0 + timedelta(hours=2)
    raised = raise_alerts(conn, [low_usage("R-1")], later)
    assert raised.raised_tier == [alert_id]
    assert conn.execute(
        "SELECT tier, escalation_due_at FROM alert WHERE id = %s", (alert_id,)
    ).fetchone() == (
        "neighbour",
        later,
    )
    # never back down
    down = raise_alerts(conn, [replace(low_usage("R-1"), tier="check_in")], later + timedelta(minutes=5))
    assert down.raised_tier == []
    assert conn.execute("SELECT tier FROM alert WHERE id = %s", (alert_id,)).fetchone() == ("neighbour",)
    events = [h["event"] for h in history(conn, alert_id)]
    assert events.count("tier_raised") == 1


def test_clear_resolves_and_a_new_condition_opens_a_new_alert(conn: psycopg.Connection) -> None:
    opened = raise_alerts(conn, [low_usage("R-1"), low_usage("R-2")], T0).opened
    cleared = clear_alerts(conn, "low_usage", ["R-1", "R-9"], T0 + timedelta(hours=1))
    assert cleared == [opened[0]]
    alert = get_alert(conn, opened[0])
    assert alert is not None
    assert (alert["status"], alert["outcome"]) == ("resolved", "auto_cleared")
    assert clear_alerts(conn, "low_usage", ["R-1"], T0 + timedelta(hours=2)) == []
    reopened = raise_alerts(conn, [low_usage("R-1")], T0 + timedelta(hours=3))
    assert reopened.opened
    assert reopened.opened[0] != opened[0]
    assert [a["id"] for a in list_alerts(conn)] == [reopened.opened[0], opened[1]]
    assert len(list_alerts(conn, include_resolved=True)) == 3
    assert [h["event"] for h in history(conn, opened[0])] == ["opened", "auto_resolved"]


def test_ack_then_resolve_records_every_transition(conn: psycopg.Connection) -> None:
    (alert_id,) = raise_alerts(conn, [low_usage("R-1")], T0).opened
    assert acknowledge(conn, alert_id, by="Wang", channel="cli", now=T0 + timedelta(minutes=3))
    assert not acknowledge(conn, alert_id, by="Li", channel="sms", now=T0 + timedelta(minutes=4))
    with pytest.raises(AlertStateError):
        resolve(conn, alert_id, outcome="fine", note=None, by="Wang", channel="cli", now=T0)
    with pytest.raises(AlertStateError):
        resolve(conn, alert_id, outcome="other", note=" ", by="Wang", channel="cli", now=T0)
    resolve(
        conn,
        alert_id,
        outcome="resident_ok",
        note="was asleep",
        by="Wang",
        channel="cli",
        now=T0 + timedelta(minutes=30),
    )
    alert = get_alert(conn, alert_id)
    assert alert is not None
    assert alert["acknowledged_by"] == "Wang"
    assert alert["ack_channel"] == "cli"
    assert alert["outcome"] == "resident_ok"
    assert alert["outcome_note"] == "was asleep"
    events = [h["event"] for h in history(conn, alert_id)]
    assert events == ["opened", "acknowledged", "acknowledged_again", "resolved"]
    with pytest.raises(AlertStateError):
        acknowledge(conn, alert_id, by="Wang", channel="cli", now=T0 + timedelta(hours=1))


async def _async_steps(
    database_url: str, alert_id: int, steps: list[tuple[str, dict[str, object]]]
) -> list[object]:
    results: list[object] = []
    async with await psycopg.AsyncConnection.connect(database_url) as aconn:
        for name, kwargs in steps:
            try:
                if name == "acknowledge":
                    results.append(await acknowledge_async(aconn, alert_id, **kwargs))
                else:
                    results.append(await resolve_async(aconn, alert_id, **kwargs))
            except AlertStateError as exc:
                results.append(exc.detail)
            await aconn.commit()
    return results


def _sync_steps(
    conn: psycopg.Connection, alert_id: int, steps: list[tuple[str, dict[str, object]]]
) -> list[object]:
    results: list[object] = []
    for name, kwargs in steps:
        try:
            if name == "acknowledge":
                results.append(acknowledge(conn, alert_id, **kwargs))
            else:
                results.append(resolve(conn, alert_id, **kwargs))
        except AlertStateError as exc:
            results.append(exc.detail)
        conn.commit()
    return results


STEPS: list[tuple[str, dict[str, object]]] = [
    ("acknowledge", {"by": "Wang", "channel": "console", "now": T0 + timedelta(minutes=3)}),
    ("acknowledge", {"by": "Li", "channel": "console", "now": T0 + timedelta(minutes=4)}),
    ("resolve", {"outcome": "fine", "note": None, "by": "Wang", "channel": "console", "now": T0}),
    ("resolve", {"outcome": "other", "note": " ", "by": "Wang", "channel": "console", "now": T0}),
    ("resolve", {"outcome": "resident_ok", "note": "ok", "by": "Wang", "channel": "console", "now": T0}),
    ("acknowledge", {"by": "Wang", "channel": "console", "now": T0 + timedelta(hours=1)}),
]
RESOLVE_UNACKNOWLEDGED: list[tuple[str, dict[str, object]]] = [
    ("resolve", {"outcome": "needed_help", "note": None, "by": "Zhao", "channel": "console", "now": T0}),
    ("resolve", {"outcome": "needed_help", "note": None, "by": "Zhao", "channel": "console", "now": T0}),
]


@pytest.mark.parametrize("steps", [STEPS, RESOLVE_UNACKNOWLEDGED], ids=["ack_then_resolve", "resolve_only"])
def test_the_async_transitions_match_the_sync_ones(
    database_url: str, conn: psycopg.Connection, steps: list[tuple[str, dict[str, object]]]
) -> None:
    """The console's async variants run the same SQL and checks: same results, same rows."""
    import asyncio

    sync_id, async_id = raise_alerts(conn, [low_usage("R-1"), low_usage("R-2")], T0).opened
    conn.commit()
    sync_results = _sync_steps(conn, sync_id, steps)
    async_results = asyncio.run(_async_steps(database_url, async_id, steps))
    assert async_results == sync_results
    assert any(isinstance(r, str) for r in sync_results)  # the refusals were exercised too

    def comparable(alert_id: int) -> tuple[object, ...]:
        alert = get_alert(conn, alert_id)
        assert alert is not None
        rows = [(h["event"], h["actor"], h["detail"]) for h in history(conn, alert_id)]
        return tuple(
            v for k, v in alert.items() if k not in ("id", "subject", "resident_id", "device_id")
        ), rows

    assert comparable(async_id) == comparable(sync_id)


def test_history_is_append_only(conn: psycopg.Connection) -> None:
    raise_alerts(conn, [low_usage("R-1")], T0)
    conn.commit()
    with pytest.raises(psycopg.errors.RestrictViolation):
        conn.execute("UPDATE alert_history SET event = 'x'")
    conn.rollback()
    with pytest.raises(psycopg.errors.RestrictViolation):
        conn.execute("DELETE FROM alert_history")
    conn.rollback()


def test_racing_raisers_end_with_one_alert(database_url: str, conn: psycopg.Connection) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def raiser() -> None:
        try:
            with psycopg.connect(database_url) as c:
                barrier.wait()
                raise_alerts(c, [low_usage(f"R-{i}") for i in range(50)], T0)
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=raiser) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert conn.execute("SELECT count(*) FROM alert").fetchone() == (50,)
    assert conn.execute("SELECT count(*) FROM alert_history WHERE event = 'opened'").fetchone() == (50,)


def test_insert_wakes_listeners(database_url: str, conn: psycopg.Connection) -> None:
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN lovekey_alerts")
        raise_alerts(conn, [low_usage(f"R-{i}") for i in range(20)], T0)
        conn.commit()
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notes] == ["lovekey_alerts"]


def test_cli_list_json(
    database_url: str, conn: psycopg.Connection, make_settings, monkeypatch, capsys
) -> None:
    opened = raise_alerts(conn, [low_usage("R-1"), low_usage("R-2")], T0).opened
    clear_alerts(conn, "low_usage", ["R-2"], T0 + timedelta(minutes=1))
    conn.commit()
    monkeypatch.setenv("LOVEKEY_DATABASE_URL", database_url)
    assert lovekey_main(["alerts", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [opened[0]]
    row = rows[0]
    assert {k: row[k] for k in ("kind", "resident_id", "device_id", "status")} == {
        "kind": "low_usage",
        "resident_id": "R-1",
        "device_id": "WM-R-1",
        "status": "open",
    }
    assert datetime.fromisoformat(row["opened_at"]) == T0
    assert lovekey_main(["alerts", "list", "--json", "--all"]) == 0
    assert {r["id"] for r in json.loads(capsys.readouterr().out)} == set(opened)
