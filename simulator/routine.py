"""A day of water use for one elderly person living alone, as events, then litres per minute.

Pure and vectorised: `draw_traits` gives each resident their habits once (how much they use,
when they get up and go to bed, their cistern, how often they shower and wash clothes);
`day_events` draws one local calendar day's water-use events for a chunk of residents;
`minute_usage` turns events into litres per minute. Every draw is addressed by (seed,
stream, day, resident, slot) in `simulator.rand`, so a resident's day never depends on which
other residents or days are generated with it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from lovekey.simulator import rand
from lovekey.simulator.scenario import Routine, Scenario

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

MINUTES_PER_DAY = 1440

# Event kinds (codes in `DayEvents.kind`).
END_USES = (
    "flush",
    "night_flush",
    "hand_wash",
    "hygiene",
    "meal_prep",
    "washing_up",
    "shower",
    "laundry",
    "misc",
)
FLUSH, NIGHT_FLUSH, HAND_WASH, HYGIENE, MEAL_PREP, WASHING_UP, SHOWER, LAUNDRY, MISC = range(9)

_FLUSH_SLOTS = 12
_NIGHT_SLOTS = 4
_MISC_SLOTS = 8
_VISIT_FLUSH_SLOTS = 3
_LAUNDRY_FILLS = 4


@dataclass(frozen=True)
class Traits:
    """Each resident's habits, one array element per resident."""

    scale: F64  # multiplies discretionary volumes
    wake_min: F64  # local minute of the day
    sleep_min: F64
    flush_l: F64
    metered_flush: F64  # share of flushes that draw from the meter
    flush_rate: F64  # mean flushes while awake
    night_rate: F64  # mean flushes at night
    shower_p: F64  # probability of a shower on a given day
    laundry_p: F64
    laundry_l: F64
    home_cooking: F64

    def take(self, index: npt.ArrayLike) -> Traits:
        return Traits(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def draw_traits(scenario: Scenario, seed: int, profile: I32) -> Traits:
    """Habits of residents 0..len(profile)-1, given each resident's profile index."""
    n = len(profile)
    r = np.arange(n)
    routine = scenario.routine
    profiles = scenario.profile

    def per_profile(getter: str) -> F64:
        return np.array([getattr(p, getter) for p in profiles], dtype=np.float64)[profile]

    def ranged(stream: str, name: str) -> F64:
        lows = np.array([getattr(p, name)[0] for p in profiles])[profile]
        highs = np.array([getattr(p, name)[1] for p in profiles])[profile]
        return np.asarray(lows + (highs - lows) * rand.uniform(seed, stream, r), dtype=np.float64)

    median = np.array([p.volume_scale[0] for p in profiles])[profile]
    log_sd = np.array([p.volume_scale[1] for p in profiles])[profile]
    scale = median * np.exp(log_sd * rand.normal(seed, "trait.scale", r))

    wake = 60 * (routine.wake_h[0] + routine.wake_h[1] * rand.normal(seed, "trait.wake", r))
    wake = np.clip(wake, 4.5 * 60, 9.5 * 60)
    sleep = 60 * (routine.sleep_h[0] + routine.sleep_h[1] * rand.normal(seed, "trait.sleep", r))
    sleep = np.clip(sleep, np.maximum(19.0 * 60, wake + 12 * 60), 23.9 * 60)

    cisterns = np.array([v for v, _ in routine.flush_l])
    cistern = rand.choice(seed, "trait.cistern", r, [s for _, s in routine.flush_l])
    flush_l = cisterns[cistern] * rand.between(seed, "trait.cistern_fit", r, 0.9, 1.1)

    lo, hi = routine.laundry_l
    laundry_l = (lo + (hi - lo) * rand.uniform(seed, "trait.washer", r)) * np.sqrt(scale)

    return Traits(
        scale=scale,
        wake_min=wake,
        sleep_min=sleep,
        flush_l=flush_l,
        metered_flush=per_profile("metered_flush_share"),
        flush_rate=ranged("trait.flushes", "flushes_per_day"),
        night_rate=ranged("trait.night", "night_flushes"),
        shower_p=1.0 / ranged("trait.shower", "shower_every_days"),
        laundry_p=1.0 / ranged("trait.laundry", "laundry_every_days"),
        laundry_l=laundry_l,
        home_cooking=per_profile("home_cooking"),
    )


@dataclass(frozen=True)
class DayEvents:
    """One day's water-use events of a chunk of residents (only those that happened)."""

    row: I32  # position of the resident within the chunk
    kind: I32  # index into END_USES
    start_min: I32  # local minute of the day
    duration_min: I32
    volume_ml: I64  # what the meter sees (0 for a bucket flush): duration x whole ml/min


def weekday(day: int) -> int:
    """Monday = 0, for a day number counted from 1970-01-01 (a Thursday)."""
    return (day + 3) % 7


def day_events(
    traits: Traits, residents: npt.ArrayLike, day: int, *, seed: int, routine: Routine
) -> DayEvents:
    """Water-use events on local day `day` of the residents in `residents` (indices).

    `traits` holds the same residents in the same order (`Traits.take`).
    """
    r = np.asarray(residents, dtype=np.int64)
    n = len(r)
    weekend = weekday(day) >= 5

    def u(stream: str, slots: int | None = None) -> F64:
        return rand.uniform(seed, stream, r, day=day, slots=slots)

    def nrm(stream: str) -> F64:
        return rand.normal(seed, stream, r, day=day)

    shift = routine.weekend_later_h * 60 if weekend else 0.0
    wake = traits.wake_min + shift + 20 * nrm("day.wake")
    sleep = traits.sleep_min + 0.5 * shift + 25 * nrm("day.sleep")
    wake = np.clip(wake, 3 * 60, 11 * 60)
    sleep = np.clip(sleep, wake + 10 * 60, MINUTES_PER_DAY - 20)
    awake = sleep - wake
    scale = traits.scale
    visit = u("day.visit") < (routine.weekend_visit_share if weekend else 0.0)

    parts: list[tuple[int, F64, F64, F64, BOOL]] = []  # kind, start, minutes, litres, happened

    def add(kind: int, start: F64, minutes: F64, litres: F64, happened: BOOL) -> None:
        shape = happened.shape
        parts.append(
            (
                kind,
                np.broadcast_to(start, shape),
                np.broadcast_to(minutes, shape),
                np.broadcast_to(litres, shape),
                happened,
            )
        )

    col = (slice(None), None)

    # Toilet while awake, and hand washing after most flushes.
    k = _FLUSH_SLOTS
    flushed = u("flush.happens", k) < (traits.flush_rate / k)[col]
    flush_at = wake[col] + awake[col] * u("flush.time", k)
    metered = u("flush.metered", k) < traits.metered_flush[col]
    flush_litres = traits.flush_l[col] * (0.93 + 0.14 * u("flush.volume", k))
    # a bucket of reused wash water flushes too, but the meter sees nothing of it
    add(FLUSH, flush_at, np.full((n, k), 2.0), np.where(metered, flush_litres, 0.0), flushed)
    washed = flushed & (u("hand_wash.happens", k) < routine.hand_wash_after_flush)
    add(
        HAND_WASH,
        flush_at + 2,
        np.ones((n, k)),
        routine.hand_wash_l * scale[col] * (0.5 + u("hand_wash.volume", k)),
        washed,
    )

    # Toilet at night: between going to bed and getting up, across midnight.
    k = _NIGHT_SLOTS
    night_len = wake + MINUTES_PER_DAY - sleep
    at = (sleep[col] + night_len[col] * u("night.time", k)) % MINUTES_PER_DAY
    night = u("night.happens", k) < (traits.night_rate / k)[col]
    metered = u("night.metered", k) < traits.metered_flush[col]
    add(
        NIGHT_FLUSH,
        at,
        np.full((n, k), 2.0),
        np.where(metered, traits.flush_l[col] * (0.93 + 0.14 * u("night.volume", k)), 0.0),
        night,
    )

    # Visitors use the toilet too.
    k = _VISIT_FLUSH_SLOTS
    add(
        FLUSH,
        11 * 60 + 8 * 60 * u("visit.time", k),
        np.full((n, k), 2.0),
        traits.flush_l[col] * np.ones((n, k)),
        visit[col] & (u("visit.flush", k) < 0.7),
    )

    # Morning and evening wash.
    add(
        HYGIENE,
        wake + 20 * u("hygiene.am"),
        np.full(n, 3.0),
        routine.hygiene_l * scale * (0.6 + 0.8 * u("hygiene.am.volume")),
        np.ones(n, np.bool_),
    )
    add(
        HYGIENE,
        sleep - 10 - 30 * u("hygiene.pm"),
        np.full(n, 3.0),
        routine.hygiene_l * scale * (0.6 + 0.8 * u("hygiene.pm.volume")),
        np.ones(n, np.bool_),
    )

    # Three meals: breakfast after getting up, lunch about 11:30, supper about 17:30.
    meal_at = np.stack(
        [
            wake + 20 + 40 * u("meal.breakfast"),
            11 * 60 + 90 * u("meal.lunch"),
            17 * 60 + 90 * u("meal.supper"),
        ],
        axis=1,
    )
    meal_size = np.array([0.5, 1.0, 1.0])[None, :] * np.where(
        visit[col], np.array([1.0, 2.0, 2.0])[None, :], 1.0
    )
    cooked = u("meal.cooked", 3) < traits.home_cooking[col]
    prep_min = np.floor(5 + 6 * u("meal.prep.minutes", 3))
    add(
        MEAL_PREP,
        meal_at - 10 - 20 * u("meal.prep.lead", 3),
        prep_min,
        routine.meal_prep_l * scale[col] * meal_size * (0.6 + 0.8 * u("meal.prep.volume", 3)),
        cooked,
    )
    wash_min = np.floor(5 + 6 * u("meal.wash.minutes", 3))
    add(
        WASHING_UP,
        meal_at + 20 + 30 * u("meal.wash.lag", 3),
        wash_min,
        routine.washing_up_l * scale[col] * meal_size * (0.6 + 0.8 * u("meal.wash.volume", 3)),
        cooked,
    )

    # A shower every day or few days, morning or evening.
    showers = u("shower.happens") < traits.shower_p
    morning = u("shower.morning") < routine.morning_shower_share
    shower_at = np.where(morning, wake + 5 + 25 * u("shower.am"), sleep - 30 - 90 * u("shower.pm"))
    lo, hi = routine.shower_min
    shower_min = np.clip(np.round((lo + (hi - lo) * u("shower.minutes")) * np.sqrt(scale)), 2, 20)
    add(
        SHOWER,
        shower_at,
        shower_min,
        routine.shower_lpm * shower_min * (0.85 + 0.3 * u("shower.flow")),
        showers,
    )

    # Laundry in the daytime, more often at weekends: a washer fills a few times.
    laundry = u("laundry.happens") < traits.laundry_p * (1.5 if weekend else 1.0)
    laundry_at = 9 * 60 + 6 * 60 * u("laundry.time")
    k = _LAUNDRY_FILLS
    fills = laundry_at[col] + 12 * np.arange(k)[None, :] + 3 * u("laundry.fill", k)
    add(
        LAUNDRY,
        fills,
        np.full((n, k), 3.0),
        np.repeat((traits.laundry_l / k)[col], k, axis=1),
        np.repeat(laundry[col], k, axis=1),
    )

    # Small draws through the day: kettle, drinking water, a plant, a mop.
    k = _MISC_SLOTS
    add(
        MISC,
        wake[col] + awake[col] * u("misc.time", k),
        np.ones((n, k)),
        routine.misc_l * scale[col] * (0.3 + 1.4 * u("misc.volume", k)),
        u("misc.happens", k) < routine.misc_draws_per_day / k,
    )

    rows, kinds, starts, durations, volumes = [], [], [], [], []
    row_index = np.arange(n, dtype=np.int32)
    for kind, start, minutes, litres, happened in parts:
        pick = np.nonzero(happened)
        minutes_i = minutes[pick].astype(np.int32)
        start_i = np.clip(np.floor(start[pick]), 0, MINUTES_PER_DAY - minutes_i).astype(np.int32)
        per_min_ml = np.round(litres[pick] * 1000.0 / minutes_i).astype(np.int64)
        rows.append(row_index[pick[0]])
        kinds.append(np.full(len(start_i), kind, dtype=np.int32))
        starts.append(start_i)
        durations.append(minutes_i)
        volumes.append(per_min_ml * minutes_i)
    return DayEvents(
        row=np.concatenate(rows),
        kind=np.concatenate(kinds),
        start_min=np.concatenate(starts),
        duration_min=np.concatenate(durations),
        volume_ml=np.concatenate(volumes),
    )


def minute_usage(events: DayEvents, residents: int) -> F32:
    """Litres per minute, [residents, 1440]; exact zeros where nothing ran.

    Each event adds a constant whole number of ml per minute over its duration: a rate step
    up at its start and down at its end, summed in integers, so nothing rounds into a
    phantom trickle.
    """
    width = MINUTES_PER_DAY + 1
    rate = events.volume_ml // events.duration_min
    base = events.row.astype(np.int64) * width
    steps = np.bincount(
        np.concatenate([base + events.start_min, base + events.start_min + events.duration_min]),
        weights=np.concatenate([rate, -rate]).astype(np.float64),
        minlength=residents * width,
    )
    per_minute = np.cumsum(steps.reshape(residents, width), axis=1)[:, :MINUTES_PER_DAY]
    # the weights are whole ml below 2**53, so the float sums are exact integers
    return (per_minute * 1e-3).astype(np.float32)
