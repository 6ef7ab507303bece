"""The six detector rules, one pure function each, over one frozen `SweepInput`.

`Detector.sweep` gathers what a sweep sees into a `SweepInput` (the meters' horizons and
runs, the ring's window litres, the routine profile's tables, the thresholds), calls the
rules and applies hysteresis to their answers. A rule reads only its input and returns a
`Verdict`: per subject, whether the alert condition holds, whether the subject has clearly
recovered, and since when the condition holds. No rule writes to its input, reads a clock or
touches the ring: what a rule decides is a function of the arrays it is given.

The subjects are meters for the water rules (`Detector` turns them into residents) and
gateways for `gateway_offline`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from lovekey.config import DetectSettings
from lovekey.detectors.params import MeterParams
from lovekey.detectors.ring import NEVER

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
BOOL = npt.NDArray[np.bool_]

# a gateway is inferred offline when all of its meters are silent, if it has at least this many
GATEWAY_INFERENCE_MIN_METERS = 2


@dataclass(frozen=True, slots=True)
class SweepInput:
    """Everything one sweep's rules read: one entry per meter unless said otherwise.

    Times are epoch seconds at bucket boundaries; `_b` counts buckets. Arrays named "over
    `quiet_sel`" hold values only for the meters a quiet rule may fire for (see
    `Detector.quiet_subset_share`): the ring's window is read for those alone.
    """

    now_s: int
    bucket_s: int
    settings: DetectSettings  # the thresholds every meter shares
    params: MeterParams  # the per-meter thresholds
    horizon_s: I64  # end of the newest complete bucket: rules judge data up to here
    known_start_s: I64  # data is complete from here on
    monitor_from_s: I64  # monitoring runs from here (the end of the last absence)
    last_arrival_s: I64  # when data last arrived
    # per meter, the end of the newest bucket of each kind (`runs.Runs`)
    last_use_end_s: I64
    last_flow_end_s: I64
    last_calm_end_s: I64
    last_wet_end_s: I64
    last_dry_end_s: I64
    leak_baseline_l: F32  # a known leak's flow per bucket, netted out of the window
    flow_buckets: int  # buckets in the ring's flow window (an hour)
    # how far behind `now` a meter's data may be for a running tap or a leak to be current
    tap_lag_s: I64
    leak_lag_s: I64
    # the dry run: since water was last used (or since data / monitoring began)
    dry_from_s: I64
    dry_b: I64
    routine_limit_b: npt.NDArray[np.uint8]  # the resident's own limit where the horizon ends
    over_routine_limit: BOOL  # dry_b > routine_limit_b
    # the quiet rules' window, computed for `quiet_sel` only
    quiet_sel: I64 | slice
    window_usage_l: F32  # over `quiet_sel`: litres used in the window; NaN unless known
    horizon_cell: I64  # per meter, its cell in the slot-major profile tables
    dry_start_slot: I64  # over `quiet_sel`: the profile slot each dry run began in
    # the routine profile's tables (slot-major: slots x meters; groups x slots)
    low_threshold_b: npt.NDArray[np.uint16]
    allowance_b: npt.NDArray[np.int16]
    low_allowance_b: npt.NDArray[np.int16]
    profile_group: I64
    profile_slots: int
    # the floor (issue 17): the meters it applies to and the field rule's window over them
    floor_sel: I64
    floor_usage_l: F32
    # routine_break's check-in tier: the district's allowance at its own quantile (0: none)
    early_allowance_b: npt.NDArray[np.int16]
    # routine_break's check-in tier: the longest dry run (buckets) at which this meter's
    # resident answered "fine" at this quarter of the day; the tier waits for a longer one
    answered_dry_b: I64
    # routine_break's open alerts: their meters, and per such meter the evidence time at the
    # raise and the litres used since then
    routine_open_meters: I64
    routine_raised_at_s: I64
    routine_used_since_l: F32
    # gateways
    gateway_of: I64
    gateway_judges: BOOL  # meters that report often enough to tell a gateway is down
    gateway_judge_count: I64  # per gateway
    gateway_judge_quiet_s: I64  # a judge is quiet after this long without data
    gateway_status_since_s: I64 | None  # per gateway: `offline` by its own word since
    # the door reminder: per meter, its household has one that works (it sensed someone within
    # `door_alive_h`) and no passage was seen since the last water use (home and silent:
    # routine_break's check-in tier may ask sooner, against `home_allowance_b`, groups x
    # slots); and one was seen with no water since (probably out). None: no household has one
    home_silent: BOOL | None = None
    door_out: BOOL | None = None
    home_allowance_b: npt.NDArray[np.int16] = field(default_factory=lambda: np.zeros((1, 1), np.int16))
    # per meter: its resident has a learned pattern (`routine_min_days`); set only when
    # routine_break's check-in tier judges the district alone (`routine_check_in_own` off)
    learned: BOOL | None = None
    # per meter: its resident is asked on the mobile rows of `early_allowance_b` (its second
    # half); None: the table has one half, for everyone
    early_mobile: BOOL | None = None
    # low_usage's dry run and, over `quiet_sel`, the slot it began in, on water alone, where
    # a door reminder may have put `dry_b` off: its check-in tier judges these
    # (`door_delays_low_usage` off); None: `dry_b` alone
    low_dry_b: I64 | None = None
    low_dry_start_slot: I64 | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A rule's answer per subject. Where `raise_when` and `clear_when` both hold the
    evidence contradicts itself and hysteresis holds the state (`hysteresis.RuleState`)."""

    raise_when: BOOL
    clear_when: BOOL
    since_s: I64  # when the condition began; read only where it is raised
    hold: BOOL | None = None  # nothing can be said for these subjects now
    used_l: npt.NDArray[np.floating[Any]] | None = None  # low_usage: litres in the window
    # the check-in tier: the condition on which the resident alone is asked first (`raise_when`
    # wakes the neighbour); None: the rule has one tier
    early_when: BOOL | None = None


