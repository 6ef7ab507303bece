"""CJ/T 188 frames: the wired water meters' protocol, as concentrators forward the meters' answers.

A frame is `[FE ...] 68 T A0..A6 C L DATA CS 16`: up to a few FE wake-up bytes, the start
byte, the meter type (0x10-0x19: water), a 7-byte BCD address sent low byte first, the
control code (0x81: the meter's answer to "read data"), the data length, the data, a
checksum (the sum of every byte from 68 to the last data byte, mod 256) and the end byte.

The answer to the "read current data" identifier 901F carries, after DI and SER:

    current cumulative flow  4 bytes BCD, low byte first, 2 decimals, then 1 unit byte
    settlement-day flow      the same (5 bytes)
    real time                7 bytes BCD: ss mm hh DD MM YY YY (year low byte first)
    status ST                2 bytes: the first has the valve (D0-D1) and battery (D2) bits

CJ/T 188-2004 sends DI high byte first (90 1F), CJ/T 188-2018 low byte first (1F 90); the
data that follows is the same, and meters in the field send both, so both are read. Units:
0x29 litres, 0x2C cubic metres (the only two a water meter's register uses here).

Sources: the frame layout and the worked example frame (the meter 0011223344 of maker
7833 answering 556677.00 m3) from "CJ/T-188 水表协议解析" (https://cnblogs.com/yangykaifa/p/7010777.html,
also https://hftangyu.com/563.html); the DI byte order of the two versions and the meter
types from the ng-gateway CJ/T 188 driver documentation
(https://ng-gateway.com/en/southward/cjt188/address-di.html); the field offsets of the 901F
answer from an open-source concentrator (xijunzhou/sdqr_energy_node_class-20180705,
Src/meter/cj188.h). The status bits follow the standard's D0-D2 numbering; that
concentrator numbers them from the top bit instead (valve 0xC0, battery 0x20), which
`StatusBits.MSB_FIRST` reads.

Everything here is pure: bytes in, a `Cjt188Reading` out, or `PayloadError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from lovekey.errors import PayloadError
from lovekey.ingest import reasons

START, END, WAKE = 0x68, 0x16, 0xFE
READ_ANSWER = 0x81  # control code of a meter's answer to "read data"
WATER_TYPES = range(0x10, 0x1A)  # 10H cold, 11H hot, 12H drinking, 13H reclaimed, ... 19H
DI_2004 = b"\x90\x1f"
DI_2018 = b"\x1f\x90"
# litres per unit of the register, by unit code
UNIT_LITRES = {0x29: 1.0, 0x2C: 1000.0}
# the 901F answer: DI (2) + SER (1) + current (5) + settlement (5) + time (7) + status (2)
READ_DATA_LENGTH = 22
HEADER = 11  # 68 T A0..A6 C L
MAX_WAKE = 16  # FE bytes tolerated before the start byte
_HEX_DIGITS = frozenset(b"0123456789ABCDEFabcdef")


class StatusBits(enum.Enum):
    """How the first status byte numbers its bits."""

    STANDARD = "standard"  # D0-D1 valve (00 open, 01 closed, 11 abnormal), D2 battery low
    MSB_FIRST = "msb"  # D7-D6 valve, D5 battery low (as some concentrators read it)


@dataclass(frozen=True, slots=True)
class Cjt188Reading:
    """What one meter's answer to 901F says."""

    layout: str  # "2004" (DI 90 1F) or "2018" (DI 1F 90)
    meter_type: int
    address: str  # 14 BCD digits, A6 first: the meter's id as printed on it
    total_l: float
    settlement_l: float
    meter_time: datetime | None  # the meter's clock, naive (it says no zone); None if unset
    valve: str  # "open", "closed" or "abnormal"
    battery_low: bool


def frame_bytes(payload: bytes) -> bytes:
    """The frame's bytes, from binary or from hex text (`FE FE 68 10 ...`, any spacing).

    A binary frame starts with FE or 68, neither of which is an ASCII hex digit, so the first
    byte tells the two apart.
    """
    if payload and payload[0] in _HEX_DIGITS:
        try:
            return bytes.fromhex(payload.decode("ascii"))  # skips ASCII whitespace itself
        except ValueError as exc:
            raise PayloadError(reasons.BAD_FRAME, f"hex text that is not whole bytes: {exc}") from exc
    return payload


