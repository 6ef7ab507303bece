"""Messages in the formats of the configured sources, for `lovekey bench ingest --source KIND`.

One reading per message, the common case for these sources: a ChirpStack v4 `up` event with
a codec's decoded object, a wmbusmeters telegram, or a CJ/T 188 answer as a concentrator
forwards it (hex text with the FE preamble). The shapes follow the fixtures of
tests/fix_sources.py (which cite each vendor's documentation); the values move on per device.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from lovekey.devices.registry import DeviceRow, GatewayRow, HouseholdRow, RegistryRow, upsert_rows

SOURCE_KINDS = ("chirpstack", "wmbusmeters", "cjt188")
GATEWAY = "bench-source"
ZONE = ZoneInfo("Asia/Shanghai")  # the CJ/T 188 meters' clocks say no zone


def external_id(kind: str, n: int) -> str:
    if kind == "chirpstack":
        return f"{0x70B3D57ED0000000 + n:016x}"
    if kind == "wmbusmeters":
        return f"{10_000_000 + n:08d}"
    return f"7833{n:010d}"  # CJ/T 188: maker 7833, meter number n


def source_entry(kind: str, prefix: str) -> dict[str, Any]:
    """The `[[sources]]` entry the ingester under test reads the load with."""
    topics = {
        "chirpstack": f"{prefix}/cs/application/+/device/+/event/up",
        "wmbusmeters": f"{prefix}/wmbusmeters/#",
        "cjt188": f"{prefix}/cjt188/#",
    }
    entry: dict[str, Any] = {"name": "bench", "kind": kind, "topic": topics[kind], "gateway_id": GATEWAY}
    if kind == "chirpstack":
        entry["options"] = {"total_field": "CurrentVolume", "total_unit": "m3"}
    if kind == "cjt188":
        entry["timezone"] = "Asia/Shanghai"
    return entry


def register_source_devices(conn: Any, kind: str, devices: int) -> dict[str, int]:
    """Water meters WM-000000... of the source's gateway, with their ids at the source."""
    rows: list[RegistryRow] = [GatewayRow(GATEWAY)]
    for n in range(devices):
        household = f"H-WM-{n:06d}"
        rows += [
            HouseholdRow(household),
            DeviceRow(
                f"WM-{n:06d}",
                "water_meter",
                household,
                GATEWAY,
                report_interval_s=60,
                external_id=external_id(kind, n),
            ),
        ]
    upsert_rows(conn, rows)
    found = conn.execute("SELECT id, key FROM device WHERE gateway_id = %s", (GATEWAY,))
    return {device_id: key for device_id, key in found}


class SourceLoad:
    """Each device sends one reading a message, on its own clock, in the source's format."""

    def __init__(self, kind: str, keys: dict[str, int], *, prefix: str, probe_every: int) -> None:
        self.kind = kind
        self.probe_every = probe_every
        self.prefix = prefix
        self.devices = sorted(keys)
        self.keys = [keys[d] for d in self.devices]
        self.external = [external_id(kind, int(d[3:])) for d in self.devices]
        origin = datetime.now(UTC).replace(microsecond=0) - timedelta(days=60)
        self.clock = [origin + timedelta(seconds=i % 3600) for i in range(len(self.devices))]
        self.count = [0] * len(self.devices)
        self.next = 0
        self.mean_readings = 1.0

    def message(self) -> tuple[str, bytes, int, tuple[int, datetime]]:
        i = self.next
        self.next = (i + 1) % len(self.devices)
        ts = self.clock[i]
        self.clock[i] = ts + timedelta(minutes=1)
        self.count[i] += 1
        total_l = 1000.0 + self.count[i] * 0.5
        topic, payload = getattr(self, f"_{self.kind}")(i, ts, total_l)
        return topic, payload, 1, (self.keys[i], ts)

    def _chirpstack(self, i: int, ts: datetime, total_l: float) -> tuple[str, bytes]:
        eui = self.external[i]
        event = {
            "deduplicationId": str(uuid.uuid4()),
            "time": ts.isoformat(),
            "deviceInfo": {
                "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
                "tenantName": "ChirpStack",
                "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
                "applicationName": "meters",
                "deviceProfileName": "Axioma W1",
                "deviceName": self.devices[i],
                "devEui": eui,
            },
            "devAddr": "00189440",
            "dr": 5,
            "fCnt": self.count[i],
            "fPort": 100,
            "data": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "object": {
                "CurrentTimestamp": int(ts.timestamp()),
                "StatusCode": 0,
                "CurrentVolume": total_l / 1000,
            },
            "rxInfo": [{"gatewayId": "0016c001f153a14c", "uplinkId": 4217106255, "rssi": -36, "snr": 10.5}],
            "txInfo": {"frequency": 867100000},
        }
        topic = f"{self.prefix}/cs/application/17c82e96-be03-4f38-aef3-f83d48582d97/device/{eui}/event/up"
        return topic, orjson.dumps(event)

    def _wmbusmeters(self, i: int, ts: datetime, total_l: float) -> tuple[str, bytes]:
        telegram = {
            "_": "telegram",
            "media": "water",
            "meter": "iperl",
            "name": self.devices[i],
            "id": self.external[i],
            "max_flow_m3h": 0,
            "total_m3": round(total_l / 1000, 4),
            "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return f"{self.prefix}/wmbusmeters/{self.external[i]}", orjson.dumps(telegram)

    def _cjt188(self, i: int, ts: datetime, total_l: float) -> tuple[str, bytes]:
        address = bytes.fromhex(self.external[i])[::-1]  # A0 first
        hundredths = round(total_l / 10)  # m3 with two decimals
        flow = bytes.fromhex(f"{hundredths:08d}")[::-1] + b"\x2c"
        local = ts.astimezone(ZONE)
        clock = bytes.fromhex(local.strftime("%Y%m%d%H%M%S"))[::-1]
        body = b"\x1f\x90\x00" + flow + flow + clock + b"\x00\x00"
        core = b"\x68\x10" + address + b"\x81" + bytes([len(body)]) + body
        frame = b"\xfe\xfe\xfe\xfe" + core + bytes([sum(core) & 0xFF, 0x16])
        return f"{self.prefix}/cjt188/c{i % 50}", " ".join(f"{b:02X}" for b in frame).encode()
