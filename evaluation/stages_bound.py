"""How fast can a check-in tier be, judged on false *neighbour* alerts, with and without a door?

`python -m lovekey.evaluation.stages_bound [--residents 200] [--seed 11] [--unanswered 0.05]`
extends `evaluation/bound.py` (same simulated years of ordinary life, same dry runs, same
daytime no-use incidents) to the two-stage design of issue 14, with an oracle that is judged
on what the stages cost:

- every alarm is a **check-in**; the neighbour is woken when nobody answers it. A collapsed
  resident never answers (the neighbour 0.5 h after the check-in); a healthy one leaves it
  unanswered with their own probability from `simulator/checkin.py` (hard of hearing or not,
  the hour; out on a day out only a carried mobile answers; `--unanswered` adds the
  sensitivity row's share). The oracle knows each resident's answer rates (a real detector
  learns them from past answers) but not their future.
- **water-only**: per resident and hour in which a dry run can begin, one threshold, chosen
  on the training years to trade incidents reaching the check-in within `within` hours
  against expected false neighbour alerts and check-ins (two Lagrange weights), measured on
  the held-out years.
- **with the door reminder** (`simulator/door.py`, its miss rate, dead batteries, visitors and
  false triggers, every household fitted): the threshold applies to a dry run with no
  passage seen since the last water use (the resident is probably home and silent: a
  check-in costs little, they answer). A dry run in which a passage was seen (probably a
  day out) is judged apart: a check-in `out_check_in_h` after the passage, and an unanswered
  one then either wakes the neighbour (`wake`) or does not, the neighbour being called only
  when the dry run lasts `out_neighbour_h` after the passage (`hold`: trades a resident who
  came back unseen and fell).

What the oracle knows, and so where its advantage over the detectors lies, can be taken
away for the water-only study (docs/detection.md, "Where the water-only oracle's lead comes
from"); the held-out figures are always measured with each resident's true answering:

- `--knows district`: it chooses as if every resident answered like the district's average
  (it still knows which training runs were days out); `--knows nothing`: not even that, every
  check-in costs the same average chance of going unanswered;
- `--pooled`: one threshold per hour in which a dry run began, the same for every resident
  (what a district quantile is), instead of one per resident and hour;
- `--train-days 28`: chosen from 28 days, as the detectors learn.

Each point is reported as check-ins and false neighbour alerts per resident-month and the
median time from a daytime incident's onset to the check-in and to the neighbour; the
frontier keeps the points within the check-in budget (3 a month) that no other beats on
false neighbour alerts and time to the neighbour.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from lovekey.evaluation.bound import NEVER, PER_DAY, PER_H, THRESHOLDS, dry_runs, incident_anchors, simulate

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]

STAGE_B = PER_H // 2  # the check-in stage lasts 30 minutes
NONE_SEEN = np.int64(10**13)  # no passage seen in the dry run (beyond NEVER)
# the candidate home thresholds: THRESHOLDS, and NEVER (no check-in for a quiet home)
CAND = np.append(THRESHOLDS, NEVER).astype(np.int64)
MIN_RUN_B = int(THRESHOLDS[0])  # shorter dry runs never alarm
BUDGET = 3.0  # check-ins per resident-month (issue 14)


@dataclass(frozen=True, slots=True)
class Answering:
    """One resident's chance of leaving a check-in stage unanswered: at home in the day, at
    home at night (before 07:00, after 21:00), and out (a day out)."""

    home_day: float
    home_night: float
    out: float

    def at(self, hour: npt.NDArray[np.int64], out: BOOL) -> F64:
        home = np.where((hour < 7) | (hour >= 21), self.home_night, self.home_day)
        return np.where(out, self.out, home)


def answering(key: str, seed: int, extra: float) -> Answering:
    """From `simulator/checkin.py`'s model: three attempts, each missed with the resident's
    own rate (1.5x at night); out, only a carried mobile answers."""
    from lovekey.simulator.checkin import ATTEMPT_OFFSETS_S, CheckInModel

    model = CheckInModel(seed=seed, extra_unanswered=extra)
    base = model.miss_hard_to_reach if model.hard_to_reach(key) else model.miss_others
    tries = len(ATTEMPT_OFFSETS_S)
    day = base**tries
    night = min(1.0, base * model.night_factor) ** tries

    def lost(p: float) -> float:
        return extra + (1 - extra) * p

    out = lost(day) if model.carries_mobile(key) else 1.0
    return Answering(lost(day), lost(night), out)


@dataclass(frozen=True, slots=True)
class Runs:
    """Dry runs (at least `MIN_RUN_B` long) of one resident over one span, by anchor."""

    anchor: I64  # bucket after the last use, from the simulation's start
    length: I64
    seen: I64  # buckets from the anchor to the first passage seen in the run (NONE_SEEN)


@dataclass(frozen=True, slots=True)
class Incidents:
    anchor: I64
    since: I64  # buckets from the anchor to the onset
    seen: I64  # buckets from the anchor to the first passage seen (a false trigger after onset)


@dataclass(frozen=True, slots=True)
class Policy:
    """How a dry run after a passage is handled (door households); ignored water-only."""

    out_check_in_h: float | None  # None: no check-in after a passage
    wake: bool  # an unanswered check-in after a passage wakes the neighbour
    out_neighbour_h: float  # with wake=False: the neighbour after this long from the passage

    @property
    def label(self) -> str:
        tail = "wake" if self.wake else f"hold, neighbour {self.out_neighbour_h:g} h"
        if self.out_check_in_h is None:
            return f"after a passage: no check-in, neighbour {self.out_neighbour_h:g} h"
        return f"after a passage: check-in {self.out_check_in_h:g} h, {tail}"

    @property
    def out_check_in_b(self) -> int:
        return int(NONE_SEEN) if self.out_check_in_h is None else round(self.out_check_in_h * PER_H)


def first_seen(anchor: I64, end: I64, passages: I64) -> I64:
    """Buckets from each anchor to the first passage in [anchor, end); NONE_SEEN if none."""
    k = np.searchsorted(passages, anchor, side="left")
    at = np.append(passages, NONE_SEEN)[k]
    return np.where(at < end, at - anchor, NONE_SEEN).astype(np.int64)


def runs_of(used: BOOL, lo: int, hi: int, passages: I64) -> Runs:
    anchor, length = dry_runs(used, lo, hi)
    keep = length >= MIN_RUN_B
    anchor, length = anchor[keep], length[keep]
    return Runs(anchor, length, first_seen(anchor, anchor + length, passages))


def incidents_of(
    used: BOOL, starts: I64, passages: I64, rng: np.random.Generator, false_per_day: float | None
) -> Incidents:
    """Daytime no-use incidents: before the onset the ordinary passages count (a visitor who
    left); after it only a false trigger (nobody opens the door from the floor)."""
    anchor, since = incident_anchors(used, starts)
    seen = first_seen(anchor, anchor + since, passages)
    if false_per_day is not None and false_per_day > 0:
        trigger = since + rng.exponential(PER_DAY / false_per_day, size=since.size).astype(np.int64)
        seen = np.minimum(seen, trigger)
    elif false_per_day is None:
        seen = np.full(since.size, NONE_SEEN, np.int64)
    return Incidents(anchor, since, seen)


def _cost_matrices(runs: Runs, out: BOOL, who: Answering, policy: Policy | None) -> tuple[F64, F64, I64]:
    """Per dry run (rows) and candidate home threshold (columns): check-ins, expected false
    neighbour alerts; and each run's hour of anchor."""
    t = CAND[None, :]
    a, length, seen = runs.anchor[:, None], runs.length[:, None], runs.seen[:, None]
    last = out.size - 1
    # home class: no passage before the threshold, the run lasts to it
    fires = (length >= t) & (seen >= t)
    at = np.minimum(a + t, last)
    lost = who.at((at % PER_DAY) // PER_H, out[at])
    check_ins = fires.astype(np.float64)
    neighbour = np.where(fires, lost, 0.0)
    if policy is not None:
        # out class: a passage seen before the home threshold would have fired
        passed = seen < np.minimum(t, length)
        ci_b = policy.out_check_in_b
        ci = passed & (length >= seen + ci_b)
        check_ins += ci
        if policy.wake:
            at = np.minimum(a + seen + ci_b, last)
            lost = who.at((at % PER_DAY) // PER_H, out[at])
            neighbour += np.where(ci, lost, 0.0)
        else:
            nb_b = round(policy.out_neighbour_h * PER_H)
            neighbour += passed & (length >= seen + nb_b)
    return check_ins, neighbour, (runs.anchor % PER_DAY) // PER_H


def delays(inc: Incidents, d: I64, policy: Policy | None) -> tuple[F64, F64]:
    """Buckets from onset to the check-in and to the neighbour, for thresholds `d` (one per
    incident, NEVER: none)."""
    home = inc.seen >= d
    to_ci = np.maximum(0, d - inc.since)
    to_nb = to_ci + STAGE_B
    if policy is not None:
        ci_b = policy.out_check_in_b
        out_ci = np.maximum(0, inc.seen + ci_b - inc.since)
        out_nb = out_ci + STAGE_B
        if not policy.wake:  # only the neighbour tier wakes the neighbour; the first contact
            out_nb = np.maximum(0, inc.seen + round(policy.out_neighbour_h * PER_H) - inc.since)
            out_ci = np.minimum(out_ci, out_nb)
        to_ci = np.where(home, to_ci, out_ci)
        to_nb = np.where(home, to_nb, out_nb)
    never = (d >= NEVER) & home
    ci_out: F64 = np.where(never, np.inf, to_ci).astype(np.float64)
    nb_out: F64 = np.where(never, np.inf, to_nb).astype(np.float64)
    return ci_out, nb_out


@dataclass(frozen=True, slots=True)
class Resident:
    train: Runs
    test: Runs
    train_incidents: Incidents
    test_incidents: Incidents
    who: Answering


def tables(residents: list[Resident], out: BOOL, policy: Policy | None, within_b: int) -> tuple[F64, ...]:
    """Per resident, hour and candidate threshold (R, 24, len(CAND)): training check-ins,
    false neighbour alerts, incidents reached within `within_b`; and the held-out check-ins
    and false neighbour alerts."""
    shape = (len(residents), 24, CAND.size)
    ci, nb, caught = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    tci, tnb = np.zeros(shape), np.zeros(shape)
    hours = np.arange(24)[:, None]
    for r, res in enumerate(residents):
        for runs, c_out, n_out in ((res.train, ci, nb), (res.test, tci, tnb)):
            if not runs.anchor.size:
                continue
            c, n, hour = _cost_matrices(runs, out[r], res.who, policy)
            onehot = (hours == hour[None, :]).astype(np.float64)
            c_out[r] = onehot @ c
            n_out[r] = onehot @ n
        inc = res.train_incidents
        if inc.anchor.size:
            hour = (inc.anchor % PER_DAY) // PER_H
            d = np.broadcast_to(CAND[None, :], (inc.anchor.size, CAND.size))
            inc2 = Incidents(inc.anchor[:, None], inc.since[:, None], inc.seen[:, None])
            to_ci, _ = delays(inc2, d, policy)
            caught[r] = (hours == hour[None, :]).astype(np.float64) @ (to_ci <= within_b)
    return ci, nb, caught, tci, tnb


def point(
    residents: list[Resident], chosen: I64, tci: F64, tnb: F64, policy: Policy | None, test_months: float
) -> dict[str, float]:
    """Held-out figures for `chosen` (per resident and hour, an index into CAND)."""
    pick = chosen[:, :, None]
    check_ins = np.take_along_axis(tci, pick, axis=2).sum()
    neighbour = np.take_along_axis(tnb, pick, axis=2).sum()
    to_ci, to_nb = [], []
    for r, res in enumerate(residents):
        inc = res.test_incidents
        d = CAND[chosen[r, (inc.anchor % PER_DAY) // PER_H]]
        a, b = delays(inc, d, policy)
        to_ci.append(a)
        to_nb.append(b)
    ci_h, nb_h = np.concatenate(to_ci) / PER_H, np.concatenate(to_nb) / PER_H
    return {
        "check_ins_per_resident_month": float(check_ins) / test_months,
        "false_neighbour_per_resident_month": float(neighbour) / test_months,
        "median_to_check_in_h": float(np.median(ci_h)),
        "median_to_neighbour_h": float(np.median(nb_h)),
        "to_neighbour_within_4h": float((nb_h <= 4).mean()),
        "incidents": int(ci_h.size),
    }


def choose(ci: F64, nb: F64, caught: F64, *, incidents: int, months: float, w_nb: float, w_ci: float) -> I64:
    """Per resident and hour, the candidate (index into CAND; the last is NEVER) maximising
    the share of training incidents reached in time minus `w_nb` x false neighbour alerts
    and `w_ci` x check-ins per month."""
    score = caught / incidents - (w_nb * nb + w_ci * ci) / months
    best: I64 = score.argmax(axis=2).astype(np.int64)
    return best


def frontier(points: list[dict[str, float]]) -> list[dict[str, float]]:
    """Within the check-in budget, the points no other beats on both false neighbour alerts
    and the median time to the neighbour."""
    ok = [p for p in points if p["check_ins_per_resident_month"] <= BUDGET]
    ordered = sorted(ok, key=lambda p: (p["false_neighbour_per_resident_month"], p["median_to_neighbour_h"]))
    out: list[dict[str, float]] = []
    for p in ordered:
        if not out or p["median_to_neighbour_h"] < out[-1]["median_to_neighbour_h"]:
            out.append(p)
    return out


def build(
    used: BOOL,
    out: BOOL,
    keys: list[str],
    day_out_spans: dict[int, list[tuple[int, int]]],
    *,
    train_days: int,
    seed: int,
    extra: float,
    door: bool,
) -> list[Resident]:
    from lovekey.simulator.door import DoorModel

    model = DoorModel(seed=seed, share=1.0)
    rng = np.random.default_rng(seed)
    split = train_days * PER_DAY
    days = used.shape[1] // PER_DAY
    span_s = used.shape[1] * (86400 // PER_DAY)
    per_b = 86400 // PER_DAY

    def starts(lo_day: int, hi_day: int, per_day: int) -> I64:
        day = rng.integers(lo_day, hi_day, size=(hi_day - lo_day) * per_day)
        return day * PER_DAY + rng.integers(7 * PER_H, 19 * PER_H, size=day.size)

    out_list = []
    for i, row in enumerate(used):
        if door:
            spans = [("day_out", a * per_b, b * per_b) for a, b in day_out_spans.get(i, [])]
            passages = np.array(model.passages(keys[i], spans, 0, span_s), dtype=np.int64) // per_b
            false_rate: float | None = 0.0 if not passages.size and model.dead_share else model.false_per_day
        else:
            passages = np.zeros(0, np.int64)
            false_rate = None
        out_list.append(
            Resident(
                train=runs_of(row, 0, split, passages),
                test=runs_of(row, split, row.size, passages),
                train_incidents=incidents_of(row, starts(1, train_days, 2), passages, rng, false_rate),
                test_incidents=incidents_of(row, starts(train_days, days, 4), passages, rng, false_rate),
                who=answering(keys[i], seed, extra),
            )
        )
    return out_list


POLICIES = (
    Policy(6.0, True, 0.0),
    Policy(6.0, False, 14.0),
    Policy(None, False, 8.0),
    Policy(None, False, 10.0),
    Policy(None, False, 14.0),
)
W_NB = (30.0, 10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01)
W_CI = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


KNOWS = ("resident", "district", "nothing")
# the share of an oracle's check-ins taken to fall in a day out when it knows none of them
# (`--knows nothing`); it only scales the cost every check-in is given
OUT_SHARE_ASSUMED = 0.02


def as_known(residents: list[Resident], out: BOOL, knows: str) -> tuple[list[Resident], BOOL]:
    """The residents and day-out flags the oracle chooses with: as they are (`resident`),
    every resident answering like the district's average (`district`), or every check-in at
    one average chance of going unanswered, days out unknown (`nothing`)."""
    if knows == "resident":
        return residents, out
    whos = [r.who for r in residents]
    avg = Answering(
        float(np.mean([w.home_day for w in whos])),
        float(np.mean([w.home_night for w in whos])),
        float(np.mean([w.out for w in whos])),
    )
    if knows == "district":
        return [replace(r, who=avg) for r in residents], out
    p = (1 - OUT_SHARE_ASSUMED) * avg.home_day + OUT_SHARE_ASSUMED * avg.out
    flat = Answering(p, p, p)
    return [replace(r, who=flat) for r in residents], np.zeros_like(out)


def pooled(table: F64) -> F64:
    """One threshold per hour for everyone: every resident chooses from the district's sums."""
    out: F64 = np.broadcast_to(table.sum(axis=0, keepdims=True), table.shape)
    return out


def study(
    residents: list[Resident],
    out: BOOL,
    policy: Policy | None,
    *,
    within_h: float,
    train_days: int,
    test_days: int,
    knows: str = "resident",
    pool: bool = False,
) -> list[dict[str, float]]:
    within_b = round(within_h * PER_H)
    _, _, _, tci, tnb = tables(residents, out, policy, within_b)
    ci, nb, caught, _, _ = tables(*as_known(residents, out, knows), policy, within_b)
    if pool:
        ci, nb, caught = pooled(ci), pooled(nb), pooled(caught)
    incidents = sum(r.train_incidents.anchor.size for r in residents)
    months = len(residents) * train_days / 30
    test_months = len(residents) * test_days / 30
    points = []
    for w_nb in W_NB:
        for w_ci in W_CI:
            chosen = choose(ci, nb, caught, incidents=incidents, months=months, w_nb=w_nb, w_ci=w_ci)
            p = point(residents, chosen, tci, tnb, policy, test_months)
            points.append({"w_nb": w_nb, "w_ci": w_ci, **p})
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lovekey.evaluation.stages_bound",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--residents", type=int, default=200)
    parser.add_argument("--train-days", type=int, default=1200)
    parser.add_argument("--test-days", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--unanswered", type=float, default=0.0, help="the sensitivity row's extra share")
    parser.add_argument("--only", choices=("water", "door"), help="run one half of the study")
    parser.add_argument(
        "--knows",
        choices=KNOWS,
        default="resident",
        help="water-only: what the oracle knows of how residents answer when it chooses",
    )
    parser.add_argument(
        "--pooled", action="store_true", help="water-only: one threshold per hour for every resident"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    began = time.monotonic()
    used, out = simulate(args.residents, args.train_days, args.test_days, args.seed, day_out_rate=None)
    spans: dict[int, list[tuple[int, int]]] = {}
    for i, row in enumerate(out):  # the day-out spans, back from the per-bucket flags
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(np.int8), [0]))))
        spans[i] = list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
    keys = [f"R-{args.seed}-{i}" for i in range(len(used))]
    common = {"train_days": args.train_days, "seed": args.seed, "extra": args.unanswered}
    span = {"train_days": args.train_days, "test_days": args.test_days}
    results: dict[str, list[dict[str, float]]] = {}
    if args.only != "door":
        water = build(used, out, keys, spans, door=False, **common)
        for within_h in (3.0, 5.5):
            results[f"water-only, within {within_h:g} h"] = study(
                water, out, None, within_h=within_h, knows=args.knows, pool=args.pooled, **span
            )
    if args.only != "water":
        with_door = build(used, out, keys, spans, door=True, **common)
        for policy in POLICIES:
            results[f"door, {policy.label}"] = study(with_door, out, policy, within_h=3.0, **span)
    fronts = {name: frontier(points) for name, points in results.items()}
    if args.json:
        print(json.dumps({"points": results, "frontier": fronts}, indent=1))
        return 0
    print(
        f"{args.residents} residents, {args.train_days} days to choose, {args.test_days} held out,"
        f" extra unanswered {args.unanswered:.0%}; {time.monotonic() - began:.0f} s"
    )
    for name, front in fronts.items():
        print(f"\n{name}")
        head = f"{'check-ins':>10} {'false nb':>9} {'to check-in h':>14} {'to neighbour h':>15}"
        print(f"{head} {'nb <= 4 h':>10}")
        for p in front:
            print(
                f"{p['check_ins_per_resident_month']:>10.3f} {p['false_neighbour_per_resident_month']:>9.3f}"
                f" {p['median_to_check_in_h']:>14.1f} {p['median_to_neighbour_h']:>15.1f}"
                f" {p['to_neighbour_within_4h']:>10.1%}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
