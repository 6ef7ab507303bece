"""How fast can *any* dry-run detector be on the simulator, at a given false-alarm rate?

`python -m lovekey.evaluation.bound [--residents 200] [--train-days 1200] [--test-days 300]` simulates
years of ordinary life for each resident (the default routine, with the default rates of day
outs and cleaning days and no other incidents), and builds an oracle: for every resident and
every hour of the day in which a dry run can begin (the bucket after a use), the threshold on
the dry run's length that is best for that resident, chosen on `train_days` of their own life
(far more than the 14-28 days a real detector learns from) and data that arrive at once (no
reporting delay). The choice trades, by a Lagrange weight, incidents caught within 3 hours
against false alarms; a margin added to every threshold trades further. Each point is then
measured on `test_days` held out: false alarms per resident-month, and for no-use incidents
starting at uniform times between 07:00 and 19:00 the median time from the incident's start
to the alert and the share alerted within 3 hours.

Any rule that looks at how long a resident has gone without water, and when that began, is
in this family; LoveKey's rules are. The printed frontier is therefore the best that such a
rule can do on this population, and `docs/detection.md` compares it with the targets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

BUCKET_S = 300
PER_H = 3600 // BUCKET_S
PER_DAY = 24 * PER_H
# a bucket with at least this much is "used": `detect.use_min_l` when the documented bounds
# were measured (now 0.2), kept so they reproduce
USE_MIN_L = 0.5
THRESHOLDS = np.arange(PER_H // 2, 36 * PER_H + 1, PER_H // 4)  # 0.5 h .. 36 h, 15 min steps
NEVER = np.int64(10**12)


def dry_runs(used: BOOL, lo: int, hi: int) -> tuple[I64, I64]:
    """Dry runs of one meter whose anchor (the bucket after a use) lies in [lo, hi): anchors
    and lengths in buckets. A run still going at the end of `used` is not counted."""
    u = np.flatnonzero(used).astype(np.int64)
    anchor = u[:-1] + 1
    length = u[1:] - u[:-1] - 1
    keep = (anchor >= lo) & (anchor < hi) & (length > 0)
    return anchor[keep], length[keep]


def incident_anchors(used: BOOL, starts: I64) -> tuple[I64, I64]:
    """For no-use incidents starting at bucket `starts`: the anchor of the dry run they
    continue (the bucket after the last use before the start) and how long before the start
    that was. Incidents before the meter's first use are left out."""
    u = np.flatnonzero(used).astype(np.int64)
    k = np.searchsorted(u, starts, side="left") - 1
    ok = k >= 0
    anchor = u[k[ok]] + 1
    return anchor, starts[ok] - anchor


def hour_of(anchor: I64) -> I64:
    return (anchor % PER_DAY) // PER_H


@dataclass(frozen=True, slots=True)
class Meter:
    """One resident's dry runs and incidents, split into training and test."""

    train_hour: I64
    train_length: I64
    train_incident_hour: I64
    train_incident_since: I64
    test_hour: I64
    test_length: I64
    test_incident_hour: I64
    test_incident_since: I64
    # for the two-stage design: the test runs' anchors (buckets from the span's start) and,
    # per bucket of the span, whether the resident was out (a day out): a check-in then goes
    # unanswered unless they carry a mobile
    test_anchor: I64 | None = None
    out: BOOL | None = None


def choose(
    meters: list[Meter],
    weight: float,
    *,
    train_incidents: int,
    train_months: float,
    within: int = 3 * PER_H,
) -> I64:
    """Per meter and hour, the threshold (buckets; NEVER = no alert) maximising the share of
    training incidents alerted within `within` minus `weight` x false alarms per month."""
    out = np.full((len(meters), 24), NEVER, dtype=np.int64)
    for m, meter in enumerate(meters):
        for hour in range(24):
            need = meter.train_incident_since[meter.train_incident_hour == hour]
            if need.size == 0:
                continue
            lengths = np.sort(meter.train_length[meter.train_hour == hour])
            false = lengths.size - np.searchsorted(lengths, THRESHOLDS, side="left")
            caught = (need[:, None] + within >= THRESHOLDS[None, :]).sum(axis=0)
            score = caught / train_incidents - weight * false / train_months
            best = int(np.argmax(score))
            if score[best] > 0:
                out[m, hour] = THRESHOLDS[best]
    return out