# -- silence ------------------------------------------------------------------------------


def gateway_offline(inp: SweepInput) -> Verdict:
    """Offline by its own word (status `offline` for longer than a grace), or because every
    meter on it that reports at least hourly has gone quiet at once (a single late meter is
    its own business; all of them together is the gateway). Per gateway; `since_s` is
    `newest_data_by_gateway`, computed only when something changes."""
    gateways = inp.gateway_judge_count.size
    quiet = inp.gateway_judges & ((inp.now_s - inp.last_arrival_s) > inp.gateway_judge_quiet_s)
    quiet_count = np.bincount(inp.gateway_of[quiet], minlength=gateways)
    judge_count = inp.gateway_judge_count
    offline = (judge_count >= GATEWAY_INFERENCE_MIN_METERS) & (quiet_count == judge_count)
    status_since = inp.gateway_status_since_s
    if status_since is not None:
        offline = offline | (
            (status_since != NEVER) & (inp.now_s - status_since >= inp.settings.gateway_grace_s)
        )
    return Verdict(offline, ~offline, np.empty(0, np.int64))


def newest_data_by_gateway(inp: SweepInput) -> I64:
    """Per gateway, when its offline alert began: its own `offline` status if it sent one,
    else the newest data through it."""
    last_g = np.full(inp.gateway_judge_count.size, NEVER, np.int64)
    np.maximum.at(last_g, inp.gateway_of, inp.last_arrival_s)
    if inp.gateway_status_since_s is not None:
        last_g = np.where(inp.gateway_status_since_s != NEVER, inp.gateway_status_since_s, last_g)
    return last_g


def meter_silent(inp: SweepInput, gateway_offline_m: BOOL) -> Verdict:
    """No data for longer than the meter's reporting interval plus grace, judged against
    `now`, not the horizon. A meter of an offline gateway is the gateway's alert, not its own:
    it is held, neither raised nor cleared."""
    silent = (inp.now_s - inp.last_arrival_s) > inp.params.silent_after_s
    return Verdict(silent & ~gateway_offline_m, ~silent, inp.last_arrival_s, hold=gateway_offline_m & silent)


# -- the quiet rules ----------------------------------------------------------------------


