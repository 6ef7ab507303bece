"""Residents and their meters, as index arrays. Pure.

The water rules judge meters; alerts are about residents. A resident is quiet when all their
meters are and has a running tap when any one does. This module holds the mapping between
the two and turns per-resident arrays into per-meter ones (`to_meters`) and meter verdicts
into resident ones (`by_resident`). Nearly every district has exactly one meter per resident,
so both directions are a gather (or nothing at all when meter i is resident i); counting is
only done where a resident has several meters.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lovekey.detectors.ring import NEVER

I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]


class ResidentMeters:
    """Meter i belongs to resident `resident_of[i]` (-1: nobody); fixed at construction."""

    def __init__(self, resident_of: I64, residents: int) -> None:
        meters = resident_of.size
        self.resident_of = resident_of
        self.residents = residents
        self.has_resident = resident_of >= 0
        self.resident = np.where(self.has_resident, resident_of, 0)  # 0 for meters of nobody
        self.of_owned = resident_of[self.has_resident]  # resident of each owned meter
        self.meters_of_resident = np.bincount(self.of_owned, minlength=residents)
        self.single_meter = bool(self.meters_of_resident.max(initial=0) <= 1)
        self.rep_meter = np.zeros(residents, np.int64)  # a meter of each resident
        self.rep_meter[self.of_owned] = np.flatnonzero(self.has_resident)
        # exactly one meter per resident: resident masks are a gather (empty: the identity)
        self._one_each: I64 | None = None
        if bool((self.meters_of_resident == 1).all()):
            identity = residents == meters and bool((resident_of == np.arange(meters)).all())
            self._one_each = np.empty(0, np.int64) if identity else self.rep_meter

    def to_meters(self, per_resident: npt.NDArray[Any], fill: Any) -> npt.NDArray[Any]:
        """A per-resident array seen per meter (`fill` for meters of nobody)."""
        if self._one_each is not None and self._one_each.size == 0:
            return per_resident  # meter i is resident i
        out = per_resident[self.resident]
        out[~self.has_resident] = fill
        return out

    def latest(self, per_meter: I64) -> I64:
        """The newest of each resident's meters' times (NEVER for a resident with none)."""
        out = np.full(self.residents, NEVER, np.int64)
        np.maximum.at(out, self.of_owned, per_meter[self.has_resident])
        return out

    def by_resident(
        self, cond: BOOL, clear: BOOL, hold: BOOL, since: I64, how: Literal["all", "any"]
    ) -> tuple[BOOL, BOOL, BOOL, I64, I64]:
        """Meter masks to resident masks: 'all' meters quiet, or 'any' meter running.

        Returns the resident's raise, clear and hold masks, the time the condition began and
        the meter whose evidence a raised alert reports.
        """
        ok, r = self.has_resident, self.of_owned
        n_res = self.residents
        if self._one_each is not None:  # the usual case: one meter per resident, a gather
            take = self._one_each
            if take.size == 0:  # meter i is resident i
                return cond, clear, hold, since, self.rep_meter
            return cond[take], clear[take], hold[take], since[take], self.rep_meter
        if self.single_meter:  # at most one meter each: a scatter, no counting
            out = []
            for mask in (cond, clear, hold):
                per = np.zeros(n_res, np.bool_)
                per[r] = mask[ok]
                out.append(per)
            since_r = np.full(n_res, NEVER, np.int64)
            since_r[r] = since[ok]
            return out[0], out[1], out[2], since_r, self.rep_meter
        total = self.meters_of_resident

        def count(mask: BOOL) -> npt.NDArray[np.float64]:
            counted = np.bincount(r, weights=mask[ok], minlength=n_res)
            return counted.astype(np.float64)

        hold_r = count(hold) > 0
        if how == "all":
            cond_r = (total > 0) & (count(cond) == total)
            clear_r = count(clear) > 0
            since_r = np.full(n_res, NEVER, np.int64)
            np.maximum.at(since_r, r, since[ok])
        else:
            cond_r = count(cond) > 0
            clear_r = (total > 0) & (count(clear) == total)
            since_r = np.full(n_res, np.iinfo(np.int64).max, np.int64)
            sel = ok & cond
            np.minimum.at(since_r, self.resident_of[sel], since[sel])
        rep = self.rep_meter.copy()
        sel_idx = np.flatnonzero(ok & cond)
        rep[self.resident_of[sel_idx]] = sel_idx
        return cond_r, clear_r, hold_r, since_r, rep
