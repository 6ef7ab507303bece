"""The scoring report as a terminal table (`lovekey evaluate` prints it)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def render(report: Mapping[str, Any]) -> str:
    """The report as a terminal table."""
    head = (
        f"{'rule':<16}{'alerts':>7}{'false':>7}{'incid.':>7}{'found':>7}{'recall':>8}"
        f"{'precis.':>8}{'false/hh-mo':>12}{'median h':>10}{'p90 h':>8}"
    )
    lines = [
        f"{report['households']} households x {report['days']} days"
        f" ({report['household_months']} household-months scored)",
        head,
        "-" * len(head),
    ]
    for r in report["rules"]:
        lines.append(
            f"{r['rule']:<16}{r['alerts']:>7}{r['false_alerts']:>7}{r['incidents']:>7}"
            f"{r['detected']:>7}{_pct(r['recall']):>8}{_pct(r['precision']):>8}"
            f"{_num(r['false_per_household_month'], 3):>12}{_num(r['median_h'], 1):>10}"
            f"{_num(r['p90_h'], 1):>8}"
        )
    lost = {r["rule"]: r["lost_on_the_way"] for r in report["rules"] if r.get("lost_on_the_way")}
    if lost:
        lines.append(f"not judged, lost with their gateway on the way: {json.dumps(lost)}")
    nu, nb = report["no_use"], report["neighbour"]
    lines += [
        "",
        f"no-use incidents: {nu['incidents']} ({nu['not_judged_meter_silent']} while the meter"
        f" could not be heard); due after 12 h: {nu['due_after_12h']};"
        f" found by low_usage or routine_break: {nu['detected_by_low_usage_or_routine']}"
        f" (recall {_pct(nu['recall_after_12h'])})",
        f"starting 07:00-19:00: {nu['daytime_incidents']}; routine_break found"
        f" {nu['routine_break_daytime_detected']}, median {_num(nu['routine_break_daytime_median_h'], 1)} h,"
        f" p90 {_num(nu['routine_break_daytime_p90_h'], 1)} h; first alert of any rule: median"
        f" {_num(nu['first_alert_daytime_median_h'], 1)} h",
        f"neighbour alerts: {nb['alerts']}, false {nb['false_alerts']}"
        f" ({_num(nb['false_per_household_month'], 3)} per household-month);"
        f" caused by a silent meter or an away button: {nb['caused_by_silent_meter_or_away']}"
        f" (during absences whose press was lost on the way:"
        f" {nb['during_absences_whose_press_was_lost']})",
        f"false ones happened during: {json.dumps(nb['false_during'])}",
        f"all neighbour checks: {_num(report['checks_per_household_month'], 3)} per household-month",
    ]
    sg = report.get("stages")
    if sg:
        lines += [
            f"check-ins: {sg['check_ins']} ({_num(sg['check_ins_per_household_month'], 3)} per"
            f" household-month); answers: {json.dumps(sg['answers'])}",
            f"daytime no-use incidents: {sg['daytime_incidents']}; onset to first contact (check-in"
            f" or neighbour): median {_num(sg['onset_to_first_contact_median_h'], 1)} h, p90"
            f" {_num(sg['onset_to_first_contact_p90_h'], 1)} h ({sg['daytime_reached']} reached);"
            f" onset to neighbour: median {_num(sg['onset_to_neighbour_median_h'], 1)} h, p90"
            f" {_num(sg['onset_to_neighbour_p90_h'], 1)} h ({sg['daytime_neighbour_reached']} reached)",
        ]
    for name, g in (report.get("by_household") or {}).items():
        lines.append(
            f"{name}: {g['households']} households; check-ins {_num(g['check_ins_per_household_month'], 3)}"
            f" and false neighbour alerts {_num(g['false_neighbour_per_household_month'], 3)} per"
            f" household-month; daytime no-use {g['daytime_incidents']}: onset to check-in median"
            f" {_num(g['onset_to_check_in_median_h'], 1)} h, to neighbour median"
            f" {_num(g['onset_to_neighbour_median_h'], 1)} h"
            f" (p90 {_num(g['onset_to_neighbour_p90_h'], 1)} h);"
            f" recall after 12 h {_pct(g['recall_after_12h'])}"
        )
    fr = report.get("field_rule")
    if fr:
        for key, label in (
            ("field_quiet", "residents the field rule is quiet for"),
            ("field_fires_on_ordinary_days", "residents it fires on in ordinary days"),
        ):
            c = fr[key]
            lines.append(
                f"vs the field rule, {label}: {c['incidents']} no-use incidents, field rule flagged"
                f" {c['field_flagged']}, LoveKey {c['lovekey_flagged']}; LoveKey later {c['later']}"
                f" (median {_num(c['later_median_h'], 1)} h, max {_num(c['later_max_h'], 1)} h),"
                f" missed {c['missed']}"
            )
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"
