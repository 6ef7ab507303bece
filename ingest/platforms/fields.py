"""From what a platform decoded to a LoveKey reading: the source's field map.

A platform's decoded values carry the names the meter's vendor chose (CTWing serviceData
`cumulativeFlow`, a OneNET data stream `water_total`, Huawei service data `flow`). A
source maps LoveKey's reading fields onto them in its `options` (docs/sources/):

    options = { total_m3 = "cumulativeFlow", battery_v = "batteryVoltage" }

A field not mapped is looked up under its own name, so a OneNET data stream named
`total_m3` needs no map. Values may be JSON numbers or numbers written as strings (Huawei
profiles often use strings). The row is then checked exactly as the native codec checks
a reading (`reading_from_row`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lovekey.errors import PayloadError
from lovekey.ingest import reasons
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.codecs.reading import reading_from_row
from lovekey.ingest.decoded import Reading
from lovekey.ingest.platforms import Report

# LoveKey's reading fields a platform value can fill
READING_FIELDS = ("total_l", "total_m3", "flow_lpm", "battery_v", "gas_lel_pct", "smoke", "temperature_c")


def field_map(options: Mapping[str, Any]) -> dict[str, str]:
    """LoveKey field -> the platform's name for it, from a source's `options`."""
    names = {name: name for name in READING_FIELDS}
    for name in READING_FIELDS:
        given = options.get(name)
        if given is not None:
            if not isinstance(given, str) or not given:
                raise ValueError(f"options.{name} must name the platform's field, got {given!r}")
            names[name] = given
    return names


def reading(report: Report, names: Mapping[str, str], context: DecodeContext) -> Reading:
    """The reading a report's decoded values make, or `unmapped` when they hold none."""
    values = report.values or {}
    row: dict[str, Any] = {"ts": report.ts.timestamp()}
    for name, platform_name in names.items():
        value = values.get(platform_name)
        if value is None:
            continue
        if isinstance(value, str):
            written = value
            try:
                value = float(written)
            except ValueError:
                detail = f"{platform_name} ({name}) is not a number: {written[:40]!r}"
                raise PayloadError(reasons.BAD_VALUE, detail) from None
        row[name] = value
    if len(row) == 1:
        wanted = ", ".join(sorted(set(names.values())))
        have = ", ".join(sorted(str(k)[:40] for k in values)[:10]) or "nothing"
        raise PayloadError(reasons.UNMAPPED, f"none of {wanted} in the report (it has {have})")
    return reading_from_row(row, context)
