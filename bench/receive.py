"""`lovekey bench receive`: CTWing pushes over real HTTP into the real receiver and database.

`lovekey receive` runs as its own process against a scratch database holding `--devices`
NB-IoT meters (registered to the CTWing source's gateway, each with its IMEI as
external_id). A load process of its own (so it does not share the receiver's interpreter)
opens `--connections` keep-alive connections and posts CTWing `dataReport` pushes, one
reading each (the common case: CTWing pushes one message per request), each device with
its own clock so every reading is distinct. It measures:

- `fixed`: pushes scheduled at `--rate` a second (open loop: a request's latency counts
  from its scheduled time, so a receiver that falls behind is charged for the queue);
  latency from then to the 200, which the receiver sends only after the commit: p50, p99;
- `max`: every connection posts as fast as answers come back: readings/s;
- `replay`: the first `--replay` pushes of the fixed phase sent again, as a platform's retries are: all must
  be answered 200 and none stored twice.
Afterwards the stored rows are counted: every push answered 200 must be there, once.

The baseline (issue 12 asks for a ratio to a bare pipeline on the same machine, as machines
of this kind differ by 1.5x): the same load against a bare uvicorn + httptools app that
answers 200 to every request without reading it - the HTTP ceiling of this machine in this
run. Both figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from lovekey.bench.support.seeding import register_devices
from lovekey.config import Settings
from lovekey.storage import connect, database_url
from lovekey.storage.scratch import scratch_database

GATEWAY = "ctwing"
TOKEN = "bench-ctwing-token-0123456789"  # noqa: S105  # the scratch receiver's, made up here
PATH = "/receive/ctwing"
# each device's readings start 30 days back and go up a minute a reading: within any
# retention, never in the future. Fixed once per run and handed to every load process, so a
# replayed push is the very same push.
START_AGO_MS = 30 * 86_400_000


def main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="lovekey bench receive", description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=5000.0, help="pushes/s of the fixed phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--connections", type=int, default=256, help="keep-alive connections of the load")
    parser.add_argument("--replay", type=int, default=5000, help="pushes sent again in the replay phase")
    parser.add_argument("--phases", default="baseline,fixed,max,replay")
    parser.add_argument("--committers", type=int, default=1, help="receive.committers (writer threads)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--profile", metavar="FILE", help="record the receiver with py-spy (collapsed stacks) into FILE"
    )
    args = parser.parse_args(argv)
    phases = args.phases.split(",")

    start_ms = int(time.time() * 1000) - START_AGO_MS
    with ExitStack() as stack:
        server_url = stack.enter_context(database_url(settings))
        results: list[str] = []
        if "baseline" in phases:
            port = _free_port()
            stack.enter_context(_bare_server(port))
            phase = Phase(port, None, args.seconds, args.connections, args.devices, 0, start_ms)
            result = _load(phase, "baseline")
            results.append(result.line())
            print(results[-1], flush=True)
        db = stack.enter_context(
            scratch_database(server_url, "receive", storage=settings.storage, keep=args.keep)
        )
        imeis = _register(db, args.devices)
        port = _free_port()
        receiver = stack.enter_context(_receiver_process(db, port, args.profile, args.committers))
        sent_from = 0
        warm = Phase(port, args.rate, 2.0, args.connections, args.devices, sent_from, start_ms)
        _load(warm, "warm-up", check=True)
        sent_from += 10**7
        stored_before = _stored(db)
        counted = 0
        for label in ("fixed", "max"):
            if label not in phases:
                continue
            rate = args.rate if label == "fixed" else None
            cpu0 = _cpu_s(receiver.pid)
            phase = Phase(port, rate, args.seconds, args.connections, args.devices, sent_from, start_ms)
            result = _load(phase, label)
            result.receiver_cpu_s = _cpu_s(receiver.pid) - cpu0
            counted += result.ok
            sent_from += 10**7
            results.append(result.line())
            print(results[-1], flush=True)
        stored = _stored(db) - stored_before
        if "replay" in phases and args.replay:
            # the same pushes again: the first `replay` of the fixed phase's sequence
            again = Phase(port, None, 60.0, args.connections, args.devices, 10**7, start_ms, args.replay)
            result = _load(again, "replay")
            results.append(result.line())
            print(results[-1], flush=True)
            if _stored(db) - stored_before != stored:
                raise SystemExit(
                    f"replayed pushes were stored again: {_stored(db) - stored_before} != {stored}"
                )
        print(
            f"answered 200: {counted:,} pushes; stored {stored:,} new readings"
            f" ({'all there, once' if stored == counted else 'MISMATCH'});"
            f" replays stored again: 0; devices={args.devices} imeis={len(imeis)}"
        )
        return 0 if stored == counted else 1


# -- processes -------------------------------------------------------------------------------


def _register(db: str, devices: int) -> list[str]:
    imeis = [f"86{n:013d}" for n in range(devices)]
    with connect(db, autocommit=True) as conn:
        register_devices(conn, ((f"M-{n:06d}", GATEWAY, "water_meter", None) for n in range(devices)))
        conn.execute(
            "UPDATE device SET external_id = '86' || lpad(substr(id, 3), 13, '0') WHERE gateway_id = %s",
            (GATEWAY,),
        )
    return imeis


def _stored(db: str) -> int:
    with connect(db, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM water_reading").fetchone()
    return int(row[0]) if row else 0


@contextmanager
def _receiver_process(
    db: str, port: int, profile: str | None, committers: int
) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOVEKEY_")}
    env |= {
        "LOVEKEY_DATABASE_URL": db,
        "LOVEKEY_RECEIVE__PORT": str(port),
        "LOVEKEY_RECEIVE__COMMITTERS": str(committers),
        "LOVEKEY_LOG_LEVEL": "INFO",
        "LOVEKEY_SOURCES": orjson.dumps(
            [{"name": GATEWAY, "kind": "ctwing", "token": TOKEN, "options": {"battery_field": "battery_v"}}]
        ).decode(),
    }
    log_file = tempfile.TemporaryFile()  # noqa: SIM115  # closed below, after the process
    command = [sys.executable, "-m", "lovekey", "receive"]
    proc = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    spy: subprocess.Popen[bytes] | None = None
    try:
        _wait_port(port, proc)
        if profile:
            # attached to the running receiver; it writes its file when interrupted
            spy_command = ["py-spy", "record", "--format", "raw", "--threads", "-o", profile]
            spy = subprocess.Popen([*spy_command, "--pid", str(proc.pid)], stdout=subprocess.DEVNULL)
        yield proc
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log_file.seek(0)
        for line in log_file.read().decode(errors="replace").splitlines():
            if "receiver stopped" in line or "WARNING" in line or "ERROR" in line or "Traceback" in line:
                print("receiver: " + line.split(" ", 2)[-1])
        log_file.close()


@contextmanager
def _bare_server(port: int) -> Iterator[Any]:
    proc = multiprocessing.get_context("spawn").Process(target=_serve_bare, args=(port,), daemon=True)
    proc.start()
    try:
        _wait_port(port, None)
        yield proc
    finally:
        proc.terminate()
        proc.join(10)


async def _bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _serve_bare(port: int) -> None:
    import uvicorn

    uvicorn.run(_bare_app, host="127.0.0.1", port=port, http="httptools", lifespan="off", log_level="warning")


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the receiver exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {timeout_s:.0f}s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the load (a process of its own) ---------------------------------------------------------


@dataclass
class LoadResult:
    label: str
    seconds: float
    ok: int
    failed: int
    latencies_s: np.ndarray
    load_cpu_s: float
    receiver_cpu_s: float = 0.0

    def line(self) -> str:
        text = (
            f"{self.label:>8}: {self.ok / self.seconds:,.0f} pushes/s answered 200 over {self.seconds:.1f}s"
        )
        if self.failed:
            text += f", {self.failed:,} not 200"
        if self.latencies_s.size:
            p50, p99 = np.percentile(self.latencies_s, [50, 99]) * 1000
            text += f"; latency p50 {p50:,.0f} ms, p99 {p99:,.0f} ms (n={self.latencies_s.size:,})"
        text += f"; CPU: load {self.load_cpu_s / self.seconds:.0%}"
        if self.receiver_cpu_s:
            text += f", receiver {self.receiver_cpu_s / self.seconds:.0%}"
        return text


@dataclass(frozen=True, slots=True)
class Phase:
    """What one load process sends: pushes numbered from `first` (a phase's readings never
    repeat another's, unless it means to), at `rate` a second or as fast as answered."""

    port: int
    rate: float | None
    seconds: float
    connections: int
    devices: int
    first: int
    start_ms: int
    limit: int | None = None


def _load(phase: Phase, label: str, *, check: bool = False) -> LoadResult:
    """Run one phase in a fresh process (the receiver's interpreter is not shared)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_load_process, args=(child, phase))
    proc.start()
    ok, failed, latencies, elapsed, cpu = parent.recv()
    proc.join()
    if check and failed:
        raise SystemExit(f"{label}: {failed} pushes were not answered 200")
    return LoadResult(label, elapsed, ok, failed, np.asarray(latencies), cpu)


def _load_process(conn: Any, phase: Phase) -> None:
    cpu0 = time.process_time()
    ok, failed, latencies, elapsed = asyncio.run(_drive(phase))
    conn.send((ok, failed, latencies, elapsed, time.process_time() - cpu0))


def push_body(n: int, devices: int, start_ms: int) -> bytes:
    """The n-th push: device n mod `devices`, its (n div devices)-th reading, a minute apart."""
    device, step = n % devices, n // devices
    ts = start_ms + step * 60_000
    return orjson.dumps(
        {
            "upPacketSN": -1,
            "upDataSN": -1,
            "topic": "v1/up/ad19",
            "timestamp": ts,
            "tenantId": "2000030881",
            "serviceId": "",
            "protocol": "lwm2m",
            "productId": "15034864",
            "payload": {
                "serviceId": "meter",
                "serviceData": {"total_m3": 100.0 + step * 0.001, "battery_v": 3.6},
            },
            "messageType": "dataReport",
            "deviceType": "",
            "deviceId": f"{device:032x}",
            "assocAssetId": "",
            "IMSI": "undefined",
            "IMEI": f"86{device:013d}",
        }
    )


async def _drive(phase: Phase) -> tuple[int, int, list[float], float]:
    port, rate, first, limit = phase.port, phase.rate, phase.first, phase.limit
    head = f"POST {PATH}/{TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode()
    counter = first
    end = first + limit if limit is not None else None
    ok = failed = 0
    latencies: list[float] = []
    started = time.monotonic()
    deadline = started + phase.seconds

    async def worker() -> None:
        nonlocal counter, ok, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                n = counter
                if end is not None and n >= end:
                    return
                counter += 1
                due = started + (n - first) / rate if rate else time.monotonic()
                if due >= deadline:
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                body = push_body(n, phase.devices, phase.start_ms)
                writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                response = await reader.readuntil(b"\r\n\r\n")
                length = _content_length(response)
                if length:
                    await reader.readexactly(length)
                if response[9:12] == b"200":
                    ok += 1
                    if rate:
                        latencies.append(time.monotonic() - due)
                else:
                    failed += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(phase.connections)))
    # until the last answer: a receiver that falls behind stretches the phase, not the rate
    elapsed = time.monotonic() - started
    return ok, failed, latencies, elapsed


def _content_length(head: bytes) -> int:
    at = head.lower().find(b"content-length:")
    if at < 0:
        return 0
    return int(head[at + 15 : head.find(b"\r\n", at)].strip())
