"""`lovekey demo`: the whole system on a simulated district, with nothing configured.

Starts the embedded PostgreSQL and a local broker, imports a simulated district, writes
14 days of its water history straight into the database (so the detectors have routines to
learn from), then runs ingest, detectors, the alert worker and the console while the
simulator publishes the district's live traffic over MQTT in real time. A few incidents are
placed so that something happens at once: a resident who has not used water for 13 hours,
another since this morning, a tap left running, an SOS press and a smoke alarm within the
first minutes, a silent meter and a planned absence (which must NOT reach a neighbour).
Two residents are asked first (the check-in stage): one answers "1, fine" a few seconds after
the text arrives (the alert closes, nobody is woken), the other, on the floor since 90 minutes
ago, never answers (the love-key neighbour is called when the stage ends).

Escalation waits are scaled down (10 minutes become 30 seconds) so a visitor sees an alert
climb from the love-key holder to staff within two minutes. Text messages go to a local
stand-in SMS gateway that prints each one here.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import logging
import shutil
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg

from lovekey.config import Settings
from lovekey.redact import redact_phone
from lovekey.run import open_services, run_pipeline
from lovekey.signals import stop_on_signals

log = logging.getLogger(__name__)

DEMO_USER = "demo"
# a demo login, printed on the terminal; it must pass the password policy (no user name in it)
DEMO_PASSWORD = "lovekey-walkthrough-2026"  # noqa: S105
HISTORY_DAYS = 14
LIVE_HOURS = 12
# escalation waits in the demo are a twentieth of the real ones: 10 minutes become 30 s
WAIT_SCALE = 1 / 20


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="the whole system on a simulated district, nothing to set up")
    p.add_argument("--residents", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--port", type=int, help="console port (default: web.port if free; 0: any free port)")
    p.add_argument(
        "--exit-after",
        type=float,
        metavar="SECONDS",
        help="stop after this long and exit 0 only if an alert escalated (for CI)",
    )
    p.add_argument("--keep", action="store_true", help="keep the previous demo's database")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.ingest.broker import free_port

    demo_dir = settings.data_dir / "demo"
    if not args.keep:
        shutil.rmtree(demo_dir, ignore_errors=True)
    demo_dir.mkdir(parents=True, exist_ok=True)
    if args.port is None:
        port = settings.web.port if _port_free(settings.web.port) else free_port()
    else:
        port = args.port or free_port()  # 0: any free port
    console_url = f"http://127.0.0.1:{port}"

    with ExitStack() as stack:
        sink = stack.enter_context(sms_sink())
        settings = settings.with_overrides(
            data_dir=str(demo_dir),
            web={"host": "127.0.0.1", "port": port, "insecure_cookies": True},  # plain http
            detect={"sweep_interval_s": 10},
            alerts={
                "public_base_url": console_url,
                "chains_file": str(_scaled_chains(demo_dir / "chains.toml")),
                "sms_url": f"json://127.0.0.1:{sink}/sms?:to={{phone}}",
                "processes": 1,
                "escalation_interval_s": 2.0,
                "poll_interval_s": 1.0,
                "retry_base_s": 2.0,
                # a visitor runs the demo at any hour: no quiet hours for the check-in
                "check_in_quiet_start": "00:00",
                "check_in_quiet_end": "00:00",
            },
        )
        # closed in reverse: the database and the broker outlive everything started below
        db_url, mqtt_url = open_services(stack, settings)
        # Stopping goes in order: a signal (or --exit-after) first stops the live publisher,
        # which then stops the pipeline (ingest, detectors, worker, console); the broker and
        # the database close last, with the ExitStack. Stopping all at once let the publisher
        # outlive the broker and retry into a traceback.
        requested = threading.Event()
        stop = threading.Event()
        stack.enter_context(stop_on_signals(requested))

        now = datetime.now(UTC).replace(microsecond=0)
        started = time.monotonic()
        world, asked = _build_world(args.residents, args.seed, now)
        with psycopg.connect(db_url, autocommit=True) as conn:
            _import_registry(conn, world, settings)
            rows = _write_history(conn, world, now)
            _mark_absences(conn, world, now, settings)
            _create_demo_user(conn, now)
            check_ins = _check_in_residents(conn, asked)
        print(
            f"\nLoveKey demo: {args.residents} residents, {HISTORY_DAYS} days of history"
            f" ({rows:,} meter readings) ready in {time.monotonic() - started:.0f} s.\n"
            f"  console   {console_url}   login: {DEMO_USER} / {DEMO_PASSWORD}\n"
            f"  broker    {_public(mqtt_url)}   topics: {settings.mqtt.topic_prefix}/#\n"
            "  Text messages the alerts send are printed below as the stand-in SMS gateway"
            " receives them.\n"
            f"  check-in  {check_ins}\n"
            "  Ctrl+C stops.\n",
            flush=True,
        )

        async def live(astop: asyncio.Event) -> None:
            await asyncio.to_thread(_publish_live, world, settings, mqtt_url, now, requested, stop)
            if requested.is_set():
                log.info("demo: live publisher stopped; stopping the pipeline")
                stop.set()

        async def open_check_ins(astop: asyncio.Event) -> None:
            await asyncio.to_thread(_check_in_scene, db_url, asked, settings, stop)
            await astop.wait()

        async def deadline(astop: asyncio.Event) -> None:
            if args.exit_after is None:
                await astop.wait()
                return
            try:
                await asyncio.wait_for(astop.wait(), args.exit_after)
            except TimeoutError:
                log.info("demo: --exit-after %.0f s reached", args.exit_after)
                requested.set()  # the publisher first, as for a signal
                await astop.wait()

        asyncio.run(
            run_pipeline(
                settings,
                db_url,
                mqtt_url,
                stop=stop,
                extra={"live": live, "check_ins": open_check_ins, "deadline": deadline},
            )
        )
        with psycopg.connect(db_url) as conn:
            escalated = _summary(conn)
    if args.exit_after is not None:
        return 0 if escalated else 1
    return 0


# -- the simulated district ------------------------------------------------------------------


def _build_world(residents: int, seed: int, now: datetime) -> tuple[Any, dict[str, str]]:
    """The district, and the two residents the demo asks first ('fine', 'silent')."""
    from lovekey.simulator import Scenario, World

    start = now - timedelta(days=HISTORY_DAYS)
    days = HISTORY_DAYS + LIVE_HOURS / 24
    scenario = Scenario.load(None)
    probe = World.build(scenario, residents=residents, seed=seed, start=start, days=days)
    owners: dict[str, list[int]] = {}
    rows = probe.registry_rows()
    index = {rid: i for i, rid in enumerate(dict.fromkeys(r["resident_id"] for r in rows))}
    for row in rows:
        owners.setdefault(row["kind"], []).append(index[row["resident_id"]])
        if row["kind"] == "water_meter" and row.get("report_interval_s") == "900":
            # a meter that reports every 15 minutes is overdue soon after it falls silent
            owners.setdefault("quarter_hour_meter", []).append(index[row["resident_id"]])

    for row in rows:
        if row["kind"] == "water_meter" and row.get("resident_phone"):
            # a resident with a phone of their own can be asked first (the check-in)
            owners.setdefault("own_phone", []).append(index[row["resident_id"]])

    def first(kind: str, taken: set[int]) -> int:
        for i in owners.get(kind, []):
            if i not in taken:
                taken.add(i)
                return i
        raise RuntimeError(f"no simulated resident has a {kind} device")

    taken: set[int] = set()
    now_h = HISTORY_DAYS * 24.0
    silent = first("own_phone", taken)
    fixed = [
        {"kind": "no_use", "resident": first("water_meter", taken), "start_h": now_h - 13.5, "open": True},
        {"kind": "no_use", "resident": first("water_meter", taken), "start_h": now_h - 5, "open": True},
        # the check-in: a resident on the floor for 90 minutes, who will not answer
        {"kind": "no_use", "resident": silent, "start_h": now_h - 1.5, "open": True},
        {
            "kind": "running_tap",
            "resident": first("water_meter", taken),
            "start_h": now_h - 2.5,
            "duration_h": 4.0,
            "flow_lpm": 5.0,
        },
        {
            "kind": "meter_silent",
            "resident": first("quarter_hour_meter", taken),
            "start_h": now_h - 9,
            "open": True,
        },
        {
            "kind": "planned_absence",
            "resident": first("away_button", taken),
            "start_h": now_h - 30,
            "duration_h": 72.0,
        },
        # the simulator starts incidents on the minute: these land 1-2 minutes from now
        {"kind": "sos", "resident": first("sos_button", taken), "start_h": now_h + 100 / 3600},
        {
            "kind": "smoke",
            "resident": first("smoke", taken),
            "start_h": now_h + 160 / 3600,
            "duration_h": 0.1,
        },
    ]
    # and one who is up and about, and will answer "fine"
    fine = first("own_phone", taken)
    scenario = scenario.with_overrides({"incidents": {"fixed": fixed}})
    world = World.build(scenario, residents=residents, seed=seed, start=start, days=days)
    ids = list(index)
    return world, {"fine": ids[fine], "silent": ids[silent]}


def _import_registry(conn: psycopg.Connection[Any], world: Any, settings: Settings) -> None:
    from lovekey.devices import apply_registry, parse_registry

    rows = world.registry_rows()
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    registry = parse_registry(
        out.getvalue(),
        name="demo-district.csv",
        default_country_code=settings.registry.default_country_code,
    )
    report = apply_registry(conn, registry)
    log.info("demo registry: %s", report.summary())


def _write_history(conn: psycopg.Connection[Any], world: Any, now: datetime) -> int:
    """The district's meter readings up to now, straight into the database (fast)."""
    readings = world.water_readings(world.start, now)
    keys = dict(conn.execute("SELECT id, key FROM device").fetchall())
    key_of = [keys[d] for d in readings.device_ids]
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE demo_history (device_key integer, ts bigint, total_l float8) ON COMMIT DROP"
        )
        with conn.cursor().copy("COPY demo_history (device_key, ts, total_l) FROM STDIN") as copy:
            for i, ts, total in zip(
                readings.device_index.tolist(),
                readings.ts.tolist(),
                readings.total_l.tolist(),
                strict=True,
            ):
                copy.write_row((key_of[i], ts, total))
        # they arrived back then, not now: detectors judge silence by arrival
        stored = conn.execute(
            "INSERT INTO water_reading (device_key, ts, received_at, total_l)"
            " SELECT device_key, to_timestamp(ts), to_timestamp(ts), total_l FROM demo_history"
            " ON CONFLICT DO NOTHING"
        ).rowcount
        conn.execute(
            "UPDATE device AS d SET last_seen = h.last FROM"
            " (SELECT device_key, to_timestamp(max(ts)) AS last FROM demo_history GROUP BY 1) AS h"
            " WHERE d.key = h.device_key"
        )
        # device faults go to maintenance staff, never to neighbours: give the district some
        conn.execute(
            "INSERT INTO community_contact (community_id, role, name, phone)"
            " VALUES (NULL, 'maintenance', '维修班 Maintenance desk', '+8613900009999')"
        )
        # sensors and buttons were heard from recently; gateways are up
        conn.execute("UPDATE device SET last_seen = %s WHERE kind <> 'water_meter'", (now,))
        conn.execute("UPDATE gateway SET online = true, status_changed_at = %s, last_seen = %s", (now, now))
    return int(stored)