def low_usage(inp: SweepInput) -> Verdict:
    """Less than `low_min_l` in the last window of known data, after a dry run longer than
    the resident's own quiet stretches at this time of day (and the district's)."""
    sel, bs, p, st = inp.quiet_sel, inp.bucket_s, inp.params, inp.settings
    size = inp.horizon_s.size
    hz_s, window_s = inp.horizon_s[sel], p.low_window_s[sel]
    win_start = hz_s - window_s
    # float32, compared with the float64 limits exactly as it is
    used_s: npt.NDArray[np.floating[Any]] = inp.window_usage_l
    if inp.leak_baseline_l.any():  # net of a leak's flow
        used_s = used_s.astype(np.float64) - inp.leak_baseline_l[sel] * (window_s // bs)
    # the limit is the longest of: low_usage's minimum, the resident's own learned quiet
    # stretch ending here, and the district's for dry runs starting when this one did
    # (capped, so that a district of long days out cannot hide a real incident)
    min_dry_b = int(st.low_usage_min_dry_h * 3600) // bs
    own_limit = inp.low_threshold_b.reshape(-1).take(inp.horizon_cell[sel]).astype(np.int32)
    np.maximum(own_limit, min_dry_b, out=own_limit)

    def long_enough(dry_b: I64, start_slot: I64 | None) -> BOOL:
        limit = own_limit
        if inp.low_allowance_b.any():
            district = inp.low_allowance_b.reshape(-1).take(_allowance_cell(inp, start_slot)).astype(np.int32)
            np.minimum(district, int(st.low_usage_cap_h * 3600) // bs, out=district)
            limit = np.maximum(own_limit, district)
        over: BOOL = dry_b[sel] >= limit
        return over

    known = ~np.isnan(used_s)
    # a window reaching back before monitoring began (an absence) says nothing yet
    low = known & (win_start >= inp.monitor_from_s[sel]) & (used_s < p.low_min_l[sel])
    # the neighbour tier counts the dry run as routine_break does (from after a passage out)
    raise_when = _spread(low & long_enough(inp.dry_b, None), sel, size, False)
    clear_when = _spread(known & (used_s >= p.low_clear_l[sel]), sel, size, False)
    used_l = _spread(used_s, sel, size, np.nan)
    early_when = floor(inp)
    if inp.low_dry_b is not None:
        # ... and where a passage put it off, the resident is asked on water alone: a draught
        # at the door while they lie on the floor does not keep the net from them
        water = long_enough(inp.low_dry_b, inp.low_dry_start_slot)
        early_when |= _spread(low & water, sel, size, False)
    if early_when.any():  # the floor's window litres, for what the check-in says
        used_l = used_l.astype(np.float64)
        mine = used_l[inp.floor_sel]
        used_l[inp.floor_sel] = np.where(np.isnan(mine), inp.floor_usage_l, mine)
    # when the low use began: only ever read where low_usage is raised, so only computed then
    if raise_when.any() or early_when.any():
        since = np.minimum(np.maximum(inp.last_use_end_s, inp.known_start_s), inp.horizon_s)
    else:
        since = inp.horizon_s
    return Verdict(raise_when, clear_when, since, used_l=used_l, early_when=early_when | raise_when)


def floor(inp: SweepInput) -> BOOL:
    """The plain field rule, for the meters whose ordinary days never trip it (`floor_sel`):
    less than `low_min_l` in the last window of known data, after monitoring began. It fires
    exactly when the field rule would; its answer is the check-in tier of `low_usage`."""
    sel, p = inp.floor_sel, inp.params
    out = np.zeros(inp.horizon_s.size, np.bool_)
    if not sel.size:
        return out
    window_s = p.low_window_s[sel]
    used: npt.NDArray[np.floating[Any]] = inp.floor_usage_l
    if inp.leak_baseline_l.any():  # net of a leak's flow, as low_usage
        used = used.astype(np.float64) - inp.leak_baseline_l[sel] * (window_s // inp.bucket_s)
    win_start = inp.horizon_s[sel] - window_s
    out[sel] = ~np.isnan(used) & (win_start >= inp.monitor_from_s[sel]) & (used < p.low_min_l[sel])
    return out


def routine_break(inp: SweepInput) -> Verdict:
    """A dry run longer than the resident's own normal at this time of day, and than the
    district's dry runs starting at that time of day may last. Not while a leak is being
    netted out: the pattern was learned through the leak. Clears once the resident has used
    `routine_clear_l` since the alert rose."""
    own = inp.params.routine_enabled & inp.over_routine_limit & (inp.leak_baseline_l == 0)
    cond = own
    if inp.allowance_b.any():
        beyond = inp.dry_b[inp.quiet_sel] > inp.allowance_b.reshape(-1).take(_allowance_cell(inp))
        cond = own & _spread(beyond, inp.quiet_sel, inp.horizon_s.size, False)
    # the check-in tier: the same, against the district at its own (lower) quantile
    early = own if inp.settings.routine_check_in_enabled else cond
    # over the resident's own pattern; or (routine_check_in_own off) the district alone, for
    # a resident with a learned pattern (enough days), at any time of day
    mine = own
    if not inp.settings.routine_check_in_own and inp.learned is not None:
        mine = inp.params.routine_enabled & inp.learned & (inp.leak_baseline_l == 0)
    if inp.settings.routine_check_in_enabled and inp.early_allowance_b.any():
        cell = _allowance_cell(inp)
        if inp.early_mobile is not None:  # the mobile schedule: the table's second half
            cell = cell + inp.early_mobile[inp.quiet_sel] * (inp.early_allowance_b.size // 2)
        beyond = inp.dry_b[inp.quiet_sel] > inp.early_allowance_b.reshape(-1).take(cell)
        early = mine & _spread(beyond, inp.quiet_sel, inp.horizon_s.size, False)
    if inp.settings.routine_check_in_enabled and inp.home_silent is not None and inp.home_allowance_b.any():
        # home and silent (a working door reminder, no passage since the last use): asked
        # sooner, judged as the check-in tier judges
        beyond = inp.dry_b[inp.quiet_sel] > inp.home_allowance_b.reshape(-1).take(_allowance_cell(inp))
        early = early | (mine & inp.home_silent & _spread(beyond, inp.quiet_sel, inp.horizon_s.size, False))
    if inp.door_out is not None and not inp.settings.door_out_check_in:
        # seen going out, no water since: not asked; the neighbour tier alone decides
        early = early & ~inp.door_out
    recovered = np.zeros(inp.horizon_s.size, np.bool_)
    meters = inp.routine_open_meters
    if meters.size:
        # water used after the raise, and enough of it (unknown litres do not hold it open)
        used_after = inp.last_use_end_s[meters] > inp.routine_raised_at_s
        recovered[meters] = used_after & ~(inp.routine_used_since_l < inp.settings.routine_clear_l)
    early = early & (inp.dry_b > inp.answered_dry_b)
    return Verdict(cond, recovered, inp.dry_from_s, early_when=early | cond)


# -- the flow rules -----------------------------------------------------------------------
# A run counts only when its newest bucket was seen to flow (buckets older than the ring are
# never seen: a backlog from days ago is no run at all), and only on data recent enough to be
# happening now: a meter's data may lag by its reporting interval, but flow that ended longer
# ago than the rule's own limit is history.


def running_tap(inp: SweepInput) -> Verdict:
    """Every bucket at or above the tap rate for `tap_limit`; clears after
    `running_tap_clear_min` below it."""
    hz = inp.horizon_s
    tap_from = np.maximum(inp.last_calm_end_s, inp.known_start_s)
    cond = (
        ((hz - tap_from) >= inp.params.tap_limit_s)
        & (inp.last_flow_end_s >= hz)
        & ((inp.now_s - hz) <= inp.tap_lag_s)
    )
    clear = (hz - inp.last_flow_end_s) >= int(inp.settings.running_tap_clear_min * 60)
    return Verdict(cond, clear, tap_from)


def leak(inp: SweepInput) -> Verdict:
    """No dry hour for `leak_limit`; clears `leak_clear_h` after the flow stopped."""
    hz, bs = inp.horizon_s, inp.bucket_s
    leak_from = np.maximum(inp.last_dry_end_s, inp.known_start_s)
    cond = (
        ((hz - leak_from) >= inp.params.leak_limit_s)
        & (inp.last_wet_end_s >= hz)
        & ((inp.now_s - hz) <= inp.leak_lag_s)
    )
    # the newest dry hour window ends `leak_clear_h` after the flow stopped
    leak_clear_s = max(bs, int(inp.settings.leak_clear_h * 3600) - inp.flow_buckets * bs + bs)
    clear = (hz - inp.last_wet_end_s) >= leak_clear_s
    return Verdict(cond, clear, leak_from)


# -- helpers ------------------------------------------------------------------------------


def _allowance_cell(inp: SweepInput, start_slot: I64 | None = None) -> I64:
    """Over `quiet_sel`: each meter's cell in the district tables (group x the slot its dry
    run began in: `dry_start_slot` unless another start is given)."""
    slot = inp.dry_start_slot if start_slot is None else start_slot
    cell: I64 = inp.profile_group[inp.quiet_sel] * inp.profile_slots + slot
    return cell


def _spread(values: npt.NDArray[Any], sel: I64 | slice, size: int, fill: Any) -> npt.NDArray[Any]:
    """Values computed for the meters `sel` as an array over all meters (`fill` elsewhere);
    for `slice(None)` (every meter) the values themselves."""
    if isinstance(sel, slice):
        return values
    out = np.full(size, fill, dtype=values.dtype)
    out[sel] = values
    return out
