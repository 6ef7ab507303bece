"""The bare pipeline `lovekey bench ingest --baseline` measures beside LoveKey (DESIGN.md).

paho receives (acknowledging on receipt), a writer thread parses each native single reading
with orjson, and writes what it has every 50 ms by staged binary COPY and `INSERT ... ON
CONFLICT DO NOTHING` into `water_reading`: no registry, no checks, no acknowledgement after
commit. What it drains per second on this machine, in this run, is the yardstick the
ingester's figures are read against (machines of this kind differ by up to 1.5x).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from datetime import datetime

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from lovekey.ingest.mqtt import BrokerAddress


class BarePipeline:
    """`connect()` once to leave a session behind, publish a backlog, then `drain(n)`."""

    def __init__(self, db: str, mqtt_url: str, topic_filter: str, keys: dict[str, int]) -> None:
        self.db = db
        self.address = BrokerAddress.parse(mqtt_url)
        self.topic_filter = topic_filter
        self.keys = keys
        self.client_id = f"lovekey-bare-{uuid.uuid4().hex[:8]}"
        # paho's thread appends, the writer pops: a deque needs no lock for that (swapping a
        # list raced with an append in flight and lost the message)
        self._received: deque[tuple[str, bytes]] = deque()
        self._subscribed = threading.Event()

    def _client(self) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        client.on_message = lambda _c, _u, m: self._received.append((m.topic, bytes(m.payload)))
        client.on_subscribe = lambda *_: self._subscribed.set()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 600
        properties.ReceiveMaximum = 20_000
        client.connect(self.address.host, self.address.port, clean_start=False, properties=properties)
        return client

    def connect(self) -> None:
        """Subscribe once, so the broker keeps what is published for us while we are away."""
        client = self._client()
        client.loop_start()
        client.subscribe(self.topic_filter, options=SubscribeOptions(qos=1))
        if not self._subscribed.wait(10):
            raise TimeoutError("the bare pipeline never subscribed")
        client.disconnect()
        client.loop_stop()

    def drain(self, expected: int, *, timeout_s: float = 600) -> tuple[float, int]:
        """Seconds from the first write until `expected` rows are written, and rows written."""
        client = self._client()
        client.loop_start()
        stored, started = 0, None
        deadline = time.monotonic() + timeout_s
        try:
            with psycopg.connect(self.db, autocommit=True) as conn:
                conn.execute(
                    "CREATE TEMP TABLE bare_stage (ts timestamptz, total_l float8, device_key int4,"
                    " flow_lpm float4, battery_v float4) ON COMMIT DELETE ROWS"
                )
                while stored < expected and time.monotonic() < deadline:
                    time.sleep(0.05)
                    received = self._received
                    taken = [received.popleft() for _ in range(len(received))]
                    if not taken:
                        continue
                    started = started or time.monotonic()
                    rows = []
                    for topic, payload in taken:
                        body = orjson.loads(payload)
                        key = self.keys[topic.rsplit("/", 2)[1]]
                        rows.append((datetime.fromisoformat(body["ts"]), body["total_l"], key, None, None))
                    with conn.transaction(), conn.cursor() as cur:
                        with cur.copy("COPY bare_stage FROM STDIN (FORMAT BINARY)") as copy:
                            copy.set_types(["timestamptz", "float8", "int4", "float4", "float4"])
                            for row in rows:
                                copy.write_row(row)
                        cur.execute(
                            "INSERT INTO water_reading"
                            " (ts, total_dl, total_l_exact, device_key, flow_lpm, battery_v)"
                            " SELECT ts, whole_decilitres(total_l), total_l_exact_for(total_l), device_key,"
                            " flow_lpm, battery_v FROM bare_stage ON CONFLICT DO NOTHING"
                        )
                    stored += len(rows)
        finally:
            client.disconnect()
            client.loop_stop()
        return (time.monotonic() - started if started else 0.0), stored
