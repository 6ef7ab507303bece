"""`lovekey receive` end to end: real HTTP requests to the running receiver, real PostgreSQL.

The platforms are played by this test as senders only: bodies as the platforms send them
(tests/fix_platforms.py, each cited), signed and encrypted as OneNET's own samples check
them. The receiver runs in a thread of this process on a free port, serving one source of
each kind, each with its own registry gateway and meters (registered with their IMEI,
OneNET dev_id or Huawei deviceId as external_id).

The water meters' own field names (`cumulativeFlow`, `batteryVoltage`, ...) are this test's
product profile; a real deployment maps its profile's names the same way (docs/sources/).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from lovekey.config import Settings, load_settings
from lovekey.devices.registry import DeviceRow, GatewayRow, HouseholdRow, upsert_rows
from lovekey.ingest import reasons
from lovekey.ingest.http_receiver import run_receiver
from lovekey.storage import connect
from tests import fix_platforms as fx
from tests.conftest import DatabaseFactory

CT_TOKEN = "ctwing-test-token-7Qe"
ON_TOKEN = "onenet-test-token-Zp4"
HW_TOKEN = "huawei-test-token-b81"
AES_KEY = fx.new_aes_key()

# meters of each source: (device id, external id)
CT_METERS = [(f"CT-{n}", f"8640160594856{n:02d}") for n in range(5)]
ON_METERS = [(f"ON-{n}", str(524870 + n)) for n in range(5)]
HW_METERS = [(f"HW-{n}", f"a2664352-9505-45a5-9913-ae01a26605{n:02d}") for n in range(5)]
HW_SMOKE = "5b0c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3"
PROFILE = {"total_field": "cumulativeFlow", "total_unit": "m3", "battery_field": "batteryVoltage"}
ONENET = {"battery_field": "battery_v"}  # the total streams are named total_m3 / total_l


def _sources() -> list[dict[str, Any]]:
    return [
        {"name": "ctwing", "kind": "ctwing", "token": CT_TOKEN, "options": PROFILE},
        {"name": "onenet", "kind": "onenet", "token": ON_TOKEN, "path": "/push/onenet", "options": ONENET},
        {
            "name": "onenet-aes",
            "kind": "onenet",
            "token": ON_TOKEN,
            "aes_key": AES_KEY,
            "gateway_id": "onenet",
            "options": ONENET,
        },
        {
            "name": "huawei",
            "kind": "huawei",
            "token": HW_TOKEN,
            "options": {"total_field": "volume_l", "total_unit": "l"},
        },
    ]


@dataclass
class Running:
    url: str
    settings: Settings
    db: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0)


@pytest.fixture(scope="module")
def receiver(database_url: str) -> Iterator[Running]:
    # the documented examples are years old: a retention that still accepts them
    settings = load_settings(
        environ={}, sources=_sources(), receive={"port": 0}, storage={"retention_days": 4000}
    )
    rows: list[Any] = []
    for gateway, meters in (("ctwing", CT_METERS), ("onenet", ON_METERS), ("huawei", HW_METERS)):
        rows.append(GatewayRow(gateway))
        for device_id, external_id in meters:
            rows += [
                HouseholdRow(f"H-{device_id}"),
                DeviceRow(device_id, "water_meter", f"H-{device_id}", gateway, external_id=external_id),
            ]
    rows += [GatewayRow("smoke-gw"), HouseholdRow("H-S1"), DeviceRow("S-1", "smoke", "H-S1", "smoke-gw")]
    # a smoke alarm reporting through the Huawei platform
    rows += [HouseholdRow("H-HS"), DeviceRow("HS-1", "smoke", "H-HS", "huawei", external_id=HW_SMOKE)]
    with connect(database_url, autocommit=True) as conn:
        upsert_rows(conn, rows)

    ready = threading.Event()
    bound: list[int] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    running = Running("", settings, database_url)

    def on_ready(port: int) -> None:
        bound.append(port)
        ready.set()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(
            run_receiver(settings, database_url, stop, host="127.0.0.1", on_ready=on_ready)
        )

    thread = threading.Thread(target=serve, name="test-receiver")
    thread.start()
    try:
        assert ready.wait(30), "the receiver did not start"
        running.url = f"http://127.0.0.1:{bound[0]}"
        yield running
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        loop.close()
    assert not thread.is_alive()


def _now_ms(minutes_ago: float = 0.0) -> int:
    return int((datetime.now(UTC) - timedelta(minutes=minutes_ago)).timestamp() * 1000)


def _water(db: str, device_id: str) -> list[tuple[datetime, float, float | None]]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT w.ts, w.total_l, w.battery_v FROM water_reading_wide w JOIN device d ON d.key = w.device_key"
            " WHERE d.id = %s ORDER BY w.ts",
            (device_id,),
        ).fetchall()
    return [(ts, total, battery) for ts, total, battery in rows]


def _rejected(db: str, source: str, since: datetime) -> list[tuple[str, str, str | None, bytes]]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT reason, detail, external_id, payload FROM rejected_input"
            " WHERE source = %s AND received_at >= %s ORDER BY id",
            (source, since),
        ).fetchall()
    return [(r, d, x, bytes(p)) for r, d, x, p in rows]


def _db_now(db: str) -> datetime:
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


# -- CTWing ---------------------------------------------------------------------------------


def test_ctwing_push_is_stored_once_however_often_it_is_retried(receiver: Running) -> None:
    device_id, imei = CT_METERS[0]
    ts = _now_ms(30)
    body = fx.ctwing_report(imei, ts, {"cumulativeFlow": 123.456, "batteryVoltage": 3.61, "rssi": -87})
    with receiver.client() as client:
        answers = [client.post(f"/receive/ctwing/{CT_TOKEN}", content=body) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    rows = _water(receiver.db, device_id)
    assert rows == [(datetime.fromtimestamp(ts / 1000, UTC), pytest.approx(123456.0), pytest.approx(3.61))]


def test_ctwing_documented_notices_are_acknowledged_and_store_nothing(receiver: Running) -> None:
    since = _db_now(receiver.db)
    with receiver.client() as client:
        for body in (fx.CTWING_ONLINE, fx.CTWING_COMMAND_RESPONSE):
            assert client.post(f"/receive/ctwing/{CT_TOKEN}", content=body).status_code == 200
        # pass-through bytes with no payload decoder configured: kept, and said so
        raw = client.post(f"/receive/ctwing/{CT_TOKEN}", content=fx.CTWING_DATA_REPORT_APPDATA)
    assert raw.status_code == 422
    (row,) = _rejected(receiver.db, "ctwing", since)
    assert row[0] == reasons.UNSUPPORTED_FORMAT
    assert b"860803030676429" in row[3]  # the push is kept whole: its IMEI with it
    assert row[3] == fx.CTWING_DATA_REPORT_APPDATA


def _ct_good(n: int) -> bytes:
    return fx.ctwing_report(
        CT_METERS[1][1], _now_ms(60 - n), {"cumulativeFlow": 10.0 + n / 100, "batteryVoltage": 3.5}
    )


CT_BAD: list[tuple[str, str, bytes, int, str]] = [
    # (what, url token, body, status, reason)
    ("wrong token", "not-the-token", _ct_good(0), 403, reasons.BAD_SIGNATURE),
    ("no token", "", _ct_good(0), 403, reasons.BAD_SIGNATURE),
    ("not JSON", CT_TOKEN, b"<xml>dataReport</xml>", 400, reasons.MALFORMED_JSON),
    ("JSON list", CT_TOKEN, b"[]", 400, reasons.MALFORMED_JSON),
    ("no messageType", CT_TOKEN, b'{"IMEI": "1"}', 400, reasons.MISSING_FIELD),
    (
        "no ids",
        CT_TOKEN,
        fx.ctwing_report("", _now_ms(), {"cumulativeFlow": 1}, device_id="undefined"),
        400,
        reasons.MISSING_FIELD,
    ),
    (
        "ms as text",
        CT_TOKEN,
        _ct_good(0).replace(b'"timestamp":', b'"timestamp":"x","t":'),
        400,
        reasons.BAD_TIMESTAMP,
    ),
    (
        "future",
        CT_TOKEN,
        fx.ctwing_report(CT_METERS[1][1], _now_ms(-24 * 60), {"cumulativeFlow": 1}),
        400,
        reasons.FUTURE_TIMESTAMP,
    ),
    (
        "epoch seconds",
        CT_TOKEN,
        fx.ctwing_report(CT_METERS[1][1], _now_ms() // 1000, {"cumulativeFlow": 1}),
        400,
        reasons.TOO_OLD,
    ),
    (
        "payload not object",
        CT_TOKEN,
        _ct_good(0).replace(b'"payload":{', b'"payload":"x","p":{'),
        400,
        reasons.BAD_VALUE,
    ),
    (
        "negative total",
        CT_TOKEN,
        fx.ctwing_report(CT_METERS[1][1], _now_ms(5), {"cumulativeFlow": -3}),
        422,
        reasons.BAD_VALUE,
    ),
    (
        "total as words",
        CT_TOKEN,
        fx.ctwing_report(CT_METERS[1][1], _now_ms(5), {"cumulativeFlow": "many"}),
        422,
        reasons.BAD_VALUE,
    ),
    (
        "no mapped field",
        CT_TOKEN,
        fx.ctwing_report(CT_METERS[1][1], _now_ms(5), {"rssi": -80}),
        422,
        reasons.UNMAPPED,
    ),
    (
        "too large",
        CT_TOKEN,
        fx.ctwing_report(CT_METERS[1][1], _now_ms(5), {"pad": "x" * 70_000}),
        413,
        reasons.PAYLOAD_TOO_LARGE,
    ),
]


def test_ctwing_bad_pushes_are_refused_with_reason_and_kept(receiver: Running) -> None:
    since = _db_now(receiver.db)
    with receiver.client() as client:
        assert client.post(f"/receive/ctwing/{CT_TOKEN}", content=_ct_good(1)).status_code == 200
        for what, token, body, status, _ in CT_BAD:
            answer = client.post(f"/receive/ctwing/{token}".rstrip("/"), content=body)
            assert answer.status_code == status, (what, answer.text)
        assert client.post(f"/receive/ctwing/{CT_TOKEN}", content=_ct_good(2)).status_code == 200
        assert client.get(f"/receive/ctwing/{CT_TOKEN}").status_code == 405
    assert [r[0] for r in _rejected(receiver.db, "ctwing", since)] == [bad[4] for bad in CT_BAD]
    assert [total for _, total, _ in _water(receiver.db, CT_METERS[1][0])] == pytest.approx(
        [10010.0, 10020.0]
    )


def test_unknown_imei_is_answered_200_and_kept_with_its_id(receiver: Running) -> None:
    since = _db_now(receiver.db)
    with receiver.client() as client:
        answer = client.post(
            f"/receive/ctwing/{CT_TOKEN}",
            content=fx.ctwing_report("869999999999999", _now_ms(), {"cumulativeFlow": 1}),
        )
    assert answer.status_code == 200  # a retry could not fix it: CTWing must not count a failure
    ((reason, _, external_id, _),) = _rejected(receiver.db, "ctwing", since)
    assert (reason, external_id) == (reasons.UNKNOWN_DEVICE, "869999999999999")


# -- OneNET ---------------------------------------------------------------------------------


def test_onenet_url_check(receiver: Running) -> None:
    nonce, msg = "4fMeQ7xk", "qjxdYwTy"
    since = _db_now(receiver.db)
    with receiver.client() as client:
        ok = client.get(
            "/push/onenet",
            params={"msg": msg, "nonce": nonce, "signature": fx.onenet_signature(ON_TOKEN, nonce, msg)},
        )
        forged = client.get(
            "/push/onenet", params={"msg": msg, "nonce": nonce, "signature": "AAAAAAAAAAAAAAAAAAAAAA=="}
        )
    assert (ok.status_code, ok.text) == (200, msg)
    assert forged.status_code == 403
    assert [r[0] for r in _rejected(receiver.db, "onenet", since)] == [reasons.BAD_SIGNATURE]


def test_onenet_batch_of_points_and_status_stored_once(receiver: Running) -> None:
    at = _now_ms(20)
    (dev_a, ext_a), (dev_b, ext_b) = ON_METERS[0], ON_METERS[1]
    msg = [
        fx.onenet_point(int(ext_a), "total_m3", at, 55.5),
        fx.onenet_point(int(ext_a), "battery_v", at, 3.4),
        fx.onenet_point(int(ext_b), "total_m3", at, 1.25),
        fx.onenet_status(int(ext_b), at, online=False),
    ]
    body = fx.onenet_push(msg, ON_TOKEN)
    with receiver.client() as client:
        assert [client.post("/push/onenet", content=body).status_code for _ in range(2)] == [200, 200]
    assert _water(receiver.db, dev_a) == [
        (datetime.fromtimestamp(at / 1000, UTC), 55500.0, pytest.approx(3.4))
    ]
    assert [total for _, total, _ in _water(receiver.db, dev_b)] == [1250.0]


def test_onenet_encrypted_push(receiver: Running) -> None:
    device_id, dev_id = ON_METERS[2]
    at = _now_ms(10)
    body = fx.onenet_push([fx.onenet_point(int(dev_id), "total_l", at, 4321)], ON_TOKEN, aes_key=AES_KEY)
    with receiver.client() as client:
        assert client.post("/receive/onenet-aes", content=body).status_code == 200
        # the same encrypted push to the plain source, which has no key: refused, kept
        assert client.post("/push/onenet", content=body).status_code == 400
    assert [total for _, total, _ in _water(receiver.db, device_id)] == [4321.0]


def _on_good(n: int) -> bytes:
    return fx.onenet_push(
        fx.onenet_point(int(ON_METERS[3][1]), "total_m3", _now_ms(60 - n), 7.0 + n / 100), ON_TOKEN
    )


ON_BAD: list[tuple[str, bytes, int, str]] = [
    (
        "wrong token",
        fx.onenet_push(fx.onenet_point(524873, "total_m3", _now_ms(), 1), "stolen?"),
        403,
        reasons.BAD_SIGNATURE,
    ),
    ("tampered value", _on_good(0).replace(b'"value":7.0', b'"value":9.5'), 403, reasons.BAD_SIGNATURE),
    (
        "no signature",
        orjson.dumps({"msg": fx.onenet_point(524873, "total_m3", _now_ms(), 1), "nonce": "n"}),
        403,
        reasons.BAD_SIGNATURE,
    ),
    ("empty body", b"", 400, reasons.MALFORMED_JSON),
    ("neither msg nor enc_msg", b'{"nonce": "abcdefgh", "msg_signature": "x"}', 400, reasons.MISSING_FIELD),
    (
        "Studio format",
        orjson.dumps({"msg": "{}", "signature": "s", "nonce": "n", "time": 1, "id": "1"}),
        400,
        reasons.UNSUPPORTED_FORMAT,
    ),
    ("empty list", fx.onenet_push([], ON_TOKEN), 400, reasons.EMPTY_BATCH),
    (
        "no dev_id",
        fx.onenet_push({"type": 1, "ds_id": "total_m3", "at": _now_ms(), "value": 1}, ON_TOKEN),
        400,
        reasons.MISSING_FIELD,
    ),
    (
        "at in seconds",
        fx.onenet_push(fx.onenet_point(524873, "total_m3", _now_ms() // 1000, 1), ON_TOKEN),
        400,
        reasons.TOO_OLD,
    ),
    (
        "bad status",
        fx.onenet_push({"type": 2, "dev_id": 524873, "at": _now_ms(), "status": 9}, ON_TOKEN),
        400,
        reasons.BAD_STATUS,
    ),
    (
        "encrypted, no key",
        fx.onenet_push([1], ON_TOKEN, aes_key=fx.new_aes_key()),
        400,
        reasons.CANNOT_DECRYPT,
    ),
    (
        "NaN as text",
        fx.onenet_push(fx.onenet_point(524873, "total_m3", _now_ms(3), "NaN"), ON_TOKEN),
        422,
        reasons.BAD_VALUE,
    ),
    (
        "boolean total",
        fx.onenet_push(fx.onenet_point(524873, "total_m3", _now_ms(3), True), ON_TOKEN),
        422,
        reasons.BAD_VALUE,
    ),
]


def test_onenet_bad_pushes_are_refused_with_reason_and_kept(receiver: Running) -> None:
    since = _db_now(receiver.db)
    with receiver.client() as client:
        assert client.post("/push/onenet", content=_on_good(1)).status_code == 200
        for what, body, status, _ in ON_BAD:
            answer = client.post("/push/onenet", content=body)
            assert answer.status_code == status, (what, answer.text)
        assert client.post("/push/onenet", content=_on_good(2)).status_code == 200
    assert [r[0] for r in _rejected(receiver.db, "onenet", since)] == [bad[3] for bad in ON_BAD]
    assert [total for _, total, _ in _water(receiver.db, ON_METERS[3][0])] == pytest.approx([7010.0, 7020.0])


# -- Huawei ---------------------------------------------------------------------------------


def _hw_time(minutes_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).strftime("%Y%m%dT%H%M%SZ")


def test_huawei_notification_stored_once(receiver: Running) -> None:
    device_id, hw_id = HW_METERS[0]
    body = fx.huawei_notify(hw_id, _hw_time(15), {"volume_l": "8765", "signal": -90})
    with receiver.client() as client:
        assert [client.post(f"/receive/huawei/{HW_TOKEN}", content=body).status_code for _ in range(3)] == [
            200
        ] * 3
        # the reference's own example (a lamp's brightness) holds no meter field: kept, 422
        doc = client.post(f"/receive/huawei?token={HW_TOKEN}", content=orjson.dumps(fx.HUAWEI_DATA_CHANGED))
    assert doc.status_code == 422
    assert [total for _, total, _ in _water(receiver.db, device_id)] == [8765.0]


def _hw_good(n: int) -> bytes:
    return fx.huawei_notify(HW_METERS[1][1], _hw_time(60 - n), {"volume_l": 100 + n})


HW_BAD: list[tuple[str, str, bytes, int, str]] = [
    ("wrong token", "guess", _hw_good(0), 403, reasons.BAD_SIGNATURE),
    ("not JSON", HW_TOKEN, b"notifyType=deviceDataChanged", 400, reasons.MALFORMED_JSON),
    ("no notifyType", HW_TOKEN, b'{"deviceId": "x"}', 400, reasons.MISSING_FIELD),
    ("no deviceId", HW_TOKEN, _hw_good(0).replace(b'"deviceId"', b'"devId"'), 400, reasons.MISSING_FIELD),
    ("no service", HW_TOKEN, _hw_good(0).replace(b'"service"', b'"svc"'), 400, reasons.MISSING_FIELD),
    (
        "data not object",
        HW_TOKEN,
        fx.huawei_notify(HW_METERS[1][1], _hw_time(1), {}).replace(b'"data":{}', b'"data":[]'),
        400,
        reasons.BAD_VALUE,
    ),
    (
        "ISO eventTime",
        HW_TOKEN,
        _hw_good(0).replace(b'"eventTime":"', b'"eventTime":"x'),
        400,
        reasons.BAD_TIMESTAMP,
    ),
    (
        "future eventTime",
        HW_TOKEN,
        fx.huawei_notify(HW_METERS[1][1], _hw_time(-600), {"volume_l": 1}),
        400,
        reasons.FUTURE_TIMESTAMP,
    ),
    (
        "empty batch",
        HW_TOKEN,
        b'{"notifyType": "deviceDatasChanged", "deviceId": "x", "services": []}',
        400,
        reasons.EMPTY_BATCH,
    ),
    (
        "huge total",
        HW_TOKEN,
        fx.huawei_notify(HW_METERS[1][1], _hw_time(2), {"volume_l": 1e20}),
        422,
        reasons.BAD_VALUE,
    ),
    (
        "infinite total",
        HW_TOKEN,
        fx.huawei_notify(HW_METERS[1][1], _hw_time(2), {"volume_l": "inf"}),
        422,
        reasons.BAD_VALUE,
    ),
]


def test_huawei_bad_pushes_are_refused_with_reason_and_kept(receiver: Running) -> None:
    since = _db_now(receiver.db)
    with receiver.client() as client:
        assert client.post(f"/receive/huawei/{HW_TOKEN}", content=_hw_good(1)).status_code == 200
        for what, token, body, status, _ in HW_BAD:
            answer = client.post(f"/receive/huawei/{token}", content=body)
            assert answer.status_code == status, (what, answer.text)
        assert client.post(f"/receive/huawei/{HW_TOKEN}", content=_hw_good(2)).status_code == 200
    assert [r[0] for r in _rejected(receiver.db, "huawei", since)] == [bad[4] for bad in HW_BAD]
    assert [total for _, total, _ in _water(receiver.db, HW_METERS[1][0])] == [101.0, 102.0]


# -- the write path -------------------------------------------------------------------------


def test_concurrent_pushes_share_commits_and_all_are_stored(receiver: Running) -> None:
    device_id, imei = CT_METERS[4]
    bodies = [
        fx.ctwing_report(imei, _now_ms(200 - n * 0.5), {"cumulativeFlow": 200 + n * 0.001})
        for n in range(300)
    ]

    def post(body: bytes) -> int:
        with receiver.client() as client:
            return client.post(f"/receive/ctwing/{CT_TOKEN}", content=body).status_code

    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(post, bodies))
    assert statuses == [200] * 300
    assert len(_water(receiver.db, device_id)) == 300


def test_unknown_path_and_health(receiver: Running) -> None:
    with receiver.client() as client:
        assert client.post("/receive/nobody/x", content=b"{}").status_code == 404
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


# -- stopping -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_stop_under_load_keeps_every_answered_push(
    postgres_factory: DatabaseFactory, sig: signal.Signals
) -> None:
    """Pushes keep coming while the signal arrives: it exits 0 within 5 s, and every push
    answered 200 is stored (the rest were refused or unanswered: the platform retries them)."""
    db = postgres_factory.create(f"receive_stop_{sig.name}")
    meters = [(f"SM-{n}", f"86000000000{n:04d}") for n in range(20)]
    with connect(db, autocommit=True) as conn:
        upsert_rows(
            conn,
            [GatewayRow("ctwing")]
            + [
                r
                for d, x in meters
                for r in (
                    HouseholdRow(f"H-{d}"),
                    DeviceRow(d, "water_meter", f"H-{d}", "ctwing", external_id=x),
                )
            ],
        )
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOVEKEY_")}
    env |= {
        "LOVEKEY_DATABASE_URL": db,
        "LOVEKEY_RECEIVE__PORT": str(port),
        "LOVEKEY_SOURCES": orjson.dumps(
            [{"name": "ctwing", "kind": "ctwing", "token": CT_TOKEN, "options": PROFILE}]
        ).decode(),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "lovekey", "receive"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    answered: list[bytes] = []
    done = threading.Event()

    def sender(worker: int) -> None:
        n = 0
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
            while not done.is_set():
                _, imei = meters[worker]
                body = fx.ctwing_report(imei, _now_ms(500 - n * 0.01), {"cumulativeFlow": 1 + n * 0.001})
                n += 1
                try:
                    if client.post(f"/receive/ctwing/{CT_TOKEN}", content=body).status_code == 200:
                        answered.append(body)
                except httpx.HTTPError:
                    if proc.poll() is not None:
                        return
                    time.sleep(0.05)

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        threads = [threading.Thread(target=sender, args=(w,)) for w in range(len(meters))]
        for t in threads:
            t.start()
        time.sleep(2.0)
        assert len(answered) > 20
        t0 = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(10)
        took_s = time.monotonic() - t0
        done.set()
        for t in threads:
            t.join(15)
        out = proc.stdout.read() if proc.stdout else ""
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0, out[-3000:]
    assert took_s < 5.0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    # every push answered 200 is stored (more may be: committed, but the answer was cut off)
    expected = set()
    for body in answered:
        push = orjson.loads(body)
        expected.add((push["IMEI"], datetime.fromtimestamp(push["timestamp"] / 1000, UTC)))
    with psycopg.connect(db) as conn:
        stored = set(
            conn.execute(
                "SELECT d.external_id, w.ts FROM water_reading w JOIN device d ON d.key = w.device_key"
            ).fetchall()
        )
    assert expected
    assert expected <= stored, f"{len(expected - stored)} answered pushes missing"


# -- HTTP on the wire -----------------------------------------------------------------------


def _raw(receiver: Running, data: bytes, *, expect: int = 1, timeout_s: float = 10.0) -> list[bytes]:
    """Send `data` on one connection; read `expect` responses (status line + headers + body)."""
    host, port = receiver.url.removeprefix("http://").split(":")
    answers: list[bytes] = []
    buffer = b""
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(data)
        while len(answers) < expect:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end >= 0:
                head = buffer[:head_end]
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(buffer) >= head_end + 4 + length:
                    answers.append(buffer[: head_end + 4 + length])
                    buffer = buffer[head_end + 4 + length :]
                    continue
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
    return answers


def _post(path: str, body: bytes, *extra: bytes) -> bytes:
    head = b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n" % path.encode()
    return head + b"".join(extra) + b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_pipelined_requests_are_answered_in_order(receiver: Running) -> None:
    device_id, imei = CT_METERS[3]
    first = fx.ctwing_report(imei, _now_ms(40), {"cumulativeFlow": 3.0})
    second = fx.ctwing_report(imei, _now_ms(39), {"cumulativeFlow": 3.001})
    path = f"/receive/ctwing/{CT_TOKEN}"
    answers = _raw(receiver, _post(path, first) + _post("/nowhere", b"{}") + _post(path, second), expect=3)
    assert [a.split(b" ", 2)[1] for a in answers] == [b"200", b"404", b"200"]
    assert [total for _, total, _ in _water(receiver.db, device_id)] == pytest.approx([3000.0, 3001.0])


def test_chunked_body_and_expect_continue(receiver: Running) -> None:
    device_id, hw_id = HW_METERS[2]
    body = fx.huawei_notify(hw_id, _hw_time(30), {"volume_l": 42})
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
    request = (
        f"POST /receive/huawei/{HW_TOKEN} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    answers = _raw(receiver, request + chunked, expect=2)
    assert answers[0].startswith(b"HTTP/1.1 100 Continue")
    assert answers[1].startswith(b"HTTP/1.1 200 OK")
    assert [total for _, total, _ in _water(receiver.db, device_id)] == [42.0]


def test_broken_http_is_answered_400_and_closed(receiver: Running) -> None:
    (answer,) = _raw(receiver, b"THIS IS NOT HTTP\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in answer


def test_many_pipelined_requests_are_read_in_turn_and_all_answered(receiver: Running) -> None:
    """More requests in one write than a connection may owe answers for: reading pauses and
    resumes, and every push is answered, in order, and stored."""
    device_id, hw_id = HW_METERS[3]
    bodies = [fx.huawei_notify(hw_id, _hw_time(300 - n), {"volume_l": 1000 + n}) for n in range(150)]
    data = b"".join(_post(f"/receive/huawei/{HW_TOKEN}", body) for body in bodies)
    answers = _raw(receiver, data, expect=150, timeout_s=30)
    assert [a.split(b" ", 2)[1] for a in answers] == [b"200"] * 150
    assert len(_water(receiver.db, device_id)) == 150


def test_alarm_states_through_a_platform_are_stored_where_they_change(receiver: Running) -> None:
    """An alarm's `smoke` field is a state: stored as an event only when it changes, so the
    same state pushed again (or retried) raises nothing new."""
    states = [(50, False), (40, True), (30, True), (20, False), (20, False)]
    with receiver.client() as client:
        for minutes_ago, smoke in states:
            body = fx.huawei_notify(HW_SMOKE, _hw_time(minutes_ago), {"smoke": smoke, "battery_low": False})
            assert client.post(f"/receive/huawei/{HW_TOKEN}", content=body).status_code == 200
    with psycopg.connect(receiver.db) as conn:
        events = conn.execute(
            "SELECT e.type, e.active FROM device_event e JOIN device d ON d.key = e.device_key"
            " WHERE d.id = 'HS-1' ORDER BY e.ts"
        ).fetchall()
    assert events == [("smoke", True), ("smoke", False)]
