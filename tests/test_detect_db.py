"""The detector through real PostgreSQL: `lovekey detect --once --at`, restarts, events."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from lovekey.alerts.absence import clear_away, set_away
from lovekey.alerts.chains import ChainBook
from lovekey.alerts.store import list_alerts, resolve
from lovekey.cli import main as lovekey_main
from lovekey.config import Settings
from lovekey.detectors import store as detect_store
from lovekey.detectors.daemon import watch_events
from lovekey.detectors.event_watcher import EventWatcher
from lovekey.detectors.ring import NEVER
from lovekey.detectors.service import DetectorService, DetectorShard
from lovekey.devices.registry import (
    CommunityRow,
    DeviceRow,
    GatewayRow,
    HouseholdRow,
    ResidentRow,
    upsert_rows,
)
from lovekey.vocabulary import DeviceKind

BS = timedelta(minutes=15)
# a recent quarter hour, so the reading partitions the migration made exist
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
T = NOW.replace(minute=NOW.minute // 15 * 15) - timedelta(hours=1)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "TRUNCATE alert_history, alert, water_reading, device_event, detector_day, contact,"
            " device, resident, household, community, gateway RESTART IDENTITY CASCADE"
        )
        conn.commit()
        yield conn


@pytest.fixture
def settings(database_url: str, make_settings: Any) -> Settings:
    s: Settings = make_settings(database_url=database_url)
    return s


@pytest.fixture
def env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOVEKEY_DATABASE_URL", database_url)


def add_resident(
    conn: psycopg.Connection[Any],
    rid: str,
    *,
    gateway: str = "GW-1",
    interval_s: int = 900,
    away_until: datetime | None = None,
    extra: tuple[str, ...] = (),
    phone: str | None = None,
) -> dict[str, int]:
    """A resident with a water meter (and `extra` devices, e.g. 'smoke'), registered through
    the registry's API, and away until `away_until` if given; returns device keys."""
    household = f"H-{rid}"
    devices = {kind: f"{kind[:2].upper()}-{rid}" for kind in ("water_meter", *extra)}
    upsert_rows(
        conn,
        [
            CommunityRow("C-1"),
            GatewayRow(gateway),
            HouseholdRow(household, community_id="C-1"),
            ResidentRow(rid, household, phone=phone),
            *(
                DeviceRow(
                    device,
                    kind,
                    household,
                    gateway,
                    resident_id=rid,
                    report_interval_s=interval_s if kind == DeviceKind.WATER_METER else None,
                )
                for kind, device in devices.items()
            ),
        ],
    )
    if away_until is not None:
        set_away(conn, rid, until=away_until, reason="visiting family", now=T, chains=ChainBook.load())
    key_of = dict(conn.execute("SELECT id, key FROM device WHERE id = ANY(%s)", (list(devices.values()),)))
    conn.commit()
    return {kind: key_of[device] for kind, device in devices.items()}


