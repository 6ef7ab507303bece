"""The alert outbox as Prometheus metrics, read from the database at scrape time.

Why from the database and not from counters in the dispatcher: `lovekey alerts worker` runs
`alerts.processes` processes (and several workers may share one database), and only one of
them serves the metrics port. The outbox and the delivery attempts are where every process
records what it did, so one query sees all of them, and the totals survive restarts. Several
workers scraped at once report the same numbers: aggregate them with `max`, not `sum`.

Labels are a notification's state, a channel's kind (`push`, `sms`) and an attempt's result;
never a recipient or a resident. Each scrape runs one statement under a short timeout; a
database that does not answer makes `lovekey_alerts_database_up` 0 and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lovekey.storage.connections import APPLICATION_NAME
from lovekey.vocabulary import CheckInAnswer, OutboxState

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 2.0

# channels are stored as 'push:0', 'push:1', 'sms': the index is the contact's nth push URL
_OUTBOX_SQL = """
SELECT 'state' AS what, state AS label, '' AS label2, count(*)::float8 AS value
  FROM alert_outbox GROUP BY state
UNION ALL
SELECT 'attempt', split_part(channel, ':', 1), result, count(*)::float8
  FROM delivery_attempt WHERE result <> 'started' GROUP BY 2, 3
UNION ALL
SELECT 'oldest_pending', '', '', coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
  FROM alert_outbox WHERE state = 'pending'
UNION ALL
SELECT 'oldest_due', '', '', coalesce(extract(epoch FROM now() - min(not_before)), 0)::float8
  FROM alert_outbox WHERE state = 'pending' AND not_before <= now()
UNION ALL
SELECT 'check_in', coalesce(answer, 'asking'), '', count(*)::float8
  FROM check_in_answer GROUP BY 2
"""


def outbox_registry(url: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OutboxCollector(url))
    return registry


class OutboxCollector:
    def __init__(self, url: str) -> None:
        self.url = url

    def _rows(self) -> list[tuple[str, str, str, float]] | None:
        try:
            with psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, round(SCRAPE_TIMEOUT_S)),
                application_name=f"{APPLICATION_NAME}-metrics",
                options=f"-c statement_timeout={int(SCRAPE_TIMEOUT_S * 1000)}",
            ) as conn:
                cur: psycopg.Cursor[Any] = conn.execute(_OUTBOX_SQL)
                return [(str(w), str(a), str(b), float(v)) for w, a, b, v in cur.fetchall()]
        except psycopg.Error as exc:
            log.warning("outbox metrics: database did not answer (%s)", type(exc).__name__)
            return None

    def collect(self) -> Iterator[Metric]:
        rows = self._rows()
        yield GaugeMetricFamily(
            "lovekey_alerts_database_up",
            "1 if the outbox could be read at this scrape",
            value=int(rows is not None),
        )
        if rows is None:
            return
        states = {state.value: 0.0 for state in OutboxState}
        attempts = CounterMetricFamily(
            "lovekey_alerts_delivery_attempts",
            "finished attempts to hand a notification to a channel, by channel kind and result",
            labels=["channel", "result"],
        )
        gauges: dict[str, float] = {"oldest_pending": 0.0, "oldest_due": 0.0}
        check_ins = {"asking": 0.0} | {answer.value: 0.0 for answer in CheckInAnswer}
        for what, label, label2, value in rows:
            if what == "state":
                states[label] = value
            elif what == "attempt":
                attempts.add_metric([label, label2], value)
            elif what == "check_in":
                check_ins[label] = value
            else:
                gauges[what] = value
        yield CounterMetricFamily(
            "lovekey_alerts_notifications_queued",
            "notifications ever queued in the outbox",
            value=sum(states.values()),
        )
        by_state = GaugeMetricFamily(
            "lovekey_alerts_outbox_notifications", "notifications in the outbox, by state", labels=["state"]
        )
        for state, count in sorted(states.items()):
            by_state.add_metric([state], count)
        yield by_state
        yield attempts
        yield GaugeMetricFamily(
            "lovekey_alerts_outbox_oldest_pending_seconds",
            "age of the oldest pending notification (0: none pending)",
            value=gauges["oldest_pending"],
        )
        asked = GaugeMetricFamily(
            "lovekey_alerts_check_ins",
            "residents asked first (the check-in stage), by how it ended ('asking': still running)",
            labels=["answer"],
        )
        for answer, count in sorted(check_ins.items()):
            asked.add_metric([answer], count)
        yield asked
        yield GaugeMetricFamily(
            "lovekey_alerts_outbox_oldest_due_seconds",
            "how long the longest-waiting due notification has waited (0: none); grows if dispatch is stuck",
            value=gauges["oldest_due"],
        )