def measure(meters: list[Meter], thresholds: I64, *, test_months: float) -> dict[str, float]:
    false = false_out = 0
    delays = []
    for m, meter in enumerate(meters):
        d = thresholds[m]
        alarm = meter.test_length >= d[meter.test_hour]
        false += int(alarm.sum())
        if meter.test_anchor is not None and meter.out is not None and alarm.any():
            at = meter.test_anchor[alarm] + d[meter.test_hour[alarm]]
            false_out += int(meter.out[np.minimum(at, meter.out.size - 1)].sum())
        delays.append(np.maximum(0, d[meter.test_incident_hour] - meter.test_incident_since))
    delay_h = np.concatenate(delays) / PER_H
    return {
        "false_per_resident_month": false / test_months,
        "false_out_per_resident_month": false_out / test_months,
        "median_h": float(np.median(delay_h)),
        "within_3h": float((delay_h <= 3).mean()),
        "incidents": int(delay_h.size),
    }


def two_stage(
    point: dict[str, float], *, unanswered_home: float, unanswered_out: float, stage_h: float
) -> dict[str, float]:
    """A frontier point read as the check-in tier of the two-stage design: every alarm asks
    the resident (check-ins per month); the neighbour is woken when nobody answers: always
    for a resident on the floor (median time + the stage), for a false alarm with the
    probability that a healthy resident at home, or out, leaves the stage unanswered."""
    out = point["false_out_per_resident_month"]
    home = point["false_per_resident_month"] - out
    return {
        "check_ins_per_resident_month": point["false_per_resident_month"],
        "false_neighbour_per_resident_month": home * unanswered_home + out * unanswered_out,
        "median_to_check_in_h": point["median_h"],
        "median_to_neighbour_h": point["median_h"] + stage_h,
    }


def unanswered_rates(samples: int = 20_000, seed: int = 11) -> tuple[float, float]:
    """From the simulator's check-in model: the share of stages a healthy resident leaves
    unanswered at home in the daytime, and when out."""
    from lovekey.simulator.checkin import CheckInModel

    model = CheckInModel(seed=seed)
    noon = 1_772_337_600  # a local noon
    asks = [(f"R-{i}", noon + (i % 12 - 4) * 3600) for i in range(samples)]
    home = sum(1 for r, t in asks if model.answer(r, t)[0] != "fine") / samples
    mobile = sum(1 for i in range(samples) if model.carries_mobile(f"R-{i}")) / samples
    return home, 1 - mobile * (1 - home)


def simulate(
    residents: int, train_days: int, test_days: int, seed: int, *, day_out_rate: float | None
) -> tuple[BOOL, BOOL]:
    from lovekey.simulator.scenario import Scenario
    from lovekey.simulator.world import World

    base = Scenario.load()
    ordinary = ("day_out", "cleaning_day")  # the harmless incidents of ordinary life
    rates = {kind: rate if kind in ordinary else 0.0 for kind, rate in base.incidents.rate.items()}
    if day_out_rate is not None:
        rates["day_out"] = day_out_rate
    scenario = base.with_overrides({"incidents": {"rate": rates}})
    start = datetime(2025, 1, 6, tzinfo=timezone(timedelta(hours=8)))
    days = train_days + test_days
    world = World.build(scenario, residents=residents, seed=seed, start=start, days=days)
    _, usage = world.water_usage(start, start + timedelta(days=days), bucket_s=BUCKET_S)
    used: BOOL = usage >= USE_MIN_L
    # per meter and bucket: out on a day out (for the two-stage design's unanswered check-ins)
    out = np.zeros_like(used)
    row = {m: i for i, m in enumerate(world.meter_ids)}
    t0 = int(start.timestamp())
    for inc in world.truth():
        i = row.get(inc.device_id or "")
        if inc.kind == "day_out" and i is not None and inc.end is not None:
            a = (int(inc.start.timestamp()) - t0) // BUCKET_S
            b = (int(inc.end.timestamp()) - t0) // BUCKET_S
            out[i, max(a, 0) : max(b, 0)] = True
    return used, out