def _mark_absences(conn: psycopg.Connection[Any], world: Any, now: datetime, settings: Settings) -> None:
    """Absences under way: the away button was pressed when they began.

    Through `alerts.absence.set_away`, the one writer of a resident's away state, so the
    demo's residents are away exactly as a real press would leave them.
    """
    from lovekey.alerts.absence import set_away
    from lovekey.alerts.chains import ChainBook
    from lovekey.vocabulary import DeviceKind

    chains = ChainBook.load(settings.alerts.chains_file)
    for incident in world.truth():
        if (
            incident.kind == "planned_absence"
            and incident.start <= now
            and (incident.end is None or incident.end > now)
        ):
            set_away(
                conn,
                incident.resident_id,
                until=incident.end or now + timedelta(days=7),
                # the reason the ingester writes for a press of the away button
                reason=DeviceKind.AWAY_BUTTON,
                now=now,
                chains=chains,
            )


def _check_in_residents(conn: psycopg.Connection[Any], who: dict[str, str]) -> str:
    """A line for the banner: who is asked first, and how each of them will answer."""
    ids = [who["fine"], who["silent"]]
    names = dict(conn.execute("SELECT id, name FROM resident WHERE id = ANY(%s)", (ids,)).fetchall())
    return (
        f"{names[who['fine']]} is asked and answers 1 (fine): nobody is woken;"
        f" {names[who['silent']]} is asked and never answers: the neighbour is called"
    )


