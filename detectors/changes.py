"""What a sweep hands back: one `Change` per alert transition, and the details it carries. Pure.

The details are what the people an alert reaches are told (`alerts/messages.py` renders
them): the evidence of the meter that made the rule fire, in litres and hours, not buckets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from lovekey.detectors.rules import SweepInput, Verdict
from lovekey.vocabulary import AlertKind, AlertTier


@dataclass(frozen=True, slots=True)
class Change:
    """One alert transition: `action` is 'raise', 'clear' or 'escalate' (an open check-in
    alert whose neighbour tier fired: raise it again with tier 'neighbour')."""

    kind: str
    action: str
    subject: str
    resident_id: str | None
    device_id: str | None
    gateway_id: str | None
    since_s: int
    details: dict[str, Any] = field(default_factory=dict)
    reason: str = "condition_cleared"
    tier: str = AlertTier.NEIGHBOUR  # a raise: which tier fired (`alert.tier`)


def water_details(
    kind: str,
    m: int,
    inp: SweepInput,
    verdict: Verdict,
    meter_id: str,
    learned_days: npt.NDArray[np.integer[Any]],
) -> dict[str, Any]:
    """What a raised water alert tells the people it reaches, from meter `m`'s evidence."""
    p, bs = inp.params, inp.bucket_s
    out: dict[str, Any] = {"device_id": meter_id, "data_until": iso(int(inp.horizon_s[m]))}
    if kind == AlertKind.LOW_USAGE and verdict.used_l is not None:
        out |= {
            "used_l": round(float(verdict.used_l[m]), 1),
            "min_l": float(p.low_min_l[m]),
            "window_h": int(p.low_window_s[m]) / 3600,
        }
    elif kind == AlertKind.ROUTINE_BREAK:
        out |= {
            "dry_h": int(inp.dry_b[m]) * bs / 3600,
            "usual_max_h": int(inp.routine_limit_b[m]) * bs / 3600,
            "learned_days": int(learned_days[m]),
        }
    elif kind == AlertKind.RUNNING_TAP:
        out |= {"min_lpm": float(p.tap_min_l[m]) * 60 / bs}
    if kind == AlertKind.ROUTINE_BREAK and inp.door_out is not None and inp.door_out[m]:
        # the door saw the resident pass and no water since: probably out. Unanswered, this
        # check-in does not wake the neighbour (`detect.door_out_holds_neighbour`); the
        # neighbour tier decides
        out["door_out"] = bool(inp.settings.door_out_holds_neighbour)
    return out


def silent_details(last_data_s: int, expected_every_s: int) -> dict[str, Any]:
    """What a raised meter_silent alert tells: when the meter was last heard, how often it should be."""
    return {"last_data_at": iso(last_data_s), "expected_every_s": expected_every_s}


def iso(t_s: int) -> str:
    return datetime.fromtimestamp(t_s, UTC).isoformat()
