"""The compact form of a meter's day of water readings: a pure codec over numpy columns.

One packed value holds every reading one meter took on one UTC day: a 7-byte header
(format version, flags, column widths, reading count) and a raw-deflated body of four
columns, each turned into small numbers first and stored in the narrowest unsigned type that
holds that day's largest, so deflate sees dense bytes rather than runs of zero high bytes:

- timestamps as the step from the previous reading (the first from midnight), in seconds
  when every step is whole seconds (flag `TS_SECONDS`), else in microseconds: a meter that
  reports every 900 s is one repeated 2-byte value all day;
- totals as the day's first total in decilitres (the meters' resolution, 8 bytes) and then
  zigzag decilitre steps, when every total of the day is a whole number of decilitres;
  otherwise the float64 bit patterns XORed with the previous one (flag `RAW_TOTALS`), so a
  total the ingester stored from `total_m3` with more digits still comes back bit for bit;
- flow and battery as a presence bitmap and the float32 bit patterns of the values present
  (PostgreSQL `real`, as stored), each XORed with the previous: a battery that reads 3.61 V
  all day costs a few bytes.

Nothing is rounded: `decode(encode(x)) == x` for every column, NULLs included, which is
what `tests/test_storage_compact.py` checks with hypothesis. The format was chosen by
measurement (docs/storage.md): on simulated traffic the body came to 0.89 bytes a reading,
against 1.27 with every column as int64 and 1.77 with byte-shuffled int64 columns.

This module does no I/O and reads no clock; `storage.packing` and `storage.history` are the
shells that move packed values in and out of PostgreSQL.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

FORMAT_VERSION = 1
RAW_TOTALS = 0x01  # totals kept as float64 bit patterns, not decilitres
TS_SECONDS = 0x02  # every timestamp step is whole seconds, stored in seconds
DAY_US = 86_400 * 1_000_000
_HEADER = struct.Struct("<BBBI")  # version, flags, column widths, readings
_WIDTHS = (np.dtype("<u1"), np.dtype("<u2"), np.dtype("<u4"), np.dtype("<u8"))
_LIMITS = np.array([0xFF, 0xFFFF, 0xFFFF_FFFF], np.uint64)
_LEVEL = 6  # zlib level: 9 saved under 1 % on simulated days and took twice as long
_WBITS = -15  # raw deflate: the zlib header and checksum would cost 6 bytes a meter-day


class CodecError(ValueError):
    """A packed value that this codec cannot read (truncated, corrupt, or a newer format)."""


@dataclass(frozen=True, slots=True)
class WaterColumns:
    """Water readings as columns. NaN in `flow_lpm`/`battery_v` means the value was not sent.

    `ts_us` is microseconds since the Unix epoch (PostgreSQL keeps timestamps to the
    microsecond), `received_us` when the row reached the database (for a packed day: when its
    newest reading did). Sorted by (device_key, ts_us) wherever this module returns one.
    """

    device_key: I32
    ts_us: I64
    total_l: F64
    flow_lpm: F32
    battery_v: F32
    received_us: I64

    def __len__(self) -> int:
        return len(self.ts_us)

    @classmethod
    def empty(cls) -> WaterColumns:
        return cls(
            np.zeros(0, np.int32),
            np.zeros(0, np.int64),
            np.zeros(0, np.float64),
            np.zeros(0, np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
        )

    def take(self, index: npt.NDArray[Any]) -> WaterColumns:
        return WaterColumns(
            self.device_key[index],
            self.ts_us[index],
            self.total_l[index],
            self.flow_lpm[index],
            self.battery_v[index],
            self.received_us[index],
        )

    @classmethod
    def concat(cls, parts: list[WaterColumns]) -> WaterColumns:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.device_key for p in parts]).astype(np.int32, copy=False),
            np.concatenate([p.ts_us for p in parts]).astype(np.int64, copy=False),
            np.concatenate([p.total_l for p in parts]).astype(np.float64, copy=False),
            np.concatenate([p.flow_lpm for p in parts]).astype(np.float32, copy=False),
            np.concatenate([p.battery_v for p in parts]).astype(np.float32, copy=False),
            np.concatenate([p.received_us for p in parts]).astype(np.int64, copy=False),
        )

    def sorted_unique(self) -> WaterColumns:
        """Sorted by (device_key, ts_us), one reading per pair: the first one in `self` wins.

        Callers put the version that was stored first (the packed one) first, which is what
        `INSERT ... ON CONFLICT DO NOTHING` would have kept.
        """
        order = np.lexsort((self.ts_us, self.device_key))  # stable: ties keep their order
        out = self.take(order)
        if len(out) < 2:
            return out
        first = np.ones(len(out), np.bool_)
        first[1:] = (out.device_key[1:] != out.device_key[:-1]) | (out.ts_us[1:] != out.ts_us[:-1])
        return out if first.all() else out.take(first)


@dataclass(frozen=True, slots=True)
class PackedDay:
    """One meter's day in compact form, as stored in `water_reading_packed`."""

    device_key: int
    day_us: int  # midnight UTC of the day, microseconds since the epoch
    readings: int
    received_us: int  # the newest received_us of the readings packed
    data: bytes