def add_readings(
    conn: psycopg.Connection[Any],
    key: int,
    start: datetime,
    end: datetime,
    litres_per_bucket: float,
    *,
    total: float = 1000.0,
    every: timedelta = BS,
) -> float:
    """Readings every `every` in [start, end), each bucket using the given litres; returns
    the last total."""
    rows = []
    t = start
    while t < end:
        rows.append((t, t + timedelta(seconds=5), total, key))
        total += litres_per_bucket
        t += every
    with (
        conn.cursor() as cur,
        cur.copy("COPY water_reading_wide (ts, received_at, total_l, device_key) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
    conn.commit()
    return total


def detect_once(at: datetime, *extra: str) -> None:
    assert lovekey_main(["detect", "--once", "--at", at.isoformat(), *extra]) == 0


def open_alerts(conn: psycopg.Connection[Any], *, everything: bool = False) -> list[tuple[str, str, str]]:
    conn.commit()
    return sorted(
        (a["kind"], a["subject"], a["status"]) for a in list_alerts(conn, include_resolved=everything)
    )


def test_once_raises_low_usage_and_running_again_raises_nothing_new(
    conn: psycopg.Connection[Any], env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = add_resident(conn, "R-1")
    quiet = add_readings(conn, keys["water_meter"], T - timedelta(hours=20), T - timedelta(hours=14), 3.0)
    add_readings(conn, keys["water_meter"], T - timedelta(hours=14), T + BS, 0.0, total=quiet)
    busy = add_resident(conn, "R-2")
    add_readings(conn, busy["water_meter"], T - timedelta(hours=20), T + BS, 2.0)
    detect_once(T)
    assert open_alerts(conn) == [("low_usage", "R-1", "open")]
    assert "1 raised" in capsys.readouterr().out
    detect_once(T)  # a restart: the state is rebuilt from the database
    detect_once(T + BS)
    assert open_alerts(conn, everything=True) == [("low_usage", "R-1", "open")]


def test_a_resolved_episode_is_not_raised_again_but_a_new_one_is(
    conn: psycopg.Connection[Any], env: None
) -> None:
    keys = add_resident(conn, "R-1")
    total = add_readings(conn, keys["water_meter"], T - timedelta(hours=20), T - timedelta(hours=14), 3.0)
    total = add_readings(conn, keys["water_meter"], T - timedelta(hours=14), T + BS, 0.0, total=total)
    detect_once(T)
    [alert] = list_alerts(conn)
    resolve(conn, alert["id"], outcome="resident_ok", note=None, by="staff", channel="cli", now=T)
    conn.commit()
    detect_once(T + BS)  # the same quiet stretch: the staff already went
    assert open_alerts(conn) == []
    # water again (clears it), then a new quiet stretch: a new alert
    total = add_readings(conn, keys["water_meter"], T + BS, T + 3 * BS, 10.0, total=total)
    add_readings(conn, keys["water_meter"], T + 3 * BS, T + timedelta(hours=15), 0.0, total=total)
    detect_once(T + 2 * BS)
    detect_once(T + timedelta(hours=14, minutes=45))
    assert open_alerts(conn) == [("low_usage", "R-1", "open")]


def test_low_usage_clears_when_water_is_used_again(conn: psycopg.Connection[Any], env: None) -> None:
    keys = add_resident(conn, "R-1")
    total = add_readings(conn, keys["water_meter"], T - timedelta(hours=20), T - timedelta(hours=14), 3.0)
    total = add_readings(conn, keys["water_meter"], T - timedelta(hours=14), T, 0.0, total=total)
    detect_once(T - BS)
    assert open_alerts(conn) == [("low_usage", "R-1", "open")]
    add_readings(conn, keys["water_meter"], T, T + 3 * BS, 10.0, total=total)
    detect_once(T + 2 * BS)
    rows = [(a["kind"], a["status"], a["outcome"]) for a in list_alerts(conn, include_resolved=True)]
    assert rows == [("low_usage", "resolved", "auto_cleared")]


def test_a_silent_meter_is_a_maintenance_alert_and_never_a_neighbour_one(
    conn: psycopg.Connection[Any], env: None
) -> None:
    keys = add_resident(conn, "R-1")
    add_readings(conn, keys["water_meter"], T - timedelta(hours=20), T - timedelta(hours=5), 3.0)
    others = add_resident(conn, "R-2")  # a second meter on the gateway still reports
    add_readings(conn, others["water_meter"], T - timedelta(hours=20), T + BS, 3.0)
    detect_once(T)
    detect_once(T + timedelta(hours=12))  # long after: still no low_usage for R-1
    assert ("meter_silent", "WA-R-1", "open") in open_alerts(conn)
    assert not [a for a in open_alerts(conn) if a[1] == "R-1"]


def test_away_suppresses_low_usage_until_the_absence_ends(conn: psycopg.Connection[Any], env: None) -> None:
    keys = add_resident(conn, "R-1", away_until=T + timedelta(days=2))
    total = add_readings(conn, keys["water_meter"], T - timedelta(hours=30), T - timedelta(hours=26), 3.0)
    add_readings(conn, keys["water_meter"], T - timedelta(hours=26), T + BS, 0.0, total=total)
    detect_once(T)
    assert open_alerts(conn) == []
    service = DetectorService(make_settings_for(conn), shard=DetectorShard())
    service.start(conn, T)
    assert service.sweep(conn, T) == []
    # staff end the absence now: monitoring starts afresh, not from the empty days away
    assert clear_away(conn, "R-1", now=T)
    conn.commit()
    assert service.sweep(conn, T + BS) == []
    conn.commit()
    assert open_alerts(conn) == []
    # and it is watched again: 13 h without water after coming back is an alert
    add_readings(conn, keys["water_meter"], T + 2 * BS, T + timedelta(hours=14), 0.0, total=total)
    changes = service.sweep(conn, T + timedelta(hours=13, minutes=45))
    conn.commit()
    assert [(c.kind, c.action) for c in changes] == [("low_usage", "raise")]


def make_settings_for(conn: psycopg.Connection[Any]) -> Settings:
    from lovekey.config import load_settings

    info = conn.info
    url = f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
    return load_settings(environ={}, database_url=url)


def test_late_and_out_of_order_rows_are_applied_once(conn: psycopg.Connection[Any]) -> None:
    keys = add_resident(conn, "R-1")
    key = keys["water_meter"]
    add_readings(conn, key, T - timedelta(hours=13), T - timedelta(hours=1), 3.0)
    service = DetectorService(make_settings_for(conn), shard=DetectorShard())
    service.start(conn, T - timedelta(hours=1))
    det = service.detector
    assert det is not None
    # an hour arrives out of order: the newest value first, then the four before it
    # the history ends at T - 1h15 with 1141 L: the next hour goes on at 3 L a bucket
    late = [(T - timedelta(hours=1) + k * BS, 1144.0 + 3.0 * k, key) for k in range(5)]
    with conn.cursor() as cur:
        cur.execute("INSERT INTO water_reading_wide (ts, total_l, device_key) VALUES (%s, %s, %s)", late[-1])
        conn.commit()
        service.sweep(conn, T + timedelta(minutes=1))
        cur.executemany(
            "INSERT INTO water_reading_wide (ts, total_l, device_key) VALUES (%s, %s, %s)", late[:-1]
        )
        conn.commit()
    service.sweep(conn, T + timedelta(minutes=2))
    service.sweep(conn, T + timedelta(minutes=3))  # the overlap returns them again: no change
    first = int((T - timedelta(hours=12)).timestamp()) // 900
    usage = det.ring.usage_matrix(first, 48)[:, 0]
    assert usage.tolist() == [3.0] * 48  # 3 L in every bucket, the rebuilt hour included


def test_a_row_that_arrived_in_the_overlaps_first_second_is_applied_once(
    conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The poll reads arrivals from the start of the second `watermark - overlap` falls in;
    a row of that very second is remembered, so the next poll does not apply it again (as a
    late reading, rebuilding its meter every sweep)."""
    keys = add_resident(conn, "R-1")
    key = keys["water_meter"]
    add_readings(conn, key, T - timedelta(hours=13), T - timedelta(hours=1), 3.0)
    settings = make_settings_for(conn)
    service = DetectorService(settings, shard=DetectorShard())
    service.start(conn, T - timedelta(hours=1))
    overlap = timedelta(seconds=settings.detect.received_overlap_s)
    arrived = T + timedelta(minutes=20)
    rows = [  # the later one sets the watermark; the first arrived exactly one overlap before
        (T - timedelta(hours=1), arrived - overlap, 1144.0, key),
        (T - timedelta(minutes=45), arrived, 1147.0, key),
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO water_reading_wide (ts, received_at, total_l, device_key) VALUES (%s, %s, %s, %s)",
            rows,
        )
    conn.commit()
    service.sweep(conn, arrived + timedelta(minutes=1))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lovekey.detectors.service"):
        service.sweep(conn, arrived + timedelta(minutes=2))
        service.sweep(conn, arrived + timedelta(minutes=3))
    assert not [r for r in caplog.records if "rebuilt" in r.getMessage()]


def test_shards_split_the_meters_between_them(conn: psycopg.Connection[Any]) -> None:
    for i in range(20):
        add_resident(conn, f"R-{i:02d}")
    settings = make_settings_for(conn)
    seen = []
    for i in range(3):
        service = DetectorService(settings, shard=DetectorShard(i, 3))
        service.start(conn, T)
        assert service.detector is not None
        seen.append(set(service.detector.registry.meter_ids))
    assert sum(len(s) for s in seen) == 20
    assert set.union(*seen) == {f"WA-R-{i:02d}" for i in range(20)}
    assert all(seen)


def test_a_smoke_event_raises_at_once_and_only_once(conn: psycopg.Connection[Any]) -> None:
    keys = add_resident(conn, "R-1", extra=("smoke",))
    settings = make_settings_for(conn)
    watcher = EventWatcher(settings)
    watcher.start(conn, NOW)
    conn.execute(
        "INSERT INTO device_event (ts, device_key, type, active, value) VALUES (%s, %s, 'smoke', true, 12)",
        (NOW, keys["smoke"]),
    )
    conn.commit()
    assert [a.kind for a in watcher.poll(conn, NOW + timedelta(seconds=1))] == ["smoke"]
    conn.commit()
    assert watcher.poll(conn, NOW + timedelta(seconds=2)) == []
    fresh = EventWatcher(settings)  # a restart looks back, finds it raised already
    fresh.start(conn, NOW + timedelta(seconds=3))
    assert fresh.poll(conn, NOW + timedelta(seconds=3)) == []
    conn.commit()
    assert open_alerts(conn) == [("smoke", "R-1", "open")]


def _press(conn: psycopg.Connection[Any], key: int, ts: datetime) -> None:
    conn.execute(
        "INSERT INTO device_event (ts, device_key, type, active) VALUES (%s, %s, 'sos', true)", (ts, key)
    )
    conn.commit()


def test_a_second_sos_press_raises_no_duplicate_after_a_restart(conn: psycopg.Connection[Any]) -> None:
    # issue 16, finding 8: a press folded into the open alert, which is then resolved, was
    # raised again by a restarted watcher (it knew only the press that opened the alert)
    keys = add_resident(conn, "R-1", extra=("sos_button",))
    settings = make_settings_for(conn)
    watcher = EventWatcher(settings)
    watcher.start(conn, NOW)
    _press(conn, keys["sos_button"], NOW)
    assert [a.kind for a in watcher.poll(conn, NOW + timedelta(seconds=1))] == ["sos"]
    conn.commit()
    _press(conn, keys["sos_button"], NOW + timedelta(seconds=30))  # the same emergency, pressed again
    assert [a.kind for a in watcher.poll(conn, NOW + timedelta(seconds=31))] == ["sos"]  # a refresh
    conn.commit()
    (first,) = list_alerts(conn)
    resolve(
        conn,
        first["id"],
        outcome="resident_ok",
        note=None,
        by="staff",
        channel="console",
        now=NOW + timedelta(seconds=40),
    )
    conn.commit()
    restarted = EventWatcher(settings)
    restarted.start(conn, NOW + timedelta(seconds=50))
    assert restarted.poll(conn, NOW + timedelta(seconds=50)) == []
    conn.commit()
    # a genuinely new press after the resolution raises a new alert, once, across restarts
    _press(conn, keys["sos_button"], NOW + timedelta(seconds=60))
    assert [a.kind for a in restarted.poll(conn, NOW + timedelta(seconds=61))] == ["sos"]
    conn.commit()
    again = EventWatcher(settings)
    again.start(conn, NOW + timedelta(seconds=70))
    assert again.poll(conn, NOW + timedelta(seconds=70)) == []
    conn.commit()
    assert open_alerts(conn, everything=True) == [("sos", "R-1", "open"), ("sos", "R-1", "resolved")]


def test_sos_presses_read_together_raise_one_alert_once_across_restarts(
    conn: psycopg.Connection[Any],
) -> None:
    # two presses first read in one poll (the watcher was down): one alert, and no press
    # of the two comes back as a new alert after a restart
    keys = add_resident(conn, "R-1", extra=("sos_button",))
    settings = make_settings_for(conn)
    _press(conn, keys["sos_button"], NOW)
    _press(conn, keys["sos_button"], NOW + timedelta(seconds=30))
    watcher = EventWatcher(settings)
    watcher.start(conn, NOW + timedelta(seconds=40))
    assert [a.kind for a in watcher.poll(conn, NOW + timedelta(seconds=40))] == ["sos"]
    conn.commit()
    (first,) = list_alerts(conn)
    resolve(
        conn,
        first["id"],
        outcome="resident_ok",
        note=None,
        by="staff",
        channel="console",
        now=NOW + timedelta(seconds=45),
    )
    conn.commit()
    restarted = EventWatcher(settings)
    restarted.start(conn, NOW + timedelta(seconds=50))
    assert restarted.poll(conn, NOW + timedelta(seconds=50)) == []
    conn.commit()
    assert open_alerts(conn, everything=True) == [("sos", "R-1", "resolved")]


def test_the_event_watcher_wakes_on_notify(conn: psycopg.Connection[Any]) -> None:
    keys = add_resident(conn, "R-1", extra=("sos_button",))
    settings = make_settings_for(conn)
    settings = settings.model_copy(
        update={"detect": settings.detect.model_copy(update={"events_poll_s": 30.0})}
    )  # the poll alone would take 30 s
    assert settings.database_url is not None
    stop = threading.Event()
    thread = threading.Thread(
        target=watch_events,
        args=(settings, settings.database_url, stop),
        kwargs={"shard": DetectorShard()},
        daemon=True,
    )
    thread.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        raised: list[tuple[str, str, str]] = []
        inserted = False
        while datetime.now(UTC) < deadline and not raised:
            if not inserted:
                stop.wait(1.0)  # let it LISTEN first
                conn.execute(
                    "INSERT INTO device_event (ts, device_key, type, active) VALUES (now(), %s, 'sos', true)",
                    (keys["sos_button"],),
                )
                conn.execute("SELECT pg_notify('lovekey_events', '')")
                conn.commit()
                inserted = True
            stop.wait(0.2)
            raised = open_alerts(conn)
        assert raised == [("sos", "R-1", "open")]
    finally:
        stop.set()
        thread.join(timeout=40)
    assert not thread.is_alive()


def test_routine_break_through_the_database_with_learned_days_saved(
    conn: psycopg.Connection[Any], env: None
) -> None:
    keys = add_resident(conn, "R-1")
    key = keys["water_meter"]
    # 20 days of a regular life: 6 L on the hour from 07:00 to 21:00 local (UTC+8)
    local = T.astimezone(datetime.now().astimezone().tzinfo)
    day0 = (T - timedelta(days=21)).replace(hour=16, minute=0)  # 00:00 at UTC+8
    rows, total, t = [], 1000.0, day0
    stop_at = day0 + timedelta(days=21, hours=12)  # the last day: nothing after noon
    while t < stop_at + timedelta(hours=8):
        hour = (t + timedelta(hours=8)).hour
        if t < stop_at and 7 <= hour <= 21 and t.minute == 0:
            total += 6.0
        rows.append((t + BS, t + BS + timedelta(seconds=5), total, key))
        t += BS
    with (
        conn.cursor() as cur,
        cur.copy("COPY water_reading_wide (ts, received_at, total_l, device_key) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
    conn.commit()
    detect_once(stop_at + timedelta(hours=4))
    kinds = [a[0] for a in open_alerts(conn)]
    assert kinds == ["routine_break"], local
    saved = conn.execute("SELECT count(*) FROM detector_day WHERE device_key = %s", (key,)).fetchone()
    assert saved is not None
    assert saved[0] >= 14


def test_a_backlog_of_old_flow_from_a_meter_back_after_days_does_not_flap(
    conn: psycopg.Connection[Any],
) -> None:
    """A gateway back from an outage delivers the readings its meter took before it fell
    silent days ago (ts days old, received now). Flow that ended days ago is no running tap
    now, and sweeps that bring no new data must not change what the one before decided."""
    keys = add_resident(conn, "R-1")
    key = keys["water_meter"]
    silent_from = NOW.replace(minute=0) - timedelta(days=3)
    # dry hours long ago, received at the time; then 4 h at 5 L/min held back by the gateway
    total = add_readings(conn, key, silent_from - timedelta(hours=10), silent_from - timedelta(hours=4), 0.0)
    conn.execute("UPDATE device SET last_seen = %s WHERE key = %s", (silent_from - timedelta(hours=4), key))
    conn.commit()
    service = DetectorService(make_settings_for(conn), shard=DetectorShard())
    now = datetime.now(UTC)
    service.start(conn, now)
    conn.commit()
    service.sweep(conn, now)
    conn.commit()
    backlog = []
    t = silent_from - timedelta(hours=4)
    while t <= silent_from:
        backlog.append((t, total, key))
        total += 75.0
        t += timedelta(minutes=5)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO water_reading_wide (ts, total_l, device_key) VALUES (%s, %s, %s)", backlog
        )
    conn.execute("UPDATE device SET last_seen = %s WHERE key = %s", (silent_from, key))
    conn.commit()
    changes = []
    for i in range(1, 7):
        changes += [(c.action, c.kind) for c in service.sweep(conn, now + timedelta(seconds=10 * i))]
        conn.commit()
    kinds = [kind for _, kind in changes]
    assert all(kinds.count(kind) <= 1 for kind in set(kinds)), changes
    assert ("raise", "running_tap") not in changes
    assert ("raise", "leak") not in changes


def test_the_detector_daemon_sweeps_watches_events_and_ends_on_stop(conn: psycopg.Connection[Any]) -> None:
    """`run_detector` as `lovekey detect` and `lovekey run` host it: the sweep on its schedule,
    the event watcher beside it, and both gone soon after the stop event."""
    from lovekey.detectors.daemon import run_detector

    keys = add_resident(conn, "R-1", extra=("sos_button",))
    settings = make_settings_for(conn)
    assert settings.database_url is not None
    conn.execute(
        "INSERT INTO device_event (ts, device_key, type, active) VALUES (now(), %s, 'sos', true)",
        (keys["sos_button"],),
    )
    conn.commit()
    stop = threading.Event()
    thread = threading.Thread(target=run_detector, args=(settings, settings.database_url, stop), daemon=True)
    thread.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        raised: list[tuple[str, str, str]] = []
        while datetime.now(UTC) < deadline and not raised:
            stop.wait(0.2)
            raised = open_alerts(conn)
        assert raised == [("sos", "R-1", "open")]
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive()
    # no detector connection left behind (a closed one's backend takes a moment to exit)
    others: list[tuple[Any, ...]] = []
    for _ in range(50):
        others = conn.execute(
            "SELECT application_name, state, query FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        conn.commit()
        if not others:
            break
        stop.wait(0.1)
    assert others == []


LOCAL = timedelta(hours=8)  # the settings' zone, Asia/Shanghai (no DST)


def field_rule_flags_at(series: list[tuple[datetime, float]], *, min_l: float = 10.0) -> datetime:
    """The plain field rule, written out for the test: the first bucket end at which the
    litres of the last 12 h (48 buckets of 15 min) are under `min_l`. `series`: (bucket
    start, litres), one per bucket, in order."""
    litres = [v for _, v in series]
    for i in range(48, len(series) + 1):
        if sum(litres[i - 48 : i]) < min_l:
            return series[i - 1][0] + BS
    raise AssertionError("the field rule never fires on this series")


def test_the_floor_flags_an_evening_last_use_a_dry_night_and_a_dry_morning_with_the_field_rule(
    conn: psycopg.Connection[Any], env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17's pattern: a resident whose ordinary days never trip the field rule (water on
    the hour from 07:00 to 21:00 and at 02:00) uses 2.2 L at 19:00 and then nothing through
    the night and the morning. The learned rules wait for 13 h of dryness and the resident's
    own longest dry stretch; the floor flags them when the field rule would, asking the
    resident first (tier check_in; R-2, with no phone of their own, gets the neighbour at
    once), through `lovekey detect --once` fresh processes that read the learned days back
    from detector_day. routine_break is off here: in the issue's case
    the district's dry evenings held it back; alone in this district, it would see the
    resident's regular nights and fire itself."""
    monkeypatch.setenv("LOVEKEY_DETECT__ROUTINE_ENABLED", "false")
    keys = add_resident(conn, "R-1", phone="+8613800000001")  # a phone: they can be asked
    key = keys["water_meter"]
    # the same days for a resident with no phone of their own: nobody can be asked, so the
    # floor wakes the neighbour at once (it is never skipped)
    other = add_resident(conn, "R-2", gateway="GW-2")["water_meter"]
    # the incident evening: the latest local 19:00 at least 16 h before T
    evening = (T + LOCAL - timedelta(hours=16)).replace(hour=19, minute=0) - LOCAL
    if evening > T - timedelta(hours=16):
        evening -= timedelta(days=1)
    start = evening.replace(minute=0) - timedelta(days=16, hours=19)  # 16 days before, local 00:00
    series: list[tuple[datetime, float]] = []
    t = start
    while t < T:
        hour = (t + LOCAL).hour
        used = 0.0
        if t.minute == 0 and t < evening and (7 <= hour <= 21 or hour == 2):
            used = 6.0
        elif t == evening:
            used = 2.2  # the last use: then a dry night and a dry morning
        series.append((t, used))
        t += BS
    rows, total = [], 1000.0
    for bucket, used in series:
        total += used
        rows += [(bucket + BS, bucket + BS + timedelta(seconds=5), total, k) for k in (key, other)]
    with (
        conn.cursor() as cur,
        cur.copy("COPY water_reading_wide (ts, received_at, total_l, device_key) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
    conn.commit()
    flags_at = field_rule_flags_at(series)
    assert evening + timedelta(hours=9) < flags_at <= T - BS  # within the night, before T

    # without the floor the learned rules are still waiting when the field rule fires
    monkeypatch.setenv("LOVEKEY_DETECT__FLOOR_ENABLED", "false")
    detect_once(flags_at)
    assert open_alerts(conn) == []
    monkeypatch.delenv("LOVEKEY_DETECT__FLOOR_ENABLED")
    # with it: nothing a quarter hour before the field rule, the check-in when it fires
    detect_once(flags_at - BS)
    assert open_alerts(conn) == []
    detect_once(flags_at)
    tiers = conn.execute("SELECT subject, kind, tier FROM alert ORDER BY subject").fetchall()
    assert tiers == [("R-1", "low_usage", "check_in"), ("R-2", "low_usage", "neighbour")]
    alert = list_alerts(conn)[0]
    assert alert["since"] == (evening + BS).isoformat()
    assert alert["details"]["used_l"] < 10
    floors = conn.execute(
        "SELECT count(*), min(floor_min_l) FROM detector_day WHERE device_key = %s AND floor_min_l IS NOT NULL",
        (key,),
    ).fetchone()
    assert floors is not None
    assert floors[0] >= 7
    assert floors[1] >= 10  # its ordinary days never went under the field rule's 10 L


def test_a_replay_sees_a_meter_go_silent_though_its_readings_were_received_after_the_replay_time(
    conn: psycopg.Connection[Any], env: None
) -> None:
    """`detect --once --at T` over data loaded later (an import, a replayed trace): every
    reading was received after T, so by arrival every meter looks heard at T. A replay takes
    a reading received after T to have arrived when it was taken: the meter that stopped 8 h
    before T is silent at T, and the one that kept reporting is not (issue 14, item 6)."""
    received = NOW + timedelta(minutes=5)  # both loaded after T
    rows = []
    stopped, going = add_resident(conn, "R-1"), add_resident(conn, "R-2")
    t, total = T - timedelta(hours=20), 1000.0
    while t <= T:
        total += 2.0
        if t <= T - timedelta(hours=8):
            rows.append((t, received, total, stopped["water_meter"]))
        rows.append((t, received, total, going["water_meter"]))
        t += BS
    with (
        conn.cursor() as cur,
        cur.copy("COPY water_reading_wide (ts, received_at, total_l, device_key) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
    conn.execute("UPDATE device SET last_seen = %s WHERE kind = 'water_meter'", (received,))
    conn.commit()
    detect_once(T)
    assert open_alerts(conn) == [("meter_silent", "WA-R-1", "open")]
    [alert] = list_alerts(conn)
    assert alert["since"] == (T - timedelta(hours=8)).isoformat()


def test_the_runner_reads_door_passages_and_fine_answers_as_the_resident_up_and_about(
    conn: psycopg.Connection[Any],
) -> None:
    """What the sweeps read beside water: the newest passage at a door reminder, the newest
    "fine" to a check-in, and per part of the day the longest dry stretch answered "fine";
    and who cannot be asked (no phone of their own, or a phone found unreachable)."""
    door = add_resident(conn, "R-1", extra=("door_sensor",), phone="+8613800000001")["door_sensor"]
    add_resident(conn, "R-2", phone="+8613800000002")
    add_resident(conn, "R-3")  # no phone
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO device_event (ts, received_at, device_key, type, active) VALUES (%s, %s, %s, %s, true)",
            [
                (T - timedelta(hours=3), T, door, "passage"),
                (T - timedelta(hours=1), T, door, "left"),
                (T + timedelta(hours=1), T, door, "returned"),  # after the sweep's time: not yet
            ],
        )
    answers = [
        ("R-1", T - timedelta(hours=5), "fine", 300, "morning"),
        ("R-1", T - timedelta(hours=2), "fine", 200, "morning"),
        ("R-2", T - timedelta(hours=4), "unreachable", 400, "afternoon"),
    ]
    for rid, at, answer, minutes, part in answers:
        alert_id = conn.execute(
            "INSERT INTO alert (kind, subject, resident_id, since, opened_at, last_triggered_at,"
            " escalation_due_at, tier) VALUES ('routine_break', %s, %s, %s, %s, %s, %s, 'check_in')"
            " RETURNING id",
            (f"{rid}-{minutes}", rid, at, at, at, at),
        ).fetchone()
        assert alert_id is not None
        conn.execute(
            "INSERT INTO check_in_answer (alert_id, resident_id, kind, asked_at, answered_at, answer,"
            " dry_minutes, part_of_day) VALUES (%s, %s, 'routine_break', %s, %s, %s, %s, %s)",
            (alert_id[0], rid, at, at, answer, minutes, part),
        )
    conn.commit()
    settings = make_settings_for(conn)  # the second longest stretch answered "fine" at:
    settings = settings.model_copy(
        update={"detect": settings.detect.model_copy(update={"check_in_fine_nth": 2})}
    )
    service = DetectorService(settings)
    service.start(conn, T)
    det = service.detector
    assert det is not None
    assert det.registry.askable is not None
    assert dict(zip(det.registry.resident_ids, det.registry.askable.tolist(), strict=True)) == {
        "R-1": True,
        "R-2": False,  # their phone was unreachable last time
        "R-3": False,  # no phone
    }
    assert det.registry.door is not None  # the faster check-in tier's "has a door reminder"
    assert dict(zip(det.registry.resident_ids, det.registry.door.tolist(), strict=True)) == {
        "R-1": True,
        "R-2": False,
        "R-3": False,
    }
    presence = service._presence(conn, T)
    assert presence.active_at_s is not None
    assert presence.answered_fine_s is not None
    assert presence.fine_dry_s is not None
    assert presence.active_at_s.tolist()[0] == int((T - timedelta(hours=1)).timestamp())
    assert presence.active_at_s.tolist()[1:] == [NEVER, NEVER]
    assert presence.answered_fine_s.tolist()[0] == int((T - timedelta(hours=2)).timestamp())
    assert presence.answered_fine_s.tolist()[1] == NEVER  # unreachable is not "fine"
    # `check_in_fine_nth` = 2: the morning's second longest, a stretch answered "fine" twice
    assert presence.fine_dry_s[0].tolist() == [0, 200 * 60, 0, 0]
    assert detect_store.fine_dry_stretches(conn, T - timedelta(days=28), 1) == [("R-1", "morning", 300)]
    assert detect_store.fine_dry_stretches(conn, T - timedelta(days=28), 3) == []
    assert detect_store.fine_dry_stretches(conn, T - timedelta(hours=3), 1) == [("R-1", "morning", 200)]


def test_the_runner_knows_a_door_reminder_works_from_a_passage_older_than_its_ring(
    conn: psycopg.Connection[Any],
) -> None:
    """A reminder counts as working while it sensed someone within `door_alive_h` (72 h),
    longer than the ring of readings (56 h): the sweeps read passages that far back."""
    doors = {rid: add_resident(conn, rid, extra=("door_sensor",))["door_sensor"] for rid in ("R-1", "R-2")}
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO device_event (ts, received_at, device_key, type, active) VALUES (%s, %s, %s, 'passage', true)",
            [
                (T - timedelta(hours=60), T - timedelta(hours=60), doors["R-1"]),
                (T - timedelta(hours=80), T - timedelta(hours=80), doors["R-2"]),  # dead since
            ],
        )
    conn.commit()
    settings = make_settings_for(conn)
    assert settings.detect.ring_hours < 60 < settings.detect.door_alive_h < 80
    service = DetectorService(settings)
    service.start(conn, T)
    presence = service._presence(conn, T)
    assert presence.active_at_s is not None
    assert presence.active_at_s.tolist() == [int((T - timedelta(hours=60)).timestamp()), NEVER]


def test_the_runner_reads_a_person_finding_the_resident_well_as_a_fine(
    conn: psycopg.Connection[Any],
) -> None:
    """`check_in_found_fine_nth`: a check-in left unanswered whose alert a person resolved
    `resident_ok` or `away` counts as a "fine" in that part of the day, at the stretch from
    the alert's start to when it was resolved (at most `check_in_found_fine_within_h` after
    the ask). Any other outcome, an answered check-in, or a resolution before the window
    counts for nothing; the window is of when the stage ended, as for answers."""
    add_resident(conn, "R-1", phone="+8613800000001")
    add_resident(conn, "R-2", phone="+8613800000002")
    hour = timedelta(hours=1)
    # resident, asked, answer, dry minutes, part of day, outcome, resolved after the ask
    rows = [
        ("R-1", T - 30 * hour, "none", 290, "evening", "resident_ok", timedelta(minutes=50)),
        ("R-1", T - 20 * hour, "none", 300, "evening", "away", 5 * hour),  # found late: 90 min
        ("R-1", T - 10 * hour, "none", 500, "evening", "needed_help", hour),  # not well
        ("R-1", T - 9 * hour, "none", 600, "evening", "false_data", hour),  # not about them
        ("R-1", T - 8 * hour, "fine", 250, "afternoon", "resident_ok", hour),  # answered
        ("R-2", T - 40 * 24 * hour, "none", 700, "morning", "resident_ok", hour),  # too old
        ("R-2", T - 6 * hour, "none", 280, "afternoon", None, None),  # not resolved yet
    ]
    for n, (rid, at, answer, minutes, part, outcome, after) in enumerate(rows):
        resolved = None if after is None else at + after
        alert_id = conn.execute(
            "INSERT INTO alert (kind, subject, resident_id, since, opened_at, last_triggered_at,"
            " tier, status, resolved_at, outcome) VALUES ('routine_break', %s, %s, %s, %s, %s,"
            " 'check_in', %s, %s, %s) RETURNING id",
            (
                f"{rid}-{n}",
                rid,
                at - timedelta(minutes=minutes),
                at,
                at,
                "open" if outcome is None else "resolved",
                resolved,
                outcome,
            ),
        ).fetchone()
        assert alert_id is not None
        conn.execute(
            "INSERT INTO check_in_answer (alert_id, resident_id, kind, asked_at, answered_at, answer,"
            " dry_minutes, part_of_day) VALUES (%s, %s, 'routine_break', %s, %s, %s, %s, %s)",
            (alert_id[0], rid, at, at + timedelta(minutes=30), answer, minutes, part),
        )
    conn.commit()
    month = T - timedelta(days=28)
    within = timedelta(hours=1.5)
    found = detect_store.found_well_stretches(conn, month, 1, within)
    assert found == [("R-1", "evening", 300 + 90)]  # the longer of 290 + 50 and 300 + 90
    assert detect_store.found_well_stretches(conn, month, 2, within) == [("R-1", "evening", 290 + 50)]
    assert detect_store.found_well_stretches(conn, month, 3, within) == []
    assert detect_store.found_well_stretches(conn, T - 25 * hour, 1, within) == [("R-1", "evening", 390)]
    assert detect_store.found_well_stretches(conn, T, 1, within) == []

    settings = make_settings_for(conn)
    service = DetectorService(settings)
    service.start(conn, T)
    presence = service._presence(conn, T)
    assert presence.fine_dry_s is not None
    # the afternoon's "fine" (fourth longest needed, only one: none), the evening found well
    assert presence.fine_dry_s.tolist() == [[0, 0, 0, 390 * 60], [0, 0, 0, 0]]
    off = settings.model_copy(
        update={"detect": settings.detect.model_copy(update={"check_in_found_fine_nth": 0})}
    )
    service = DetectorService(off)
    service.start(conn, T)
    presence = service._presence(conn, T)
    assert presence.fine_dry_s is not None
    assert presence.fine_dry_s.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0]]


def test_the_runner_reads_who_was_found_needing_help_from_the_outcomes_people_recorded(
    conn: psycopg.Connection[Any],
) -> None:
    """`Presence.found_s`: per resident, the start of their newest alert of the last
    `routine_history_days` that a person resolved "needed help" or "hospital"; a false alarm's
    outcome, an unresolved alert or an older one is not read."""
    for rid in ("R-1", "R-2", "R-3", "R-4"):
        add_resident(conn, rid)
    alerts = [
        ("R-1", T - timedelta(days=9), "resolved", "hospital"),
        ("R-1", T - timedelta(hours=30), "resolved", "needed_help"),
        ("R-2", T - timedelta(hours=20), "resolved", "resident_ok"),
        ("R-3", T - timedelta(days=29), "resolved", "hospital"),  # older than the learning
        ("R-4", T - timedelta(hours=5), "open", None),
    ]
    for n, (rid, since, status, outcome) in enumerate(alerts):
        conn.execute(
            "INSERT INTO alert (kind, subject, resident_id, since, opened_at, last_triggered_at,"
            " escalation_due_at, status, resolved_at, outcome)"
            " VALUES ('low_usage', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (f"{rid}-{n}", rid, since, since, since, since, status, None if outcome is None else T, outcome),
        )
    conn.commit()
    service = DetectorService(make_settings_for(conn))
    service.start(conn, T)
    det = service.detector
    assert det is not None
    presence = service._presence(conn, T)
    assert presence.found_s is not None
    found = dict(zip(det.registry.resident_ids, presence.found_s.tolist(), strict=True))
    assert found == {
        "R-1": int((T - timedelta(hours=30)).timestamp()),
        "R-2": NEVER,
        "R-3": NEVER,
        "R-4": NEVER,
    }
