"""`lovekey demo`: the whole system on a simulated district, with nothing configured.

Starts the embedded PostgreSQL and a local broker, imports a simulated district, writes
14 days of its water history straight into the database (so the detectors have routines to
learn from), then runs ingest, detectors, the alert worker and the console while the
simulator publishes the district's live traffic over MQTT in real time. A few incidents are
placed so that something happens at once: a resident who has not used water for 13 hours,
another since this morning, a tap left running, an SOS press and a smoke alarm within the
first minutes, a silent meter and a planned absence (which must NOT reach a neighbour).
Two residents are asked first (the check-in stage), by a call that takes a key: one presses
"1, fine" a few seconds after the phone rings (the alert closes, nobody is woken), the other,
on the floor since 90 minutes ago, never answers (the love-key neighbour is called when the
stage ends). Half the households have a door reminder (`door_sensor`, as `lovekey evaluate`
gives them): its passages, `left` / `returned`, battery and tamper events are published with
the rest, and two residents go out a minute or two after the start, so a `left` arrives and
is stored at once (the summary counts the door events stored).

Escalation waits are scaled down (10 minutes become 30 seconds) so a visitor sees an alert
climb from the love-key holder to staff within two minutes. Text messages and voice calls go
through Alibaba Cloud's official SDKs to a local stand-in of its API
(`alerts.providers.standins`, which checks each request's signature and template), which
prints the template SMS and the call a real phone would get. The key the resident presses
comes back the way Alibaba Cloud reports it: its VoiceReport pushed to the callback URL with
the provider's secret, matched to the call LoveKey made (`alerts.provider_webhooks`).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import logging
import secrets
import shutil
import sys
import threading
import time
import tomllib
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import urllib3

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
# households with a door reminder: the share `lovekey evaluate` and `lovekey simulate` use
DOOR_SHARE = 0.5


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

    callbacks = {name: secrets.token_urlsafe(24) for name in ("aliyun", "aliyun_voice")}
    phones = _StandInPhones(f"{console_url}/alerts/providers", callbacks)
    with ExitStack() as stack:
        cloud = stack.enter_context(_cloud_standin(console_url, phones))
        phones.cloud = cloud
        settings = settings.with_overrides(
            data_dir=str(demo_dir),
            web={"host": "127.0.0.1", "port": port, "insecure_cookies": True},  # plain http
            detect={"sweep_interval_s": 10},
            alerts={
                "public_base_url": console_url,
                "chains_file": str(_scaled_chains(demo_dir / "chains.toml")),
                "providers": _demo_providers(cloud.endpoint, callbacks),
                "sms_providers": ["aliyun"],
                "voice_providers": ["aliyun_voice"],
                # smoke, gas, SOS: the family gets a call first (key 1 / key 2), then an SMS
                "role_channels": {
                    "default": ["push", "sms"],
                    "emergency": ["sms", "push"],
                    "family/life_safety": ["voice", "sms"],
                },
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
        world, asked, going_out = _build_world(args.residents, args.seed, now)
        with psycopg.connect(db_url, autocommit=True) as conn:
            _import_registry(conn, world, settings)
            rows = _write_history(conn, world, now)
            _mark_absences(conn, world, now, settings)
            _create_demo_user(conn, now)
            check_ins = _check_in_residents(conn, asked, phones)
        print(
            f"\nLoveKey demo: {args.residents} residents, {HISTORY_DAYS} days of history"
            f" ({rows:,} meter readings) ready in {time.monotonic() - started:.0f} s.\n"
            f"  console   {console_url}   login: {DEMO_USER} / {DEMO_PASSWORD}\n"
            f"  broker    {_public(mqtt_url)}   topics: {settings.mqtt.topic_prefix}/#\n"
            "  Template SMS and voice calls are printed below as the stand-in of Alibaba Cloud's"
            " SMS and voice APIs receives them.\n"
            f"  check-in  {check_ins}\n"
            f"  door      {going_out}\n"
            "  Ctrl+C stops.\n",
            flush=True,
        )

        async def live(astop: asyncio.Event) -> None:
            await asyncio.to_thread(_publish_live, world, settings, mqtt_url, now, requested, stop)
            if requested.is_set():
                log.info("demo: live publisher stopped; stopping the pipeline")
                stop.set()

        async def open_check_ins(astop: asyncio.Event) -> None:
            await asyncio.to_thread(_check_in_scene, db_url, asked, stop)
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


def _build_world(residents: int, seed: int, now: datetime) -> tuple[Any, dict[str, str], str]:
    """The district, the two residents the demo asks first ('fine', 'silent'), and a line for
    the banner on the door reminders."""
    from lovekey.simulator import Scenario, World
    from lovekey.simulator.district import tells_direction

    start = now - timedelta(days=HISTORY_DAYS)
    days = HISTORY_DAYS + LIVE_HOURS / 24
    scenario = Scenario.load(None)
    probe = World.build(
        scenario, residents=residents, seed=seed, start=start, days=days, door_share=DOOR_SHARE
    )
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
    # two residents with a door reminder go out for three hours a minute or two from now
    out_at_h = now_h + 90 / 3600
    # (whose reminders tell the direction, so they say "left"; a passage may still be missed)
    doors = [i for i in owners.get("door_sensor", []) if i not in taken and tells_direction(seed, i)]
    outgoers = doors[:2]
    fixed += [{"kind": "day_out", "resident": r, "start_h": out_at_h, "duration_h": 3.0} for r in outgoers]
    scenario = scenario.with_overrides({"incidents": {"fixed": fixed}})
    world = World.build(
        scenario, residents=residents, seed=seed, start=start, days=days, door_share=DOOR_SHARE
    )
    ids = list(index)
    return world, {"fine": ids[fine], "silent": ids[silent]}, _door_line(world, [ids[r] for r in outgoers])


def _door_line(world: Any, outgoers: list[str]) -> str:
    """Who has a door reminder, and what theirs will say when the two residents go out."""
    from lovekey.simulator.district import EVENT_TYPES
    from lovekey.simulator.population import DOOR_SENSOR

    pop = world.population
    households = len(world.door_triggers)
    said = []
    for rid in outgoers:
        resident = pop.resident_ids.index(rid)
        device = pop.devices_of(resident)[DOOR_SENSOR]
        out = next(p for p in world.of_kind("day_out") if p.resident == resident)
        heard = [str(EVENT_TYPES[k]) for t, k in world.door_triggers[device] if t == out.start_s]
        said.append(
            f"{pop.resident_name(resident)} goes out: {pop.device_ids[device]} says"
            f" {heard[0] if heard else 'nothing (a missed passage)'}"
        )
    return f"{households} households have a door reminder; " + "; ".join(said)


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
            "INSERT INTO water_reading (device_key, ts, received_s, total_dl, total_l_exact)"
            " SELECT device_key, to_timestamp(ts), seconds_since_2000(to_timestamp(ts)),"
            " whole_decilitres(total_l), total_l_exact_for(total_l)"
            " FROM demo_history"
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


def _check_in_residents(conn: psycopg.Connection[Any], who: dict[str, str], phones: _StandInPhones) -> str:
    """Give the resident who is fine a phone that answers the check-in call with key 1; returns
    a line for the banner: who is asked first, and how each of them will answer."""
    ids = [who["fine"], who["silent"]]
    rows = conn.execute("SELECT id, name, phone FROM resident WHERE id = ANY(%s)", (ids,)).fetchall()
    names = {resident_id: name for resident_id, name, _ in rows}
    phone = next(p for resident_id, _, p in rows if resident_id == who["fine"])
    if not phone:
        raise RuntimeError(f"demo: resident {who['fine']} has no phone of their own")
    phones.answer_check_in(phone, "1")
    return (
        f"{names[who['fine']]} is asked and answers 1 (fine): nobody is woken;"
        f" {names[who['silent']]} is asked and never answers: the neighbour is called"
    )


def _check_in_scene(db_url: str, who: dict[str, str], stop: threading.Event) -> None:
    """Two check-ins, as the detectors' sensitive tier raises them, once the detectors have
    swept (so a visitor sees both stories within two minutes, whatever the detectors' own
    timing): the resident who is fine presses 1 a few seconds after the call reaches their
    phone (`_StandInPhones`); the one on the floor never answers. Opened after the detectors'
    first sweep, they are the demo's own: the detectors clear only the alerts they know of, and
    lift these to the neighbour tier only if their own neighbour tier fires for these residents."""
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
    door = conn.execute(
        "SELECT e.type, count(*) FROM device_event e JOIN device d ON d.key = e.device_key"
        " WHERE d.kind = 'door_sensor' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    print("  door reminder events stored: " + (", ".join(f"{t} {n}" for t, n in door) or "none"))
    for name, answer, channel, outcome, stage in conn.execute(
        """
        SELECT coalesce(r.name, c.resident_id), coalesce(c.answer, 'no answer yet'),
               coalesce(c.channel, '-'), coalesce(a.outcome, a.status), coalesce(a.stage, '-')
        FROM check_in_answer c JOIN alert a ON a.id = c.alert_id
        LEFT JOIN resident r ON r.id = c.resident_id ORDER BY c.id
        """
    ):
        print(f"  check-in: {name}: {answer} (by {channel}); alert {outcome}, stage {stage}")
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


def _print_sent(message: Any) -> None:
    what = "Call" if message.kind == "voice" else "SMS"
    with _PRINT_LOCK:  # several senders at once must not interleave their lines
        sys.stdout.write(f"  {what} → {redact_phone('+86' + message.phone)}: {message.rendered}\n")
        sys.stdout.flush()


DEMO_KEY_ID, DEMO_KEY_SECRET = "demo-access-key-id", "demo-access-key-secret"
# the demo's check-in templates, in the stand-in's approved list and in the provider settings
_CHECK_IN_TEMPLATES = frozenset(
    ("SMS_DEMO_CHECK_IN_ZH", "SMS_DEMO_CHECK_IN_EN", "TTS_DEMO_CHECK_IN_ZH", "TTS_DEMO_CHECK_IN_EN")
)


class _StandInPhones:
    """The phones behind the stand-in of Alibaba Cloud: each message is printed as the phone
    would show it, and a resident given an answer (`answer_check_in`) answers their check-in
    a few seconds later the way a real one reaches LoveKey - a key pressed in the call, which
    Alibaba Cloud reports in its VoiceReport push (or a reply to the text, in its SmsUp push),
    posted to the callback URL with the provider's secret; a check-in call nobody answers is
    reported as rung out (VoiceReport status 200005). Nothing is written to the database
    here: LoveKey verifies the callback and matches it to the call it made."""

    def __init__(self, callbacks_url: str, callback_secrets: dict[str, str]) -> None:
        self.callbacks_url = callbacks_url  # <console>/alerts/providers
        self.secrets = callback_secrets  # provider name -> its callback_secret
        self.cloud: Any = None  # the FakeAliyun, once started
        self._answers: dict[str, str] = {}  # mainland number -> the key or reply
        self._lock = threading.Lock()

    def answer_check_in(self, phone_e164: str, key: str) -> None:
        with self._lock:
            self._answers[phone_e164.removeprefix("+86")] = key

    def __call__(self, message: Any) -> None:
        _print_sent(message)
        if message.template not in _CHECK_IN_TEMPLATES:
            return
        with self._lock:
            key = self._answers.pop(message.phone, None)
        if key is None and message.kind != "voice":
            return  # a text nobody answers: no push
        # a key a few seconds after the phone rings; a call nobody picks up is reported too,
        # once it has rung out (Alibaba Cloud's VoiceReport comes for every call)
        timer = threading.Timer(3.0 if key is not None else 8.0, self._answer, (message, key))
        timer.daemon = True  # a push still due when the demo stops is dropped
        timer.start()

    def _answer(self, message: Any, key: str | None) -> None:
        voice = message.kind == "voice"
        provider, topic = ("aliyun_voice", "voice_report") if voice else ("aliyun", "sms_up")
        url = f"{self.callbacks_url}/{provider}/{self.secrets[provider]}/{topic}"
        shown = f"key {key}" if key is not None else "rang out, nobody picked up"
        if not voice:
            shown = f"reply {key}"
        status = 0
        # the push can arrive before LoveKey has recorded what Alibaba Cloud accepted (then it
        # is refused, 403); Alibaba Cloud retries a push that was not acknowledged
        for _ in range(5):
            try:
                if voice:
                    status, _ = self.cloud.voice_report(
                        url, message, dtmf=key or "", answered=key is not None
                    )
                else:
                    status, _ = self.cloud.sms_up(url, message.phone, key or "")
            except (OSError, urllib3.exceptions.HTTPError) as exc:  # the console has stopped
                log.warning("demo: the stand-in's callback failed: %s", exc)
                return
            if status == 200:
                break
            time.sleep(2.0)
        with _PRINT_LOCK:
            sys.stdout.write(
                f"  {'Call' if voice else 'SMS'} ← {redact_phone('+86' + message.phone)}:"
                f" {shown}   (pushed by Alibaba Cloud to LoveKey's callback: HTTP {status})\n"
            )
            sys.stdout.flush()


def _cloud_standin(console_url: str, phones: _StandInPhones) -> Any:
    """A stand-in of Alibaba Cloud's SMS and voice APIs with the demo's approved templates
    (the wording an operator registers, docs/alerts.md), delivering to `phones`."""
    from lovekey.alerts.providers.standins import FakeAliyun

    link = f"{console_url}/a/${{link}}"
    templates = {
        "SMS_DEMO_ALERT_ZH": f"${{name}}${{what}}（${{since}}起），请查看并确认：{link} 回复1确认",
        "SMS_DEMO_URGENT_ZH": f"紧急！${{name}}${{what}}（${{since}}起），请立即前往：{link}",
        "SMS_DEMO_HELP_ZH": f"${{helper}}在${{name}}处，老人需要帮助，请立即前往：{link}",
        "SMS_DEMO_BUNDLE_ZH": f"您有${{count}}条提醒，请查看：{link}",
        "SMS_DEMO_STAND_DOWN_ZH": "${name}的提醒已解除：${outcome}，无需前往。谢谢！",
        "SMS_DEMO_DIGEST_ZH": "${name}今天${time}已开始用水，一切安好。",
        "SMS_DEMO_CHECK_IN_ZH": (
            f"${{name}}您好，社区问候您：一切都好吗？平安请回复1，需要帮助请回复2。{link}"
        ),
        "SMS_DEMO_ALERT_EN": f"LoveKey: ${{name}} ${{what}} since ${{since}}. Please check: {link} Reply 1",
        "SMS_DEMO_URGENT_EN": f"URGENT LoveKey: ${{name}} ${{what}} since ${{since}}. Go now: {link}",
        "SMS_DEMO_HELP_EN": f"URGENT LoveKey: ${{helper}} is with ${{name}}, who needs help: {link}",
        "SMS_DEMO_BUNDLE_EN": f"LoveKey: ${{count}} alerts: {link}",
        "SMS_DEMO_STAND_DOWN_EN": "LoveKey all clear: ${name}: ${outcome}. No need to go.",
        "SMS_DEMO_DIGEST_EN": "LoveKey: ${name} used water today at ${time}. All is well.",
        "SMS_DEMO_CHECK_IN_EN": (
            f"LoveKey: Hello ${{name}}, are you all right?"
            f" Reply 1 if you are fine, 2 if you need help. {link}"
        ),
        "TTS_DEMO_CALL_ZH": "爱心钥匙提醒：${name}${what}。我去看看请按1，需要帮助请按2。",
        "TTS_DEMO_CALL_EN": "LoveKey: ${name}, ${what}. Press 1 if you are going, 2 if help is needed.",
        "TTS_DEMO_CHECK_IN_ZH": "${name}您好，这里是社区爱心钥匙。您一切都好吗？平安请按1，需要帮助请按2。",
        "TTS_DEMO_CHECK_IN_EN": (
            "Hello ${name}, this is your community's LoveKey. Are you all right?"
            " Press 1 if you are fine, 2 if you need help."
        ),
    }
    return FakeAliyun(
        key_id=DEMO_KEY_ID,
        key_secret=DEMO_KEY_SECRET,
        sign_name="爱心钥匙",
        templates=templates,
        echo=phones,
    )


def _demo_providers(endpoint: str, callback_secrets: dict[str, str]) -> dict[str, Any]:
    credentials = {"access_key_id": DEMO_KEY_ID, "access_key_secret": DEMO_KEY_SECRET, "endpoint": endpoint}
    messages = ("alert", "urgent", "help", "bundle", "stand_down", "digest", "check_in")
    return {
        "aliyun": {
            "kind": "aliyun_sms",
            **credentials,
            "sign_name": "爱心钥匙",
            "callback_secret": callback_secrets["aliyun"],
            "templates": {
                f"{m}.{lang}": f"SMS_DEMO_{m.upper()}_{lang.upper()}"
                for m in messages
                for lang in ("zh", "en")
            },
        },
        "aliyun_voice": {
            "kind": "aliyun_voice",
            **credentials,
            "caller_number": "057100000000",
            "callback_secret": callback_secrets["aliyun_voice"],
            "templates": {
                "call.zh": "TTS_DEMO_CALL_ZH",
                "call.en": "TTS_DEMO_CALL_EN",
                "check_in_call.zh": "TTS_DEMO_CHECK_IN_ZH",
                "check_in_call.en": "TTS_DEMO_CHECK_IN_EN",
            },
        },
    }


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