def meters_of(used: BOOL, train_days: int, rng: np.random.Generator, out: BOOL | None = None) -> list[Meter]:
    split = train_days * PER_DAY
    days = used.shape[1] // PER_DAY

    def starts(lo_day: int, hi_day: int, per_day: int) -> I64:
        day = rng.integers(lo_day, hi_day, size=(hi_day - lo_day) * per_day)
        return day * PER_DAY + rng.integers(7 * PER_H, 19 * PER_H, size=day.size)

    meters = []
    for i, row in enumerate(used):
        a, length = dry_runs(row, 0, split)
        ia, isince = incident_anchors(row, starts(1, train_days, 2))
        ta, tlength = dry_runs(row, split, row.size)
        xa, xsince = incident_anchors(row, starts(train_days, days, 4))
        meters.append(
            Meter(
                hour_of(a),
                length,
                hour_of(ia),
                isince,
                hour_of(ta),
                tlength,
                hour_of(xa),
                xsince,
                test_anchor=ta,
                out=None if out is None else out[i],
            )
        )
    return meters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lovekey.evaluation.bound",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--residents", type=int, default=200)
    parser.add_argument("--train-days", type=int, default=1200)
    parser.add_argument("--test-days", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--day-out-rate",
        type=float,
        default=None,
        help="days out per resident per 30 days (default: the scenario's)",
    )
    parser.add_argument(
        "--two-stage",
        action="store_true",
        help="read each point as a check-in tier: the resident asked first (issue 14)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    began = time.monotonic()
    used, out = simulate(
        args.residents, args.train_days, args.test_days, args.seed, day_out_rate=args.day_out_rate
    )
    meters = meters_of(used, args.train_days, np.random.default_rng(args.seed), out)
    train_incidents = sum(m.train_incident_since.size for m in meters)
    train_months = args.residents * args.train_days / 30
    test_months = args.residents * args.test_days / 30
    points = []
    for weight in (3.0, 1.0, 0.3, 0.1, 0.03, 0.01):
        chosen = choose(meters, weight, train_incidents=train_incidents, train_months=train_months)
        for margin_h in (0, 2, 4, 8):
            thresholds = np.where(chosen == NEVER, NEVER, chosen + margin_h * PER_H)
            point = measure(meters, thresholds, test_months=test_months)
            points.append({"weight": weight, "margin_h": margin_h, **point})
    frontier = _frontier(points)
    if args.two_stage:
        home, away = unanswered_rates()
        for p in points:
            p.update(two_stage(p, unanswered_home=home, unanswered_out=away, stage_h=0.5))
    if args.json:
        print(json.dumps({"points": points, "frontier": frontier}, indent=1))
        return 0
    print(
        f"{args.residents} residents, {args.train_days} days to choose thresholds, "
        f"{args.test_days} held-out days; {time.monotonic() - began:.0f} s"
    )
    if args.two_stage:
        print(
            f"two stages: a check-in is left unanswered {home:.1%} of the time at home and"
            f" {away:.1%} when out (simulator/checkin.py); the stage lasts 0.5 h"
        )
        print(
            f"{'check-ins / res.-month':>24} {'of them out':>12} {'false neighbour':>16}"
            f" {'median to check-in h':>21} {'to neighbour h':>15}"
        )
        for p in frontier:
            print(
                f"{p['check_ins_per_resident_month']:>24.3f} {p['false_out_per_resident_month']:>12.3f}"
                f" {p['false_neighbour_per_resident_month']:>16.3f} {p['median_to_check_in_h']:>21.1f}"
                f" {p['median_to_neighbour_h']:>15.1f}"
            )
        return 0
    print(f"{'false / resident-month':>24} {'median h':>9} {'within 3 h':>11}")
    for p in frontier:
        print(f"{p['false_per_resident_month']:>24.3f} {p['median_h']:>9.1f} {p['within_3h']:>10.1%}")
    return 0


def _frontier(points: list[dict[str, float]]) -> list[dict[str, float]]:
    """The points no other point beats on both false alarms and median time."""
    ordered = sorted(points, key=lambda p: (p["false_per_resident_month"], p["median_h"]))
    out: list[dict[str, float]] = []
    for p in ordered:
        if not out or p["median_h"] < out[-1]["median_h"]:
            out.append(p)
    return out


if __name__ == "__main__":
    sys.exit(main())