def day_of(ts_us: I64) -> I64:
    """The UTC day (as midnight in epoch microseconds) of each timestamp."""
    return (ts_us // DAY_US) * DAY_US


def encode_days(columns: WaterColumns) -> list[PackedDay]:
    """Pack readings (any meters, any days) into one value per meter and UTC day.

    `columns` must hold one reading per (device_key, ts_us); they are sorted here.
    """
    if len(columns) == 0:
        return []
    order = np.lexsort((columns.ts_us, columns.device_key))
    c = columns.take(order)
    day = day_of(c.ts_us)
    n = len(c)
    boundary = np.ones(n, np.bool_)
    boundary[1:] = (c.device_key[1:] != c.device_key[:-1]) | (day[1:] != day[:-1])
    if np.any((c.device_key[1:] == c.device_key[:-1]) & (c.ts_us[1:] == c.ts_us[:-1])):
        raise ValueError("two readings of one meter at the same timestamp")
    starts = np.flatnonzero(boundary)
    ends = np.append(starts[1:], n)

    # every column's steps at once; each group's first element is then fixed to its own base.
    # Timestamps are sorted and unique, so their steps are never negative.
    ts_step = np.diff(c.ts_us, prepend=np.int64(0))
    ts_step[starts] = c.ts_us[starts] - day[starts]
    whole_seconds = np.logical_and.reduceat(ts_step % 1_000_000 == 0, starts)
    decilitres = np.rint(c.total_l * 10.0)
    whole = (decilitres / 10.0 == c.total_l) & (np.abs(decilitres) < 2.0**53)
    whole &= ~((c.total_l == 0.0) & np.signbit(c.total_l))  # -0.0 would come back as 0.0
    group_whole = np.logical_and.reduceat(whole, starts)
    dl = np.where(whole, decilitres, 0.0).astype(np.int64)
    dl_step = _zigzag(np.diff(dl, prepend=np.int64(0))).view(np.uint64)
    raw_bits = c.total_l.view(np.uint64)
    raw_step = raw_bits ^ np.concatenate([[np.uint64(0)], raw_bits[:-1]])
    raw_step[starts] = raw_bits[starts]
    received_max = np.maximum.reduceat(c.received_us, starts)
    # each group's column widths at once: its largest timestamp step (in seconds where it
    # can be) and its largest total step (the first total is written in full)
    group = np.repeat(np.arange(len(starts)), ends - starts)
    ts_units = ts_step.view(np.uint64) // np.where(whole_seconds[group], np.uint64(1_000_000), np.uint64(1))
    ts_widths = np.searchsorted(_LIMITS, np.maximum.reduceat(ts_units, starts)).tolist()
    later_steps = dl_step.copy()
    later_steps[starts] = 0
    total_widths = np.searchsorted(_LIMITS, np.maximum.reduceat(later_steps, starts)).tolist()

    out: list[PackedDay] = []
    for g, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        flags = TS_SECONDS if whole_seconds[g] else 0
        ts_width = ts_widths[g]
        if group_whole[g]:
            # the day's first total in full, then the steps in the narrowest type that fits
            total_width = total_widths[g]
            totals = dl[s : s + 1].tobytes() + dl_step[s + 1 : e].astype(_WIDTHS[total_width]).tobytes()
        else:
            flags |= RAW_TOTALS
            total_width = 3
            totals = raw_step[s:e].tobytes()
        body = b"".join(
            (
                ts_units[s:e].astype(_WIDTHS[ts_width]).tobytes(),
                totals,
                _floats(c.flow_lpm[s:e]),
                _floats(c.battery_v[s:e]),
            )
        )
        header = _HEADER.pack(FORMAT_VERSION, flags, ts_width | total_width << 2, e - s)
        deflate = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS)
        out.append(
            PackedDay(
                int(c.device_key[s]),
                int(day[s]),
                e - s,
                int(received_max[g]),
                header + deflate.compress(body) + deflate.flush(),
            )
        )
    return out