def decode_frame(payload: bytes, *, status_bits: StatusBits = StatusBits.STANDARD) -> Cjt188Reading:
    """One meter's 901F answer, checked byte by byte; raises `PayloadError` with a reason."""
    data = frame_bytes(payload)
    start = 0
    while start < len(data) and data[start] == WAKE:
        start += 1
    if start > MAX_WAKE:
        raise PayloadError(reasons.BAD_FRAME, f"{start} FE wake-up bytes (at most {MAX_WAKE})")
    frame = data[start:]
    if len(frame) < HEADER + 2:
        raise PayloadError(reasons.BAD_FRAME, f"{len(frame)} bytes is too short for a frame")
    if frame[0] != START:
        raise PayloadError(reasons.BAD_FRAME, f"starts with {frame[0]:02X}, not 68")
    length = frame[10]
    if len(frame) != HEADER + length + 2:
        raise PayloadError(
            reasons.BAD_FRAME,
            f"length byte says {length} data bytes, the frame holds {len(frame) - HEADER - 2}",
        )
    if frame[-1] != END:
        raise PayloadError(reasons.BAD_FRAME, f"ends with {frame[-1]:02X}, not 16")
    checksum = sum(frame[:-2]) & 0xFF
    if checksum != frame[-2]:
        raise PayloadError(reasons.BAD_CHECKSUM, f"checksum {frame[-2]:02X}, the bytes sum to {checksum:02X}")
    meter_type = frame[1]
    if meter_type not in WATER_TYPES:
        raise PayloadError(reasons.BAD_VALUE, f"meter type {meter_type:02X} is not a water meter (10-19)")
    address = _bcd_digits(frame[2:9][::-1], "address")
    control = frame[9]
    if control != READ_ANSWER:
        detail = "an error answer" if control & 0x40 else "not a meter's answer to read data"
        raise PayloadError(reasons.BAD_FRAME, f"control code {control:02X}: {detail}")
    body = frame[HEADER : HEADER + length]
    di = body[:2]
    if di == DI_2004:
        layout = "2004"
    elif di == DI_2018:
        layout = "2018"
    else:
        raise PayloadError(reasons.BAD_FRAME, f"data identifier {di.hex().upper()} is not 901F")
    if length != READ_DATA_LENGTH:
        raise PayloadError(
            reasons.BAD_FRAME, f"a 901F answer has {READ_DATA_LENGTH} data bytes, not {length}"
        )
    total_l = _volume(body[3:8], "current flow")
    settlement_l = _volume(body[8:13], "settlement flow")
    meter_time = _meter_time(body[13:20])
    status = body[20]
    if status_bits is StatusBits.STANDARD:
        valve_bits, battery_low = status & 0x03, bool(status & 0x04)
    else:
        valve_bits, battery_low = (status >> 6) & 0x03, bool(status & 0x20)
    valve = {0: "open", 1: "closed", 3: "abnormal"}.get(valve_bits, "abnormal")
    return Cjt188Reading(layout, meter_type, address, total_l, settlement_l, meter_time, valve, battery_low)


def _bcd_digits(raw: bytes, what: str) -> str:
    """The decimal digits of BCD bytes (most significant first); a nibble over 9 is refused."""
    text = raw.hex()
    if not text.isdigit():
        raise PayloadError(reasons.BAD_VALUE, f"{what} {raw.hex().upper()} has a digit that is not BCD")
    return text


def _volume(raw: bytes, what: str) -> float:
    """4 BCD bytes low byte first with two decimals, then the unit code, as litres."""
    digits = _bcd_digits(raw[3::-1], what)
    unit = raw[4]
    litres_per = UNIT_LITRES.get(unit)
    if litres_per is None:
        raise PayloadError(reasons.BAD_VALUE, f"{what} unit code {unit:02X} (29 = L, 2C = m3)")
    return int(digits) / 100 * litres_per


def _meter_time(raw: bytes) -> datetime | None:
    """ss mm hh DD MM YY YY in BCD; all zeros (a meter without a clock) is None."""
    if not any(raw):
        return None
    d = _bcd_digits(raw[::-1], "meter time")  # YYYYMMDDhhmmss
    try:
        return datetime(int(d[:4]), int(d[4:6]), int(d[6:8]), int(d[8:10]), int(d[10:12]), int(d[12:]))
    except ValueError as exc:
        raise PayloadError(reasons.BAD_TIMESTAMP, f"meter time {d}: {exc}") from exc
