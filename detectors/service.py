"""The detector process: rebuild state from the database, then sweep on a schedule.

`DetectorService` is the thin shell around `detectors.engine.Detector`: at start it loads the
registry, the last `ring_hours` of readings of its shard, the learned routine days and the
alerts already in the database; each sweep it reads the rows received since the last one,
applies them, asks the detector what changed and writes that through `alerts.store`, all in
one transaction. Smoke, gas and SOS events do not wait for a sweep: `detectors/event_watcher.py`
raises them as soon as they are committed.

It keeps nothing that is not in the database: killing the process at any point and
starting it again gives the same alerts, none lost and none twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from lovekey.alerts.store import AlertCandidate, clear_alerts, raise_alerts
from lovekey.config import DetectSettings, Settings
from lovekey.detectors import store as db
from lovekey.detectors.changes import Change
from lovekey.detectors.engine import SWEPT_KINDS, Detector, Presence, Registry
from lovekey.detectors.params import build_params, effective_rules
from lovekey.detectors.profile import floor_minimum
from lovekey.detectors.ring import NEVER, UsageRing
from lovekey.vocabulary import (
    AlertKind,
    AlertStatus,
    PartOfDay,
    ResidentStatus,
)

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
_EPOCH_DATE = date(1970, 1, 1)
# who can be asked is read again at least this often (and whenever a check-in is settled)
ASKABLE_REFRESH = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class DetectorShard:
    """The share of residents one detector process judges: those whose id hashes to `index`
    of `count` (not the simulator's `Shard` of a population)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> DetectorShard:
        """'i/n' with 0 <= i < n."""
        try:
            i, n = (int(p) for p in text.split("/"))
        except ValueError as exc:
            raise ValueError(f"shard must look like i/n, got {text!r}") from exc
        if not 0 <= i < n:
            raise ValueError(f"shard {text!r}: need 0 <= i < n")
        return cls(i, n)

    def owns(self, text: str) -> bool:
        return self.count == 1 or db.shard_of(text, self.count) == self.index


def utc_offset_s(settings: Settings, at: datetime) -> int:
    offset = settings.zone.utcoffset(at)
    return int(offset.total_seconds()) if offset is not None else 0


class DetectorService:
    """One shard's detector state, kept in step with the database sweep by sweep."""

    def __init__(
        self, settings: Settings, *, shard: DetectorShard = DetectorShard(), replay: bool = False
    ) -> None:
        """`replay`: the sweeps are as of a past time (`detect --once --at T`): a reading
        received after T is taken to have arrived when it was taken, and a meter last heard
        after T to have been last heard when its newest reading before T was taken, so a
        meter that went silent before T is seen silent (issue 14)."""
        self.settings = settings
        self.replay = replay
        self.st: DetectSettings = settings.detect
        self.shard = shard
        self.detector: Detector | None = None
        self._key_to_meter = np.empty(0, np.int64)
        self._keys: list[int] = []
        self._watermark: datetime | None = None
        # (key << 32 | ts) and arrival of rows applied that a later fetch can return again
        self._recent_pair = np.empty(0, np.int64)
        self._recent_arrival = np.empty(0, np.int64)
        self._pending = db.ReadingColumns.empty()
        self._was_away = np.empty(0, bool)
        self._back_at = np.empty(0, np.int64)  # per resident: when we saw an absence end
        self._askable_read_at: datetime | None = None  # when who can be asked was last read

    # -- start --------------------------------------------------------------------------------

    def start(self, conn: psycopg.Connection[Any], now: datetime) -> None:
        """Rebuild everything from the database as of `now`."""
        st = self.st
        meters = [m for m in db.water_meters(conn) if self.shard.owns(m.resident_id or m.device_id)]
        registry = self._registry(meters, db.unaskable_residents(conn, now), db.door_households(conn))
        self._askable_read_at = now
        self._was_away = np.zeros(len(registry.resident_ids), bool)
        self._back_at = np.full(len(registry.resident_ids), NEVER, np.int64)
        det = Detector(
            registry,
            st,
            now_s=db.epoch(now),
            utc_offset_s=utc_offset_s(self.settings, now),
            max_flow_lpm=self.settings.ingest.max_flow_lpm,
        )
        self.detector = det
        self._keys = [m.key for m in meters]
        top = max(self._keys, default=0)
        self._key_to_meter = np.full(top + 1, -1, np.int64)
        self._key_to_meter[np.array(self._keys, np.int64)] = np.arange(len(meters))
        seen = np.array([db.epoch(m.last_seen) if m.last_seen else NEVER for m in meters], np.int64)
        if self.replay:  # heard after T: known only from the readings taken before T
            seen[seen > db.epoch(now)] = NEVER
        det.ring.last_arrival[:] = seen

        ring_start = now - timedelta(hours=st.ring_hours)
        rows = db.readings_since_ts(conn, self._keys, ring_start, now)
        self._watermark = now
        self._apply(rows, now, conn=None)
        # a meter never heard from counts as silent from when we started watching it; in a
        # replay, one with no reading in the ring before T was silent for all of the ring
        never = det.ring.last_arrival == NEVER
        det.ring.last_arrival[never] = db.epoch(ring_start if self.replay else now)
        self._load_days(conn, now)
        self._restore_alerts(conn, now)
        log.info(
            "detector started shard=%d/%d meters=%d readings=%d learned_days=%s",
            self.shard.index,
            self.shard.count,
            len(meters),
            len(rows),
            det.profile.last_day is not None,
        )

    def _registry(self, meters: Sequence[db.MeterRow], unaskable: set[str], door: set[str]) -> Registry:
        """Who is who; `unaskable`: residents the check-in stage cannot ask (their floor goes
        to the neighbour, their routine_break waits for the neighbour tier); `door`: residents
        with a door reminder (`detect.door_home_check_in_quantile`)."""
        residents = sorted({m.resident_id for m in meters if m.resident_id})
        res_index = {r: i for i, r in enumerate(residents)}
        gateways = sorted({m.gateway_id for m in meters})
        gw_index = {g: i for i, g in enumerate(gateways)}
        rules = []
        for m in meters:
            values, problems = effective_rules(self.st, m.community_rules, m.resident_rules)
            for problem in problems:
                log.warning("ignored rule override resident=%s: %s", m.resident_id, problem)
            rules.append(values)
        params = build_params(self.st, rules, [m.report_interval_s for m in meters])
        return Registry(
            [m.device_id for m in meters],
            residents,
            gateways,
            np.array([res_index.get(m.resident_id or "", -1) for m in meters], np.int64),
            np.array([gw_index[m.gateway_id] for m in meters], np.int64),
            params,
            np.array([r not in unaskable for r in residents], np.bool_),
            np.array([r in door for r in residents], np.bool_),
        )

    def _restore_alerts(self, conn: psycopg.Connection[Any], now: datetime) -> None:
        det = self._det
        for alert in db.known_alerts(conn, SWEPT_KINDS, now - timedelta(hours=self.st.ring_hours)):
            if alert.status == AlertStatus.RESOLVED and alert.resolved_at is not None:
                det.restore(
                    alert.kind,
                    [alert.subject],
                    [db.epoch(alert.since)],
                    resolved_at_s=[db.epoch(alert.resolved_at)],
                )
            else:
                det.restore(alert.kind, [alert.subject], [db.epoch(alert.since)])

    # -- learned days -------------------------------------------------------------------------

    @staticmethod
    def _local_date(day: int) -> date:
        """A routine day is stored under the local date it starts on (day 0: 1970-01-01)."""
        return _EPOCH_DATE + timedelta(days=day)

    @staticmethod
    def _day_number(local: date) -> int:
        return (local - _EPOCH_DATE).days

    def _load_days(self, conn: psycopg.Connection[Any], now: datetime) -> None:
        det = self._det
        prof = det.profile
        today = prof.day_of(db.epoch(now))
        first = today - prof.days
        rows = db.load_days(
            conn, self._local_date(first), bucket_s=det.bucket_s, day_start_s=self._day_start_s()
        )
        by_day: dict[int, list[db.DayRow]] = {}
        for row in rows:
            by_day.setdefault(self._day_number(row.day), []).append(row)
        # days the ring will learn itself are left to it; older missing days are rebuilt
        ring_first = prof.day_of(det.ring.oldest * det.bucket_s) + 1
        for day in range(first, ring_first):
            if day in by_day:
                found = [r for r in by_day[day] if 0 <= r.key < self._key_to_meter.size]
                idx = np.array([self._key_to_meter[r.key] for r in found], np.int64)
                keep = idx >= 0
                bits = np.array([np.frombuffer(r.use_bits, np.uint8) for r in found], np.uint8)
                bits = bits.reshape(len(found), -1)
                lows = np.array([np.nan if r.floor_min_l is None else r.floor_min_l for r in found])
                lows = lows.astype(np.float32)
                if keep.any() and bits.shape[1] == prof.use_bits.shape[2]:
                    valid = np.array([r.valid for r in found], bool)[keep]
                    prof.load_day(day, idx[keep], bits[keep], valid, lows[keep])
            else:
                self._backfill_day(conn, day)
        if prof.last_day is not None:
            det.relearn()
        self._save_days(conn, det.recorded_days)
        det.recorded_days.clear()

    def _backfill_day(self, conn: psycopg.Connection[Any], day: int) -> None:
        """Learn a past day from its readings (first start, or after a long stop)."""
        det, st = self._det, self.st
        prof, bs = det.profile, det.bucket_s
        start, end = prof.day_start(day), prof.day_start(day + 1)
        lead = int(st.max_spread_h * 3600) + bs
        # and the field rule's window after the day: the floor's lows of windows starting in it
        window_b = det.days.floor_window_b
        tail = window_b * bs
        rows = db.readings_since_ts(conn, self._keys, db.utc(start - lead), db.utc(end + tail + bs))
        if len(rows) == 0:
            return
        ring = UsageRing(
            len(self._keys),
            bucket_s=bs,
            buckets=(end + tail + bs - start + lead) // bs + 2,
            now_s=start - lead,
            max_spread_s=int(st.max_spread_h * 3600),
            flow_span_max_s=st.flow_span_max_s,
            use_min_l=st.use_min_l,
            max_flow_lpm=self.settings.ingest.max_flow_lpm,
        )
        meter = self._key_to_meter[rows.key]
        ring.apply(meter, rows.ts_s, rows.total_l)
        first = prof.first_bucket(day)
        both = ring.usage_matrix(first, prof.slots + window_b - 1)
        usage = both[: prof.slots]
        used = ring.used_matrix(first, prof.slots)
        prof.record_day(day, usage, used, np.zeros(usage.shape[1], bool), floor_minimum(both, window_b))
        det.recorded_days.append(day)

    def _save_days(self, conn: psycopg.Connection[Any], days: Sequence[int]) -> None:
        prof = self._det.profile
        rows: list[db.DayRow] = []
        for day in sorted(set(days)):
            try:
                bits, valid = prof.day_rows(day)
                lows = prof.day_floor(day)
            except KeyError:
                continue
            local = self._local_date(day)
            rows += [
                db.DayRow(
                    k,
                    local,
                    bits[i].tobytes(),
                    bool(valid[i]),
                    None if np.isnan(lows[i]) else float(lows[i]),
                )
                for i, k in enumerate(self._keys)
            ]
        if rows:
            keep_after = self._local_date(max(days) - prof.days - 7)
            db.save_days(
                conn,
                rows,
                bucket_s=self._det.bucket_s,
                day_start_s=self._day_start_s(),
                keep_after=keep_after,
            )

    def _day_start_s(self) -> int:
        return int(self.st.routine_day_start_h * 3600) // self._det.bucket_s * self._det.bucket_s

    # -- sweep --------------------------------------------------------------------------------

    @property
    def _det(self) -> Detector:
        if self.detector is None:
            raise RuntimeError("DetectorService.start() was not called")
        return self.detector

    def sweep(self, conn: psycopg.Connection[Any], now: datetime) -> list[Change]:
        """Read what arrived, evaluate, write alert changes. The caller commits."""
        det = self._det
        if self._watermark is None:
            raise RuntimeError("DetectorService.start() was not called")
        overlap = timedelta(seconds=self.st.received_overlap_s)
        rows = db.readings_received_after(conn, self._watermark - overlap)
        if len(rows):
            self._watermark = max(self._watermark, db.utc(int(rows.received_s.max())))
        self._apply(rows, now, conn=conn)
        self._refresh_askable(conn, now)
        presence = self._presence(conn, now)
        offline = self._gateway_status(conn)
        changes = det.sweep(db.epoch(now), presence, offline)
        changes = [c for c in changes if c.kind != AlertKind.GATEWAY_OFFLINE or self.shard.owns(c.subject)]
        write_changes(conn, changes, now)
        if det.recorded_days:
            self._save_days(conn, det.recorded_days)
            det.recorded_days.clear()
        return changes

    def _refresh_askable(self, conn: psycopg.Connection[Any], now: datetime) -> None:
        """Who can be asked, read again when a check-in was settled since the last read (a
        phone found unreachable, or answering again) and at least every `ASKABLE_REFRESH`
        (a retry period running out, a phone or a community's switch changed in the registry)."""
        askable = self._det.registry.askable
        if askable is None or self._askable_read_at is None:
            return
        last = self._askable_read_at
        # a transaction that settled a check-in may commit after it read its clock
        overlap = timedelta(seconds=self.st.received_overlap_s)
        if now - last < ASKABLE_REFRESH and not db.check_ins_settled(conn, last - overlap, now):
            return
        unaskable = db.unaskable_residents(conn, now)
        fresh = np.array([r not in unaskable for r in self._det.registry.resident_ids], np.bool_)
        if not np.array_equal(fresh, askable):
            log.info("who can be asked changed: %d residents cannot be asked", int((~fresh).sum()))
        askable[:] = fresh
        if (door := self._det.registry.door) is not None:  # a reminder fitted or taken away
            with_door = db.door_households(conn)
            door[:] = [r in with_door for r in self._det.registry.resident_ids]
        self._askable_read_at = now

    def _apply(self, rows: db.ReadingColumns, now: datetime, *, conn: psycopg.Connection[Any] | None) -> None:
        """Apply rows of our meters not applied before; rebuild meters that got late data."""
        det, now_s = self._det, db.epoch(now)
        rows = db.concat(self._pending, rows)
        meter = np.full(len(rows), -1, np.int64)
        inside = rows.key < self._key_to_meter.size
        meter[inside] = self._key_to_meter[rows.key[inside]]
        mine = np.flatnonzero(meter >= 0)
        rows, meter = rows.take(mine), meter[mine]
        pair = (rows.key << 32) | (rows.ts_s & 0xFFFFFFFF)
        fresh = ~np.isin(pair, self._recent_pair)
        # from the future (a meter's clock ahead): kept until its time comes
        later = rows.ts_s > now_s
        self._pending = rows.take(np.flatnonzero(fresh & later))
        use = np.flatnonzero(fresh & ~later)
        rows, meter, pair = rows.take(use), meter[use], pair[use]
        arrival = self._arrival(rows, now_s)
        result = det.apply(meter, rows.ts_s, rows.total_l, arrival)
        if result.dirty.size and conn is not None:
            keys = [self._keys[int(m)] for m in result.dirty]
            start = now - timedelta(hours=self.st.ring_hours)
            history = db.readings_since_ts(conn, keys, start, now)
            det.rebuild(
                result.dirty,
                self._key_to_meter[history.key],
                history.ts_s,
                history.total_l,
                self._arrival(history, now_s),
            )
            log.info("rebuilt %d meter(s) after late readings", result.dirty.size)
        # remember what a later fetch can return again: it reads arrivals from the start of
        # the second `watermark - overlap` falls in, so that second is remembered too
        assert self._watermark is not None
        cutoff = db.epoch(self._watermark) - self.st.received_overlap_s
        keep = self._recent_arrival >= cutoff
        new = rows.received_s >= cutoff
        self._recent_pair = np.concatenate([self._recent_pair[keep], pair[new]])
        self._recent_arrival = np.concatenate([self._recent_arrival[keep], rows.received_s[new]])

    def _arrival(self, rows: db.ReadingColumns, now_s: int) -> I64:
        """When each row reached us, as far as a sweep at `now_s` may know. Live, a row
        committed while the sweep ran arrived now; in a replay, a row received after T
        arrived when it was taken (it cannot say the meter was heard at T)."""
        if self.replay:
            out: I64 = np.where(rows.received_s <= now_s, rows.received_s, rows.ts_s)
            return out
        live: I64 = np.minimum(rows.received_s, now_s)
        return live

    def _presence(self, conn: psycopg.Connection[Any], now: datetime) -> Presence:
        """Who is away now, and since when each resident is watched (end of the last absence)."""
        ids = self._det.registry.resident_ids
        index = {rid: i for i, rid in enumerate(ids)}
        now_s = db.epoch(now)
        away = np.zeros(len(ids), bool)
        lapsed = np.full(len(ids), NEVER, np.int64)
        since = self._back_at.copy()
        window = now - timedelta(hours=self.st.ring_hours)
        for state in db.absent_residents(conn, window):
            i = index.get(state.resident_id)
            if i is None:
                continue
            if state.status in (ResidentStatus.MOVED, ResidentStatus.DECEASED):
                away[i] = True
            elif state.status == ResidentStatus.AWAY and state.away_until is not None:
                if state.away_until > now:
                    away[i] = True
                else:  # ran out without a home press: away until water is used again
                    since[i] = max(since[i], db.epoch(state.away_until))
                    started = state.last_away or state.away_until
                    lapsed[i] = db.epoch(started)
            for pressed in (state.last_away, state.last_home):
                if pressed is not None:
                    since[i] = max(since[i], db.epoch(pressed))
        back = self._was_away & ~away  # an absence ended since the last sweep
        self._back_at[back] = now_s
        since[back] = now_s
        self._was_away = away
        # seen up and about: a "fine" to a check-in, a passage at the door reminder
        fine = np.full(len(ids), NEVER, np.int64)
        for rid, at in db.fine_answers(conn, window, now).items():
            if (i := index.get(rid)) is not None:
                fine[i] = db.epoch(at)
        door = np.full(len(ids), NEVER, np.int64)
        # as far back as a reminder counts as working (`door_alive_h`)
        heard_from = min(window, now - timedelta(hours=self.st.door_alive_h))
        for rid, at in db.door_passages(conn, heard_from, now).items():
            if (i := index.get(rid)) is not None:
                door[i] = db.epoch(at)
        quarters = {str(part): i for i, part in enumerate(PartOfDay)}
        fine_dry = np.zeros((len(ids), 4), np.int64)
        learned_from = now - timedelta(days=self.st.routine_history_days)
        for rid, part, minutes in db.fine_dry_stretches(conn, learned_from, self.st.check_in_fine_nth):
            if (i := index.get(rid)) is not None and part in quarters:
                fine_dry[i, quarters[part]] = minutes * 60
        if self.st.check_in_found_fine_nth > 0:  # found well by a person after no answer
            within = timedelta(hours=self.st.check_in_found_fine_within_h)
            for rid, part, minutes in db.found_well_stretches(
                conn, learned_from, self.st.check_in_found_fine_nth, within
            ):
                if (i := index.get(rid)) is not None and part in quarters:
                    q = quarters[part]
                    fine_dry[i, q] = max(int(fine_dry[i, q]), minutes * 60)
        found = np.full(len(ids), NEVER, np.int64)
        for rid, began in db.found_needing_help(conn, learned_from).items():
            if (i := index.get(rid)) is not None:
                found[i] = db.epoch(began)
        return Presence(away, since, lapsed, fine, door, fine_dry, found)

    def _gateway_status(self, conn: psycopg.Connection[Any]) -> I64:
        ids = self._det.registry.gateway_ids
        status = db.gateways(conn, ids)
        return np.array([db.epoch(t) if (t := status.get(g)) is not None else NEVER for g in ids], np.int64)


def write_changes(conn: psycopg.Connection[Any], changes: Sequence[Change], now: datetime) -> None:
    """Raise and clear through alerts.store (the caller owns the transaction)."""
    # an escalation is a raise with tier 'neighbour': it lifts the open check-in alert
    raises = [
        AlertCandidate(
            c.kind,
            c.subject,
            c.resident_id,
            c.device_id,
            c.gateway_id,
            db.utc(c.since_s),
            c.details,
            c.tier,
        )
        for c in changes
        if c.action in ("raise", "escalate")
    ]
    if raises:
        raise_alerts(conn, raises, now)
    clears: dict[tuple[str, str], list[str]] = {}
    for c in changes:
        if c.action == "clear":
            clears.setdefault((c.kind, c.reason), []).append(c.subject)
    for (kind, reason), subjects in clears.items():
        clear_alerts(conn, kind, subjects, now, reason=reason)
    for c in changes:
        log.info("%s %s subject=%s since=%s", c.action, c.kind, c.subject, db.utc(c.since_s))
