"""Per meter, the end of the newest bucket of each kind, kept up to date as buckets complete.

The rules read runs instead of scanning the ring: a running tap's run is `horizon - last calm
bucket`, a leak's `horizon - last dry hour`, the dry run `horizon - last used bucket`, each
O(meters) per sweep whatever the ring's length.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lovekey.detectors.params import MeterParams
from lovekey.detectors.ring import NEVER, Completed

I64 = npt.NDArray[np.int64]


class Runs:
    """Per meter, the end of the newest bucket of each kind, kept up to date as buckets complete.

    The run of a rule is `horizon - last end of the bucket that breaks it`: e.g. a running
    tap's run is broken by the last bucket below the rate (or unknown, or too coarse).
    """

    def __init__(self, meters: int) -> None:
        self.last_use_end = np.full(meters, NEVER, dtype=np.int64)
        self.last_flow_end = np.full(meters, NEVER, dtype=np.int64)  # at or above the tap rate
        self.last_calm_end = np.full(meters, NEVER, dtype=np.int64)  # below it, or unknown
        self.last_wet_end = np.full(meters, NEVER, dtype=np.int64)  # flow within the hour
        self.last_dry_end = np.full(meters, NEVER, dtype=np.int64)  # a dry hour, or unknown
        self.last_still_end = np.full(meters, NEVER, dtype=np.int64)  # a dry hour, known

    def reset(self, meters: I64) -> None:
        for arr in (
            self.last_use_end,
            self.last_flow_end,
            self.last_calm_end,
            self.last_wet_end,
            self.last_dry_end,
            self.last_still_end,
        ):
            arr[meters] = NEVER

    def observe(
        self,
        done: Completed,
        params: MeterParams,
        *,
        bucket_s: int,
        dry_l: float,
        baseline_l: npt.NDArray[np.float32] | None = None,
    ) -> None:
        if len(done) == 0:
            return
        m = done.meter
        end = (done.bucket + 1) * bucket_s
        known = ~np.isnan(done.usage_l)
        use = done.used
        usage = done.usage_l
        if baseline_l is not None and baseline_l.any():  # net of a known leak
            usage = usage - baseline_l[m]
        flow = known & ~done.coarse & (usage >= params.tap_min_l[m])
        measured = ~np.isnan(done.hour_l) & ~done.coarse
        wet = measured & (done.hour_l > dry_l)
        # maximum.at over the whole (meter-ordered) arrays is several times faster than over
        # masked copies; entries that do not count carry NEVER
        for target, mask in (
            (self.last_use_end, use),
            (self.last_flow_end, flow),
            (self.last_calm_end, ~flow),
            (self.last_wet_end, wet),
            (self.last_dry_end, ~wet),
            (self.last_still_end, measured & ~wet),
        ):
            if mask.any():
                np.maximum.at(target, m, np.where(mask, end, NEVER))