def decode_day(device_key: int, day_us: int, received_us: int, data: bytes) -> WaterColumns:
    """The readings of one packed value, sorted by time."""
    try:
        version, flags, widths, n = _HEADER.unpack_from(data)
    except struct.error as exc:
        raise CodecError("packed readings shorter than their header") from exc
    if version != FORMAT_VERSION:
        raise CodecError(f"packed readings of format {version}; this version reads {FORMAT_VERSION}")
    try:
        body = zlib.decompress(data[_HEADER.size :], _WBITS)
    except zlib.error as exc:
        raise CodecError(f"packed readings do not inflate: {exc}") from exc
    ts_type, total_type = _WIDTHS[widths & 3], _WIDTHS[widths >> 2 & 3]
    raw = bool(flags & RAW_TOTALS)
    need = n * ts_type.itemsize + (8 * n if raw else 8 + (n - 1) * total_type.itemsize)
    if n < 1 or len(body) < need:
        raise CodecError("packed readings shorter than their count")
    ts_step = np.frombuffer(body, ts_type, n, 0).astype(np.int64)
    if flags & TS_SECONDS:
        ts_step *= 1_000_000
    ts_us = day_us + np.cumsum(ts_step)
    offset = n * ts_type.itemsize
    if raw:
        total_l = np.bitwise_xor.accumulate(np.frombuffer(body, np.uint64, n, offset)).view(np.float64)
        offset += 8 * n
    else:
        first = np.frombuffer(body, np.int64, 1, offset)
        steps = _unzigzag(np.frombuffer(body, total_type, n - 1, offset + 8).astype(np.uint64))
        total_l = np.cumsum(np.concatenate([first, steps])) / 10.0
        offset += 8 + (n - 1) * total_type.itemsize
    flow, offset = _unfloats(body, offset, n)
    battery, offset = _unfloats(body, offset, n)
    if offset != len(body):
        raise CodecError("packed readings longer than their count")
    return WaterColumns(
        np.full(n, device_key, np.int32),
        ts_us.astype(np.int64, copy=False),
        total_l,
        flow,
        battery,
        np.full(n, received_us, np.int64),
    )


def decode_days(days: list[PackedDay]) -> WaterColumns:
    return WaterColumns.concat([decode_day(p.device_key, p.day_us, p.received_us, p.data) for p in days])


def _zigzag(v: I64) -> I64:
    return (v << 1) ^ (v >> 63)


def _unzigzag(u: npt.NDArray[np.uint64]) -> I64:
    return ((u >> np.uint64(1)) ^ (np.uint64(0) - (u & np.uint64(1)))).view(np.int64)


def _floats(values: F32) -> bytes:
    """Presence bitmap, then the float32 bits of the values present, each XOR the previous."""
    have = ~np.isnan(values)
    bits = values[have].view(np.uint32)
    if bits.size:
        bits = bits ^ np.concatenate([[np.uint32(0)], bits[:-1]])
    return np.packbits(have).tobytes() + bits.tobytes()


def _unfloats(body: bytes, offset: int, n: int) -> tuple[F32, int]:
    mask_bytes = (n + 7) // 8
    if len(body) < offset + mask_bytes:
        raise CodecError("packed readings cut short in a presence bitmap")
    have = np.unpackbits(np.frombuffer(body, np.uint8, mask_bytes, offset), count=n).astype(np.bool_)
    offset += mask_bytes
    count = int(have.sum())
    if len(body) < offset + 4 * count:
        raise CodecError("packed readings cut short in a float column")
    bits = np.bitwise_xor.accumulate(np.frombuffer(body, np.uint32, count, offset))
    values = np.full(n, np.nan, np.float32)
    values[have] = bits.view(np.float32)
    return values, offset + 4 * count
