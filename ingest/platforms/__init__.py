"""What the NB-IoT carrier platforms push over HTTP, read without I/O.

Each platform module turns one request into a `Push`: the `Report`s it carries (one device,
one time, the values as the platform decoded them or the bytes it did not) and how many
parts it carried that hold no reading (command results, lifecycle notices). A request that
cannot be read, or whose signature is wrong, raises `PayloadError`. Nothing here knows
the registry, the database or the clock: `now` bounds the timestamps and is an argument.

- `ctwing`: China Telecom CTWing/AEP subscription pushes (`messageType: dataReport`, ...).
- `onenet`: China Mobile OneNET HTTP push (URL handshake, signed plain and AES messages).
- `huawei`: Huawei OceanConnect notifications (`notifyType: deviceDataChanged`, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Report:
    """One thing a platform says about one device at one time.

    `external_ids` are the names the platform gives the device, best first (CTWing: the
    IMEI, then its own deviceId); the first is the one the registry's `external_id` must
    hold (the others are what the push also says, for a person reading it).
    `values` are fields the platform decoded (CTWing serviceData, a OneNET data point,
    Huawei service data); `raw` the bytes it did not (CTWing `APPdata`); `online` a
    device's online (True) or offline (False) notice; `model` the platform's product (CTWing
    `productId`), which picks the payload decoder of `raw`.
    """

    external_ids: tuple[str, ...]
    ts: datetime
    values: Mapping[str, Any] | None = None
    raw: bytes | None = None
    online: bool | None = None
    model: str | None = None  # the product or model the platform files the device under


@dataclass(frozen=True, slots=True)
class Push:
    """Everything one request carried."""

    reports: tuple[Report, ...] = ()
    ignored: int = 0  # parts that hold no reading (acknowledged, counted, not stored)
    reply: bytes | None = None  # a body the platform expects back (OneNET's handshake)
    notes: tuple[str, ...] = field(default=())  # why parts were ignored, for the debug log