def _check_in_scene(db_url: str, who: dict[str, str], settings: Settings, stop: threading.Event) -> None:
    """Two check-ins, as the detectors' sensitive tier raises them, once the detectors have
    swept (so a visitor sees both stories within two minutes, whatever the detectors' own
    timing): the resident who is fine answers "1" a few seconds after the question reaches
    their phone; the one on the floor never answers. Opened after the detectors' first sweep,
    they are the demo's own: the detectors clear only the alerts they know of, and lift these
    to the neighbour tier only if their own neighbour tier fires for these residents.

    The stand-in resident's reply goes through `alerts.inbound.acknowledge_by_sms`, the code
    behind the inbound-SMS webhook (and behind a key pressed in a call), whatever stand-in
    gateway carries the question."""
    from lovekey.alerts.store import AlertCandidate, raise_alerts
    from lovekey.vocabulary import AlertKind, AlertTier

    with psycopg.connect(db_url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            if conn.execute("SELECT 1 FROM alert_history WHERE actor = 'detector' LIMIT 1").fetchone():
                break
            stop.wait(1.0)
        now = datetime.now(UTC)
        candidates = [
            AlertCandidate(
                kind=AlertKind.LOW_USAGE,
                subject=resident_id,
                resident_id=resident_id,
                device_id=None,
                gateway_id=None,
                since=now - timedelta(minutes=90),
                details={"demo": "a check-in, as the detectors' sensitive tier raises it"},
                tier=AlertTier.CHECK_IN,
            )
            for resident_id in (who["fine"], who["silent"])
        ]
        with conn.transaction():
            raise_alerts(conn, candidates, now)
        log.info("demo: two check-ins opened")
        _answer_fine(conn, who["fine"], settings, stop)


def _answer_fine(
    conn: psycopg.Connection[Any], resident_id: str, settings: Settings, stop: threading.Event
) -> None:
    """The stand-in resident who is fine: once the question reached their phone, reply "1"."""
    from lovekey.alerts.inbound import acknowledge_by_sms

    deadline = time.monotonic() + 120
    while not stop.is_set() and time.monotonic() < deadline:
        asked = conn.execute(
            """
            SELECT o.phone FROM alert_outbox o JOIN alert a ON a.id = o.alert_id
            WHERE a.subject = %s AND o.role = 'resident' AND o.state = 'sent'
            LIMIT 1
            """,
            (resident_id,),
        ).fetchone()
        if asked is not None:
            break
        stop.wait(1.0)
    else:
        return
    if stop.wait(3.0):  # reading the text, picking up the phone
        return
    reply = acknowledge_by_sms(
        conn,
        asked[0],
        "1",
        datetime.now(UTC),
        ttl_s=settings.alerts.token_ttl_s,
        default_country_code=settings.registry.default_country_code,
    )
    with _PRINT_LOCK:
        sys.stdout.write(f"  SMS ← {redact_phone(asked[0])}: 1   ({reply.reason})\n")
        sys.stdout.flush()


def _create_demo_user(conn: psycopg.Connection[Any], now: datetime) -> None:
    from lovekey.web.users import add_user

    with conn.transaction():
        exists = conn.execute("SELECT 1 FROM staff_user WHERE username = %s", (DEMO_USER,)).fetchone()
        if not exists:
            add_user(
                conn,
                DEMO_USER,
                role="admin",
                password=DEMO_PASSWORD,
                display_name="Demo administrator",
                now=now,
            )


def _publish_live(
    world: Any,
    settings: Settings,
    mqtt_url: str,
    now: datetime,
    requested: threading.Event,
    pipeline_stop: threading.Event,
) -> None:
    """Publish the district's traffic from `now` on, in real time, until a stop is
    `requested` or the pipeline stops (a part failed)."""

    def stopped() -> bool:
        return requested.is_set() or pipeline_stop.is_set()

    from lovekey.simulator.publish import BrokerPublisher

    prefix = settings.mqtt.topic_prefix.rstrip("/") + "/"
    origin_sim = now.timestamp()
    origin_wall = time.time()
    with BrokerPublisher(mqtt_url, client_id=None, max_inflight=1000) as publisher:
        for batch in world.message_batches(now, world.end):
            for topic, payload, at, retain in zip(
                batch.topics, batch.payloads, batch.publish_ts, batch.retain, strict=True
            ):
                due = origin_wall + (at - origin_sim)
                while (delay := due - time.time()) > 0 and not stopped():
                    publisher.wait_until(time.monotonic() + min(delay, 0.5))  # serves PUBACKs
                if stopped():
                    return
                # one lane per gateway keeps each gateway's messages in order
                lane = publisher.lane_for(topic.split("/", 1)[0])
                publisher.publish(prefix + topic, payload, retain=retain, lane=lane)


def _summary(conn: psycopg.Connection[Any]) -> bool:
    rows = conn.execute("SELECT kind, status, count(*) FROM alert GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
    escalated = conn.execute(
        "SELECT count(DISTINCT alert_id) FROM alert_history WHERE event = 'escalated'"
    ).fetchone()
    sent = conn.execute("SELECT count(*) FROM alert_history WHERE event = 'notified'").fetchone()
    print("\nDemo summary")
    for kind, status, count in rows:
        print(f"  {kind:<16} {status:<13} {count}")
    n_escalated = escalated[0] if escalated else 0
    print(f"  alerts escalated: {n_escalated}; notification events: {sent[0] if sent else 0}")
    for name, answer, outcome, stage in conn.execute(
        """
        SELECT coalesce(r.name, c.resident_id), coalesce(c.answer, 'no answer yet'),
               coalesce(a.outcome, a.status), coalesce(a.stage, '-')
        FROM check_in_answer c JOIN alert a ON a.id = c.alert_id
        LEFT JOIN resident r ON r.id = c.resident_id ORDER BY c.id
        """
    ):
        print(f"  check-in: {name}: {answer}; alert {outcome}, stage {stage}")
    return bool(n_escalated)


# -- demo plumbing ---------------------------------------------------------------------------


def _scaled_chains(path: Path) -> Path:
    """The packaged escalation chains with every wait scaled down for a two-minute visit."""
    chains = tomllib.loads(resources.files("lovekey.alerts").joinpath("chains.toml").read_text("utf-8"))
    lines = ["# lovekey demo: the packaged chains with waits scaled down", ""]
    for kind, table in chains["chains"].items():
        lines.append(f"[chains.{kind}]")
        for key, value in table.items():
            if key in ("steps", "check_in"):
                steps = [{**s, "wait_min": round(s.get("wait_min", 0) * WAIT_SCALE, 2)} for s in value]
                lines.append(f"{key} = {_toml(steps)}")
            elif key == "repeat":
                every_min = max(1, round(value["every_min"] * WAIT_SCALE))
                repeat = {"notify": value["notify"], "every_min": every_min}
                lines.append(f"repeat = {_toml(repeat)}")
            elif key == "delay_min":
                lines.append(f"delay_min = {round(value * WAIT_SCALE, 2)}")
            else:
                lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


_PRINT_LOCK = threading.Lock()


class _SmsHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        to = body.get("to") or "?"
        text = body.get("message") or body.get("body") or ""
        with _PRINT_LOCK:  # several senders at once must not interleave their lines
            sys.stdout.write(f"  SMS → {redact_phone(str(to))}: {text}\n")
            sys.stdout.flush()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def sms_sink() -> Iterator[int]:
    """A stand-in SMS gateway on a free loopback port that prints what it is sent."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SmsHandler)
    thread = threading.Thread(target=server.serve_forever, name="demo-sms", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _public(url: str) -> str:
    from lovekey.redact import redact_url

    return redact_url(url)
