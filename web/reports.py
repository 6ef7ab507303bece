"""Report figures from grouped alert rows: pure functions, no database, no clock.

A *false alarm* is an alert a person closed saying nobody needed help: outcome `resident_ok`,
`away` or `false_data`. The false-alarm rate is false alarms per household-month: the false
alarms of a community in a month divided by its households (as they are now).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from lovekey.vocabulary import FALSE_ALARM_OUTCOMES, Outcome


def month_range(now: datetime, zone: ZoneInfo, months: int) -> tuple[datetime, datetime]:
    """[first day of the month `months - 1` months before now's, first day of next month)."""
    local = now.astimezone(zone)
    year, month = local.year, local.month
    end_year, end_month = (year + 1, 1) if month == 12 else (year, month + 1)
    start_index = year * 12 + (month - 1) - (months - 1)
    start = datetime(start_index // 12, start_index % 12 + 1, 1, tzinfo=zone)
    end = datetime(end_year, end_month, 1, tzinfo=zone)
    return start, end


def month_starts(start: datetime, end: datetime, zone: ZoneInfo) -> list[datetime]:
    """The first instants of the local months from `start` up to and including `end`."""
    out: list[datetime] = []
    local = start.astimezone(zone)
    year, month = local.year, local.month
    while True:
        first = datetime(year, month, 1, tzinfo=zone)
        if first > end:
            return out
        if first >= start:
            out.append(first)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


@dataclass(slots=True)
class CommunityMonth:
    community_id: str | None
    month: str  # 'YYYY-MM' local
    households: int = 0
    alerts: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_outcome: dict[str, int] = field(default_factory=dict)
    acknowledged: int = 0
    ack_p50_s: float | None = None
    ack_p90_s: float | None = None

    @property
    def false_alarms(self) -> int:
        return sum(self.by_outcome.get(o, 0) for o in FALSE_ALARM_OUTCOMES)

    @property
    def false_alarm_rate(self) -> float | None:
        """False alarms per household-month (None when the community has no households)."""
        return self.false_alarms / self.households if self.households else None


@dataclass(slots=True)
class Report:
    start: datetime
    end: datetime
    rows: list[CommunityMonth]
    kinds: list[str]
    # month -> (p50 s, p90 s, acknowledged) over all communities in scope
    ack_by_month: dict[str, tuple[float | None, float | None, int]] = field(default_factory=dict)

    def totals_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {k: 0 for k in self.kinds}
        for row in self.rows:
            for kind, n in row.by_kind.items():
                out[kind] = out.get(kind, 0) + n
        return out

    def totals_by_outcome(self) -> dict[str, int]:
        out: dict[str, int] = {o: 0 for o in Outcome}
        for row in self.rows:
            for outcome, n in row.by_outcome.items():
                out[outcome] = out.get(outcome, 0) + n
        return out

    def months(self) -> list[str]:
        return sorted({r.month for r in self.rows})

    def by_month(self) -> dict[str, dict[str, int]]:
        """month -> kind -> alerts, every kind present in every month."""
        out = {m: {k: 0 for k in self.kinds} for m in self.months()}
        for row in self.rows:
            for kind, n in row.by_kind.items():
                out[row.month][kind] += n
        return out

    def false_alarm_rate_by_community(self) -> dict[str, float]:
        """False alarms per household-month over the whole period, per community."""
        months = max(1, _months_between(self.start, self.end))
        false: dict[str, int] = {}
        households: dict[str, int] = {}
        for row in self.rows:
            key = row.community_id or "-"
            false[key] = false.get(key, 0) + row.false_alarms
            households[key] = row.households
        return {k: false[k] / (households[k] * months) for k in sorted(false) if households.get(k)}


def _months_between(start: datetime, end: datetime) -> int:
    return (end.year - start.year) * 12 + end.month - start.month


def build_report(
    rows: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    start: datetime,
    end: datetime,
    zone: ZoneInfo,
) -> Report:
    """Fold the grouped rows of `queries.report_rows` into one row per (community, month)."""
    households = {r["community_id"]: int(r["households"]) for r in rows["households"]}
    table: dict[tuple[str | None, str], CommunityMonth] = {}

    def cell(community: str | None, month: datetime) -> CommunityMonth:
        key = (community, f"{month.astimezone(zone):%Y-%m}")
        if key not in table:
            table[key] = CommunityMonth(community, key[1], households.get(community, 0))
        return table[key]

    kinds: set[str] = set()
    for r in rows["by_kind"]:
        c = cell(r["community_id"], r["month"])
        c.by_kind[r["kind"]] = int(r["n"])
        c.alerts += int(r["n"])
        kinds.add(r["kind"])
    for r in rows["by_outcome"]:
        cell(r["community_id"], r["month"]).by_outcome[r["outcome"]] = int(r["n"])
    ack_by_month: dict[str, tuple[float | None, float | None, int]] = {}
    for r in rows["ack"]:
        if r["all_communities"]:
            ack_by_month[f"{r['month'].astimezone(zone):%Y-%m}"] = (
                _float(r["ack_p50_s"]),
                _float(r["ack_p90_s"]),
                int(r["acknowledged"]),
            )
            continue
        c = cell(r["community_id"], r["month"])
        c.acknowledged = int(r["acknowledged"])
        c.ack_p50_s = _float(r["ack_p50_s"])
        c.ack_p90_s = _float(r["ack_p90_s"])
    ordered = sorted(table.values(), key=lambda c: (c.community_id or "\uffff", c.month))
    return Report(start, end, ordered, sorted(kinds), ack_by_month)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


CSV_FIELDS = (
    "community_id",
    "month",
    "households",
    "alerts",
    "acknowledged",
    "ack_p50_min",
    "ack_p90_min",
    "false_alarms",
    "false_alarm_rate_per_household_month",
)


def report_csv(report: Report) -> str:
    """One line per (community, month); a column per alert kind and per outcome."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    kind_cols = [f"kind_{k}" for k in report.kinds]
    outcome_cols = [f"outcome_{o}" for o in Outcome]
    writer.writerow([*CSV_FIELDS, *kind_cols, *outcome_cols])
    for row in report.rows:
        rate = row.false_alarm_rate
        writer.writerow(
            [
                row.community_id or "",
                row.month,
                row.households,
                row.alerts,
                row.acknowledged,
                _minutes(row.ack_p50_s),
                _minutes(row.ack_p90_s),
                row.false_alarms,
                "" if rate is None else f"{rate:.6f}",
                *[row.by_kind.get(k, 0) for k in report.kinds],
                *[row.by_outcome.get(o, 0) for o in Outcome],
            ]
        )
    return out.getvalue()


def _minutes(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 60:.1f}"


def report_json(report: Report) -> dict[str, Any]:
    return {
        "start": report.start.isoformat(),
        "end": report.end.isoformat(),
        "kinds": report.kinds,
        "false_alarm_outcomes": list(FALSE_ALARM_OUTCOMES),
        "rows": [
            {
                "community_id": r.community_id,
                "month": r.month,
                "households": r.households,
                "alerts": r.alerts,
                "by_kind": r.by_kind,
                "by_outcome": r.by_outcome,
                "acknowledged": r.acknowledged,
                "ack_p50_s": r.ack_p50_s,
                "ack_p90_s": r.ack_p90_s,
                "false_alarms": r.false_alarms,
                "false_alarm_rate": r.false_alarm_rate,
            }
            for r in report.rows
        ],
    }


# ----------------------------------------------------------------------------- bar charts


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: float
    group: str
    series: int


@dataclass(frozen=True, slots=True)
class BarChart:
    """Geometry of a grouped bar chart, drawn as inline SVG by the reports template."""

    width: int
    height: int
    plot_left: float
    plot_right: float
    plot_bottom: float
    bars: list[Bar]
    groups: list[tuple[float, str]]  # (x of the group's centre, label)
    series: list[str]
    ticks: list[tuple[float, float]]  # (y, value)


def bar_chart(
    groups: Sequence[tuple[str, Sequence[float]]],
    *,
    series: Sequence[str] = ("",),
    width: int = 640,
    height: int = 220,
) -> BarChart:
    """Grouped bars: `groups` is [(group label, [value per series])], heights to scale."""
    left, right, top, bottom = 44.0, 8.0, 10.0, 30.0
    plot_h = height - top - bottom
    max_value = max((v for _, values in groups for v in values), default=0.0)
    scale_max = nice_ceiling(max_value)
    n_series = max(1, len(series))
    group_w = (width - left - right) / max(1, len(groups))
    bar_w = group_w * 0.8 / n_series
    bars: list[Bar] = []
    centres: list[tuple[float, str]] = []
    for g, (label, values) in enumerate(groups):
        x0 = left + g * group_w + group_w * 0.1
        for s, value in enumerate(values):
            h = 0.0 if scale_max <= 0 else plot_h * value / scale_max
            bars.append(
                Bar(
                    round(x0 + s * bar_w, 2),
                    round(top + plot_h - h, 2),
                    round(max(1.0, bar_w * 0.9), 2),
                    round(h, 2),
                    value,
                    label,
                    s,
                )
            )
        centres.append((round(left + (g + 0.5) * group_w, 2), label))
    ticks = [(round(top + plot_h * (1 - f), 2), scale_max * f) for f in (0.0, 0.5, 1.0)]
    return BarChart(width, height, left, width - right, top + plot_h, bars, centres, list(series), ticks)


def nice_ceiling(value: float) -> float:
    """1, 2, 2.5 or 5 times a power of ten, at least `value` (0 stays 0)."""
    if value <= 0:
        return 0.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= value:
            return float(factor * magnitude)
    return float(10 * magnitude)  # pragma: no cover - the loop always returns


def report_charts(report: Report) -> dict[str, BarChart]:
    """The four charts of the reports page."""
    by_month = report.by_month()
    ack = report.ack_by_month
    return {
        "by_kind": bar_chart(
            [(m, [float(by_month[m][k]) for k in report.kinds]) for m in by_month],
            series=report.kinds,
        ),
        # one group, a coloured bar per outcome named in the legend (the names are long)
        "outcomes": bar_chart(
            [("", [float(n) for n in report.totals_by_outcome().values()])],
            series=list(report.totals_by_outcome()),
        ),
        "ack": bar_chart(
            [(m, [(ack[m][0] or 0.0) / 60, (ack[m][1] or 0.0) / 60]) for m in sorted(ack)],
            series=["p50", "p90"],
        ),
        "false_rate": bar_chart(
            [(c, [rate]) for c, rate in report.false_alarm_rate_by_community().items()],
            series=["false_alarm_rate"],
        ),
    }


def duration_minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.0f}"
