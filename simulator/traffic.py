"""MQTT traffic as columns, and its encoding into the payloads of the contract (DESIGN.md).

A simulated day becomes columnar tables (frozen water values, sensor readings, events,
gateway statuses) and one table of messages that point into them. Transport effects (a
silent meter, a gateway outage, late and duplicated messages) act on the message table
alone; only the messages a consumer actually takes are encoded, a slice at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from lovekey.simulator.columns import Columns
from lovekey.simulator.district import EVENT_TYPES, EventRows
from lovekey.simulator.incidents import LOCAL, LOCAL_OFFSET_S

I8 = npt.NDArray[np.int8]
I16 = npt.NDArray[np.int16]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]

# Message types, in the order they are sent when several fall on the same millisecond.
STATUS, EVENT, SENSOR, WATER, WATER_BATCH = range(5)
NONE = -1  # "field absent" in integer columns


class WireMessage(NamedTuple):
    """One MQTT message. `topic` has no prefix ("GW-00001/WM-000001/reading").

    A named tuple rather than a dataclass: a district makes 27 million of these a week and
    a tuple is built in a third of the time; it is just as immutable.
    """

    topic: str
    payload: bytes
    publish_ts: float  # simulated send time, epoch seconds
    retain: bool = False

    @property
    def publish_at(self) -> datetime:
        return datetime.fromtimestamp(self.publish_ts, LOCAL)


@dataclass(frozen=True)
class WaterRows(Columns):
    """Frozen meter values."""

    res: I32  # resident = meter index
    ts: I64  # what the meter's clock says, epoch s
    total_dl: I64  # register value in decilitres
    battery_cv: I16  # centivolts, NONE when not sent with this value
    seq: I32
    flow_cl: I32  # centilitres per minute, NONE when not sent


@dataclass(frozen=True)
class SensorRows(Columns):
    dev: I32
    t: I64
    ts: I64
    value: F64  # smoke obscuration %/m or gas % LEL, by the device's kind
    temp_dc: I32  # decidegrees Celsius, NONE when not sent
    battery_cv: I16


@dataclass(frozen=True)
class MessageTable(Columns):
    """One row per message; `lo:hi` index its rows in the table of its type."""

    publish_ms: I64
    mtype: I8
    dev: I32  # device index; the gateway index for STATUS
    t: I32  # sampling time of the (first) value, seconds from the world's start
    lo: I32  # STATUS: 1 online, 0 offline
    hi: I32


def empty_messages() -> MessageTable:
    z = np.zeros(0, np.int32)
    return MessageTable(publish_ms=np.zeros(0, np.int64), mtype=np.zeros(0, np.int8), dev=z, t=z, lo=z, hi=z)


NEVER_MS = np.iinfo(np.int64).max  # publish time of a message that is never sent


def tie_breaker(messages: MessageTable, index: I64) -> I64:
    """Second sort key after publish_ms: type, device, then the time of the values."""
    tie = (messages.mtype[index].astype(np.int64) << 58) | (messages.dev[index].astype(np.int64) << 32)
    tie |= messages.t[index].astype(np.int64) & 0xFFFFFFFF
    return tie


# -- encoding -----------------------------------------------------------------------------
#
# The hot path of the simulator: a district sends 27 million messages a week. Numbers are
# cut into their parts with numpy, small repeated texts (battery voltages, timestamps
# shared by many meters) come from lookup tables, and each payload is one C-level
# `str.__mod__` over a zip: no Python code runs per message.


def _centi_table(size: int, prefix: str) -> npt.NDArray[np.object_]:
    """`prefix + "3.61"` at index 361, and "" at index -1 (NONE): an absent field."""
    texts = [f"{prefix}{i // 100}.{i % 100:02d}" for i in range(size)]
    return np.array([*texts, ""], dtype=object)


# Lookup tables: batteries up to 99.99 V, flows up to 999.99 L/min (larger ones are clipped).
_BATTERY_MAX_CV = 9_999
_FLOW_MAX_CL = 99_999
_BATTERY = _centi_table(_BATTERY_MAX_CV + 1, ',"battery_v":')
_FLOW = _centi_table(_FLOW_MAX_CL + 1, ',"flow_lpm":')
_PAD3 = np.array([f"{i:03d}" for i in range(1000)], dtype=object)


def _ts_texts(ts: I64, epoch: BOOL) -> npt.NDArray[np.object_]:
    """Epoch seconds, or RFC 3339 in local time with its +08:00 offset.

    Many devices share a second, so only the distinct values are formatted.
    """
    unique, inverse = np.unique(ts, return_inverse=True)
    iso = np.datetime_as_string((unique + LOCAL_OFFSET_S).astype("datetime64[s]"), unit="s")
    table = np.array(
        ['"' + t + '+08:00"' for t in iso.tolist()] + [str(t) for t in unique.tolist()],
        dtype=object,
    )
    return table[inverse.ravel() + epoch * len(unique)]


def _fill(out: npt.NDArray[np.object_], where: BOOL, fmt: str, *columns: npt.ArrayLike) -> None:
    index = np.nonzero(where)[0]
    if len(index):
        cols = [np.asarray(c)[index].tolist() for c in columns]
        out[index] = np.fromiter(map(fmt.__mod__, zip(*cols, strict=True)), dtype=object, count=len(index))


def _strings(values: list[str]) -> npt.NDArray[np.object_]:
    return np.fromiter(values, dtype=object, count=len(values))


@dataclass(frozen=True)
class Encoder:
    """Turns table rows into payloads and topics; built once per world."""

    topic_table: npt.NDArray[np.object_]  # reading topics per device, then event topics,
    devices: int  # then status topics per gateway
    meter_epoch: BOOL  # per resident
    meter_m3: BOOL
    meter_fine: BOOL
    device_epoch: BOOL  # per device (sensors, buttons)
    device_is_gas: BOOL

    def water_objects(self, rows: WaterRows, index: I64) -> npt.NDArray[np.object_]:
        """One JSON object (text) per water row, in one formatting pass per register kind."""
        res = rows.res[index]
        ts = _ts_texts(rows.ts[index], self.meter_epoch[res])
        dl = rows.total_dl[index]
        litres = dl // 10
        m3, fine = self.meter_m3[res], self.meter_fine[res]
        battery = _BATTERY[np.minimum(rows.battery_cv[index], _BATTERY_MAX_CV)]
        seq = rows.seq[index]
        flow = _FLOW[np.minimum(rows.flow_cl[index], _FLOW_MAX_CL)]
        out = np.empty(len(index), dtype=object)
        _fill(
            out,
            m3,
            '{"ts":%s,"total_m3":%d.%s%s,"seq":%d%s}',
            ts,
            litres // 1000,
            _PAD3[litres % 1000],
            battery,
            seq,
            flow,
        )
        _fill(out, fine, '{"ts":%s,"total_l":%d.%d%s,"seq":%d%s}', ts, litres, dl % 10, battery, seq, flow)
        _fill(out, ~m3 & ~fine, '{"ts":%s,"total_l":%d%s,"seq":%d%s}', ts, litres, battery, seq, flow)
        return out

    def water(self, rows: WaterRows, messages: MessageTable, index: I64) -> list[bytes]:
        """Single-value messages (one row each)."""
        objects = self.water_objects(rows, messages.lo[index].astype(np.int64))
        return list(map(str.encode, objects.tolist()))

    def water_batches(self, rows: WaterRows, messages: MessageTable, index: I64) -> list[bytes]:
        lo = messages.lo[index].astype(np.int64)
        hi = messages.hi[index].astype(np.int64)
        counts = hi - lo
        flat = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        flat += np.arange(len(flat))
        objects = self.water_objects(rows, flat).tolist()
        out, at = [], 0
        for n in counts.tolist():
            out.append(('{"readings":[' + ",".join(objects[at : at + n]) + "]}").encode())
            at += n
        return out

    def sensors(self, rows: SensorRows, messages: MessageTable, index: I64) -> list[bytes]:
        r = messages.lo[index].astype(np.int64)
        dev = rows.dev[r]
        ts = _ts_texts(rows.ts[r], self.device_epoch[dev])
        gas = self.device_is_gas[dev]
        bodies = np.empty(len(r), dtype=object)
        value = rows.value[r]
        temp = rows.temp_dc[r]
        has_temp = temp != NONE
        _fill(bodies, gas, '"gas_lel_pct":%.1f', value)
        _fill(bodies, ~gas & has_temp, '"smoke":%.2f,"temperature_c":%.1f', value, temp / 10)
        _fill(bodies, ~gas & ~has_temp, '"smoke":%.2f', value)
        battery = _BATTERY[np.minimum(rows.battery_cv[r], _BATTERY_MAX_CV)]
        texts = map(
            '{"ts":%s,%s%s}'.__mod__, zip(ts.tolist(), bodies.tolist(), battery.tolist(), strict=True)
        )
        return list(map(str.encode, texts))

    def events(self, rows: EventRows, messages: MessageTable, index: I64) -> list[bytes]:
        r = messages.lo[index].astype(np.int64)
        dev = rows.dev[r]
        ts = _ts_texts(rows.ts[r], self.device_epoch[dev]).tolist()
        out = []
        for t, kind, active, value in zip(
            ts, rows.type[r].tolist(), rows.active[r].tolist(), rows.value[r].tolist(), strict=True
        ):
            body = f'{{"ts":{t},"type":"{EVENT_TYPES[kind]}","active":{"true" if active else "false"}'
            if value == value:  # not NaN
                body += f',"value":{value:g}'
            out.append((body + "}").encode())
        return out

    def statuses(self, messages: MessageTable, index: I64, origin_s: int) -> list[bytes]:
        at = messages.t[index].astype(np.int64) + origin_s
        ts = _ts_texts(at, np.zeros(len(index), np.bool_)).tolist()
        return [
            f'{{"status":"{"online" if up else "offline"}","ts":{t}}}'.encode()
            for up, t in zip(messages.lo[index].tolist(), ts, strict=True)
        ]

    def topics(self, messages: MessageTable, index: I64) -> list[str]:
        mtype = messages.mtype[index]
        where = np.where(
            mtype == STATUS,
            2 * self.devices + messages.dev[index],
            np.where(mtype == EVENT, self.devices + messages.dev[index], messages.dev[index]),
        )
        topics: list[str] = self.topic_table[where].tolist()
        return topics


@dataclass(frozen=True)
class DayTraffic:
    """Everything one local day produces. Messages index the three row tables.

    `messages` holds the meters' messages (most of the day, filled in place); `extra` the
    sensors', the buttons', the gateways' and the duplicated ones. Position i means
    `messages[i]` below len(messages), else `extra[i - len(messages)]`.
    """

    water: WaterRows
    sensors: SensorRows
    events: EventRows
    messages: MessageTable
    extra: MessageTable
    origin_s: int  # the world's start: MessageTable.t counts from here

    def __len__(self) -> int:
        return len(self.messages) + len(self.extra)

    def gather(self, index: I64) -> MessageTable:
        """The messages at positions `index`, as a table of their own."""
        main = len(self.messages)
        ours = index < main
        if ours.all():
            return self.messages.take(index)
        if not ours.any():
            return self.extra.take(index - main)
        parts = [self.messages.take(index[ours]), self.extra.take(index[~ours] - main)]
        joined = MessageTable.concat(parts)
        order = np.concatenate([np.nonzero(ours)[0], np.nonzero(~ours)[0]])
        return joined.take(np.argsort(order, kind="stable"))

    def everything(self) -> MessageTable:
        return MessageTable.concat([self.messages, self.extra])

    def encode(self, encoder: Encoder, index: I64) -> list[WireMessage]:
        """Messages for the table rows `index`, in that order."""
        topics, payloads, publish, retain = self.encode_columns(encoder, index)
        return list(map(WireMessage, topics, payloads, publish, retain))

    def encode_columns(
        self, encoder: Encoder, index: I64
    ) -> tuple[list[str], list[bytes], list[float], list[bool]]:
        """Topics, payloads, send times and retain flags for the positions `index`."""
        msgs = self.gather(index)
        index = np.arange(len(msgs))
        mtype = msgs.mtype
        payloads = np.empty(len(index), dtype=object)
        only: list[bytes] | None = None
        for kind in (STATUS, EVENT, SENSOR, WATER, WATER_BATCH):
            where = np.nonzero(mtype == kind)[0]
            if len(where) == 0:
                continue
            rows = index[where]
            if kind == WATER:
                encoded = encoder.water(self.water, msgs, rows)
            elif kind == WATER_BATCH:
                encoded = encoder.water_batches(self.water, msgs, rows)
            elif kind == SENSOR:
                encoded = encoder.sensors(self.sensors, msgs, rows)
            elif kind == EVENT:
                encoded = encoder.events(self.events, msgs, rows)
            else:
                encoded = encoder.statuses(msgs, rows, self.origin_s)
            if len(where) == len(index):
                only = encoded  # all of one type (the usual slice): no reassembly
            else:
                payloads[where] = np.fromiter(encoded, dtype=object, count=len(encoded))
        topics = encoder.topics(msgs, index)
        publish: list[float] = (msgs.publish_ms[index] / 1000.0).tolist()
        retain: list[bool] = (mtype == STATUS).tolist()
        return topics, only if only is not None else payloads.tolist(), publish, retain
