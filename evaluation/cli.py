"""`lovekey evaluate`: replay a history through the detectors and score them against the truth.

The history comes from the simulator in-process (`--residents N`) or from the database with a
ground-truth file (`--truth FILE`); either way the very detector `lovekey detect` runs is scored.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lovekey.config import Settings
from lovekey.errors import LoveKeyError
from lovekey.vocabulary import AlertKind, EventType

if TYPE_CHECKING:
    from lovekey.detectors.engine import Registry
    from lovekey.evaluation.replay import RaisedAlert
    from lovekey.evaluation.scoring import Truth

DEFAULT_START = "2026-03-01T00:00:00+08:00"
# the plain field rule, as a street office runs it: < 10 L in the last 12 h of known data
FIELD_RULE: dict[str, Any] = {
    "low_usage_learn": False,
    "low_usage_min_dry_h": 0.0,
    "routine_enabled": False,
    "floor_enabled": False,
    "routine_check_in_enabled": False,
}


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate", help="replay history through the detectors and score them against the truth"
    )
    p.add_argument(
        "--truth",
        type=Path,
        metavar="FILE",
        help="ground truth (JSON Lines); without --residents the history is read from the database",
    )
    p.add_argument("--residents", type=int, help="simulate this many residents in-process")
    p.add_argument("--days", type=float, default=30.0, help="days scored (default 30)")
    p.add_argument(
        "--warmup-days",
        type=float,
        default=28.0,
        help="simulated days before the scored ones, for learning (default 28)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scenario", type=Path, help="simulator scenario file (default scenario)")
    p.add_argument("--start", default=DEFAULT_START, help="start of the simulation (RFC 3339)")
    p.add_argument("--step-min", type=int, default=15, help="minutes between sweeps (default 15)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--alerts-out", type=Path, metavar="FILE", help="also write every alert raised (JSON Lines)"
    )
    p.add_argument(
        "--unanswered",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="sensitivity: this share of healthy residents' check-ins go unanswered (default 0)",
    )
    p.add_argument(
        "--quiet-hours",
        metavar="H-H",
        help="local hours in which nobody is asked, e.g. 22-7 (default: none)",
    )
    p.add_argument(
        "--door-share",
        type=float,
        default=0.5,
        metavar="SHARE",
        help="simulated households with a door reminder (default 0.5; scored apart)",
    )
    p.add_argument(
        "--mobile-known",
        action="store_true",
        help="the registry says which residents carry a mobile when out"
        " (detect.routine_check_in_mobile, as the simulator draws them)",
    )
    p.add_argument(
        "--no-field-rule",
        action="store_true",
        help="skip the second replay with the plain field rule (issue 17's comparison)",
    )
    p.set_defaults(handler=_evaluate)


# -- evaluate ---------------------------------------------------------------------------------


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.evaluation.replay import alerts_json, replay
    from lovekey.evaluation.report import render
    from lovekey.evaluation.scoring import score

    st = settings.detect
    started = time.perf_counter()
    if args.residents:
        from lovekey.evaluation.sources import from_world
        from lovekey.simulator import Scenario, World

        start = settings.parse_time(args.start)
        world = World.build(
            Scenario.load(args.scenario),
            residents=args.residents,
            seed=args.seed,
            start=start,
            days=args.warmup_days + args.days,
        )
        source = from_world(world, st)
        scored_from = source.data.start_s + int(args.warmup_days * 86400)
    elif args.truth:
        from lovekey.evaluation.sources import from_database
        from lovekey.storage import connect, database_url

        with database_url(settings) as url, connect(url) as conn:
            source = from_database(conn, st, args.truth)
        scored_from = source.data.start_s + int(args.warmup_days * 86400)
        if scored_from >= source.data.end_s:
            scored_from = source.data.start_s
    else:
        raise LoveKeyError("give --residents N (simulate in-process) or --truth FILE")
    offset = settings.zone.utcoffset(datetime.fromtimestamp(source.data.start_s, UTC))
    offset_s = int(offset.total_seconds()) if offset is not None else 0
    from dataclasses import replace

    import numpy as np

    from lovekey.evaluation.replay import ReplayEvent
    from lovekey.evaluation.scoring import field_rule_comparison
    from lovekey.evaluation.sources import stage_models
    from lovekey.simulator.door import door_events

    model, door = stage_models(
        source,
        seed=args.seed,
        unanswered=args.unanswered,
        door_share=args.door_share if args.residents else 0.0,
        utc_offset_s=offset_s,
    )
    spans = model.spans
    residents = list(source.data.registry.resident_ids)
    passages = door_events(door, residents, spans, source.data.start_s, source.data.end_s)
    events = [
        *source.data.events,
        *(ReplayEvent(t + 5, t, EventType.PASSAGE, True, r, f"DR-{r}", "") for r, t in passages),
    ]
    with_door = {r for r in residents if door.has_reminder(r)}
    registry = replace(source.data.registry, door=np.array([r in with_door for r in residents], np.bool_))
    if args.mobile_known:
        registry = with_mobiles(registry, model.carries_mobile)
    slow_extra = _late_answerers_asks(settings)
    data = replace(
        source.data,
        registry=registry,
        events=events,
        check_in=model,
        quiet_hours=_quiet_hours(args.quiet_hours),
        slow_extra=slow_extra,
        slow_after=settings.alerts.check_in_slow_after,
        slow_window_s=settings.alerts.check_in_slow_days * 86400,
    )
    built = time.perf_counter()
    alerts = replay(
        data,
        st,
        step_s=args.step_min * 60,
        utc_offset_s=offset_s,
        away_default_s=int(settings.ingest.away_default_h * 3600),
        max_flow_lpm=settings.ingest.max_flow_lpm,
    )
    field_alerts = None
    if not args.no_field_rule:
        field_alerts = replay(
            source.data,
            st.model_copy(update=FIELD_RULE),
            step_s=args.step_min * 60,
            utc_offset_s=offset_s,
            away_default_s=int(settings.ingest.away_default_h * 3600),
            max_flow_lpm=settings.ingest.max_flow_lpm,
        )
    replayed = time.perf_counter()
    score_args: dict[str, Any] = {
        "start_s": scored_from,
        "end_s": source.data.end_s,
        "report_interval_s": source.report_interval_s,
        "gateway_of": source.gateway_of,
        "settings": st,
        "utc_offset_s": offset_s,
        "away_presses": [
            (e.resident_id, e.ts_s) for e in source.data.events if e.type == EventType.AWAY and e.resident_id
        ],
    }
    report = score(alerts, source.truth, households=source.households, **score_args)
    report["by_household"] = by_household(alerts, source.truth, residents, with_door, score_args)
    if field_alerts is not None:
        report["field_rule"] = field_rule_comparison(
            alerts, field_alerts, source.truth, start_s=scored_from, end_s=source.data.end_s
        )
    report["run"] = {
        "residents": args.residents,
        "seed": args.seed if args.residents else None,
        "warmup_days": args.warmup_days,
        "readings": len(source.data.ts_s),
        "sweep_every_min": args.step_min,
        "unanswered": args.unanswered,
        "quiet_hours": args.quiet_hours,
        "late_answerers_extra_asks": data.slow_extra,
        "history_s": round(built - started, 1),
        "replay_s": round(replayed - built, 1),
    }
    if args.alerts_out:
        with args.alerts_out.open("w", encoding="utf-8") as fh:
            for row in alerts_json(alerts):
                fh.write(json.dumps(row) + "\n")
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(render(report))
        run = report["run"]
        print(f"({run['readings']:,} readings; history {run['history_s']} s, replay {run['replay_s']} s)")
    return 0


def with_mobiles(registry: Registry, carries_mobile: Callable[[str], bool]) -> Registry:
    """The registry as staff would fill it in at enrolment: each meter's resident carries a
    mobile when out (`detect.routine_check_in_mobile`) or not."""
    from dataclasses import replace

    import numpy as np

    per_resident = [carries_mobile(r) for r in registry.resident_ids]
    mobile = np.array([*per_resident, False], np.bool_)[registry.resident_of]  # -1: no resident
    return replace(registry, params=replace(registry.params, check_in_mobile=mobile))


def _late_answerers_asks(settings: Settings) -> int:
    """How many more asks a late answerer gets, as the alerts would give them (the chains'
    `check_in_slow` of a welfare alert; who: `alerts.check_in_slow_after` / `_days`)."""
    from lovekey.alerts.chains import ChainBook

    chain = ChainBook.load(settings.alerts.chains_file).chain_for(AlertKind.ROUTINE_BREAK)
    return len(chain.check_in_slow) if chain.check_in else 0


def _quiet_hours(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        start, end = (int(part) for part in text.split("-"))
    except ValueError as exc:
        raise LoveKeyError(f"--quiet-hours: expected H-H, e.g. 22-7, got {text!r}") from exc
    if not (0 <= start < 24 and 0 <= end < 24):
        raise LoveKeyError("--quiet-hours: hours are 0-23")
    return start, end


def by_household(
    alerts: Sequence[RaisedAlert],
    truth: Sequence[Truth],
    residents: Sequence[str],
    with_door: Collection[str],
    score_args: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """Issue 14's figures for households with a door reminder and for water-only ones, each
    scored on its own residents' alerts and truth with the same arguments as the whole (the
    away presses included: without them an absence whose press was lost counted as one the
    platform was told of)."""
    from lovekey.evaluation.scoring import score

    return {
        name: _group_summary(
            score(
                [a for a in alerts if (a.resident_id in with_door) == keep],
                [t for t in truth if t.resident_id is not None and (t.resident_id in with_door) == keep],
                households=sum(1 for r in residents if (r in with_door) == keep),
                **score_args,
            )
        )
        for name, keep in (("door_reminder", True), ("water_only", False))
        if any((r in with_door) == keep for r in residents)
    }


def _group_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The issue-14 figures of one kind of household, from its own score."""
    sg, nb, nu = report["stages"], report["neighbour"], report["no_use"]
    return {
        "households": report["households"],
        "check_ins_per_household_month": sg["check_ins_per_household_month"],
        "false_neighbour_per_household_month": nb["false_per_household_month"],
        "daytime_incidents": sg["daytime_incidents"],
        "onset_to_check_in_median_h": sg["onset_to_first_contact_median_h"],
        "onset_to_neighbour_median_h": sg["onset_to_neighbour_median_h"],
        "onset_to_neighbour_p90_h": sg["onset_to_neighbour_p90_h"],
        "recall_after_12h": nu["recall_after_12h"],
        "caused_by_silent_meter_or_away": nb["caused_by_silent_meter_or_away"],
    }
