"""Per-meter rule thresholds: settings defaults, then community overrides, then resident ones.

Overrides live in `community.rules` / `resident.rules` (jsonb) under a `"detect"` key, with
the names of `DetectSettings` fields, e.g. `{"detect": {"low_usage_min_l": 5}}`. Only the
fields in `OVERRIDABLE` may be overridden; anything else is reported, never guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lovekey.config import DetectSettings

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

OVERRIDABLE: dict[str, type] = {
    "low_usage_min_l": float,
    "low_usage_window_h": float,
    "low_usage_clear_l": float,
    "running_tap_min_lpm": float,
    "running_tap_limit_h": float,
    "leak_limit_h": float,
    "routine_enabled": bool,
    "routine_margin_min": float,
    "routine_check_in_mobile": bool,
}


@dataclass(frozen=True, slots=True)
class MeterParams:
    """One array per threshold, one entry per meter (seconds and litres)."""

    low_min_l: F64
    low_window_s: I64  # a whole number of buckets
    low_clear_l: F64
    tap_min_l: F64  # litres per bucket for running_tap (rate x bucket)
    tap_limit_s: I64
    leak_limit_s: I64
    routine_enabled: BOOL
    routine_margin_b: I64  # buckets
    check_in_mobile: BOOL  # asked on routine_check_in_schedule_mobile_h (where it is set)
    silent_after_s: I64  # report interval plus grace
    report_interval_s: I64

    @property
    def meters(self) -> int:
        return int(self.low_min_l.size)


def effective_rules(
    settings: DetectSettings,
    community_rules: Mapping[str, Any] | None,
    resident_rules: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], list[str]]:
    """The overridable values for one resident, and problems found in their rules."""
    values: dict[str, Any] = {name: getattr(settings, name) for name in OVERRIDABLE}
    problems: list[str] = []
    for source, rules in (("community", community_rules), ("resident", resident_rules)):
        detect = (rules or {}).get("detect") or {}
        if not isinstance(detect, Mapping):
            problems.append(f"{source} rules: 'detect' is not an object")
            continue
        for name, value in detect.items():
            kind = OVERRIDABLE.get(name)
            if kind is None:
                problems.append(f"{source} rules: {name!r} cannot be overridden")
            elif kind is bool and isinstance(value, bool):
                values[name] = value
            elif kind is float and isinstance(value, int | float) and not isinstance(value, bool):
                if value < 0:
                    problems.append(f"{source} rules: {name} must not be negative")
                else:
                    values[name] = float(value)
            else:
                problems.append(f"{source} rules: {name} must be a {kind.__name__}")
    return values, problems


def build_params(
    settings: DetectSettings,
    rules: Sequence[Mapping[str, Any]],
    report_interval_s: Sequence[int | None],
) -> MeterParams:
    """Arrays for `len(rules)` meters from each meter's effective rules (see above)."""
    columns = {
        name: np.array([r[name] for r in rules], dtype=np.bool_ if kind is bool else np.float64)
        for name, kind in OVERRIDABLE.items()
    }
    interval = np.array(
        [settings.default_report_interval_s if v is None else v for v in report_interval_s],
        dtype=np.int64,
    )
    return _from_columns(settings, columns, interval)


def uniform_params(
    settings: DetectSettings, meters: int, report_interval_s: int | None = None
) -> MeterParams:
    """The defaults for every meter (benchmarks, tests)."""
    defaults, _ = effective_rules(settings, None, None)
    columns = {name: np.full(meters, value) for name, value in defaults.items()}
    interval = np.full(meters, report_interval_s or settings.default_report_interval_s)
    return _from_columns(settings, columns, interval.astype(np.int64))


def _from_columns(
    settings: DetectSettings, col: Mapping[str, npt.NDArray[Any]], interval_s: I64
) -> MeterParams:
    bucket_s = settings.bucket_minutes * 60

    def whole_buckets(hours: npt.NDArray[Any]) -> I64:
        buckets = np.maximum(np.round(hours.astype(np.float64) * 3600 / bucket_s), 1)
        out: I64 = buckets.astype(np.int64) * bucket_s
        return out

    grace = np.maximum(settings.silent_grace_s, settings.silent_grace_fraction * interval_s)
    return MeterParams(
        low_min_l=col["low_usage_min_l"].astype(np.float64),
        low_window_s=whole_buckets(col["low_usage_window_h"]),
        # clearing must need clearly more than raising, whatever the overrides say
        low_clear_l=np.maximum(col["low_usage_clear_l"], 1.5 * col["low_usage_min_l"]).astype(np.float64),
        tap_min_l=col["running_tap_min_lpm"].astype(np.float64) * bucket_s / 60.0,
        tap_limit_s=whole_buckets(col["running_tap_limit_h"]),
        leak_limit_s=whole_buckets(col["leak_limit_h"]),
        routine_enabled=col["routine_enabled"].astype(np.bool_),
        routine_margin_b=np.round(col["routine_margin_min"] * 60.0 / bucket_s).astype(np.int64),
        check_in_mobile=col["routine_check_in_mobile"].astype(np.bool_),
        silent_after_s=(interval_s + grace).astype(np.int64),
        report_interval_s=interval_s.astype(np.int64),
    )
