"""Retention of alert records: resolved alerts past `alerts.records_keep_days` are purged with
everything that hangs off them (history, notifications, delivery attempts, provider receipts).

An alert is the record of who was told what and when, so it is kept while someone may still
ask: by default three years after it was resolved, the general limitation period for civil
claims in China (Civil Code, art. 188). After that it holds names and phone numbers for no
purpose, and the Personal Information Protection Law (art. 19) asks for the shortest period
necessary. Unresolved alerts are never purged, however old.

What hangs off an alert is found in the catalogue, by foreign key, at every purge: a table
added later that references `alert` or `alert_outbox` is purged with them without a change
here (tests/test_records.py checks that every `alert_id`/`outbox_id` column has such a key).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

BATCH = 500  # alerts per transaction: short transactions, no long lock on the outbox


@dataclass(slots=True)
class PurgeReport:
    cutoff: datetime
    alerts: int = 0
    digests: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows deleted, dependents too

    def add(self, table: str, n: int) -> None:
        if n:
            self.rows[table] = self.rows.get(table, 0) + n


def records_cutoff(now: datetime, keep_days: int) -> datetime:
    return now - timedelta(days=keep_days)


def purge_alert_records(
    conn: psycopg.Connection[Any], cutoff: datetime, *, dry_run: bool = False
) -> PurgeReport:
    """Delete resolved alerts resolved before `cutoff`, digests queued before it and provider
    callbacks received before it, with their dependents. `conn` must be autocommit: each batch
    is its own transaction."""
    report = PurgeReport(cutoff)
    children = _children(conn)
    if dry_run:
        row = conn.execute(
            "SELECT count(*) FROM alert WHERE status = 'resolved' AND resolved_at < %s", (cutoff,)
        ).fetchone()
        report.alerts = int(row[0]) if row else 0
        row = conn.execute(
            "SELECT count(*) FROM alert_outbox WHERE alert_id IS NULL AND created_at < %s", (cutoff,)
        ).fetchone()
        report.digests = int(row[0]) if row else 0
        return report
    while True:
        with conn.transaction():
            conn.execute("SET LOCAL lovekey.purging = 'on'")
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM alert WHERE status = 'resolved' AND resolved_at < %s"
                    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                    (cutoff, BATCH),
                )
            ]
            if ids:
                _delete(conn, children, "alert", sql.SQL("id = ANY(%s)"), (ids,), report)
                report.alerts += len(ids)
        if len(ids) < BATCH:
            break
    while True:
        with conn.transaction():
            conn.execute("SET LOCAL lovekey.purging = 'on'")
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM alert_outbox WHERE alert_id IS NULL AND created_at < %s"
                    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                    (cutoff, BATCH),
                )
            ]
            if ids:
                _delete(conn, children, "alert_outbox", sql.SQL("id = ANY(%s)"), (ids,), report)
                report.digests += len(ids)
        if len(ids) < BATCH:
            break
    with conn.transaction():
        # every callback a provider (or a stranger) posted, kept for the record of refusals
        cur = conn.execute("DELETE FROM provider_callback WHERE received_at < %s", (cutoff,))
        report.add("provider_callback", cur.rowcount)
    if report.alerts or report.digests:
        log.info(
            "purged %d alerts resolved and %d digests queued before %s (%s)",
            report.alerts,
            report.digests,
            cutoff.date().isoformat(),
            ", ".join(f"{t} {n}" for t, n in sorted(report.rows.items())),
        )
    return report


# (child table, its column, the parent's referenced column) per parent table
_Children = dict[str, list[tuple[str, str, str]]]


def _children(conn: psycopg.Connection[Any]) -> _Children:
    """Every single-column foreign key in the schema, by the table it references."""
    rows = conn.execute(
        """
        SELECT c.confrelid::regclass::text, c.conrelid::regclass::text, ca.attname, pa.attname
        FROM pg_constraint c
        JOIN pg_attribute ca ON ca.attrelid = c.conrelid AND ca.attnum = c.conkey[1]
        JOIN pg_attribute pa ON pa.attrelid = c.confrelid AND pa.attnum = c.confkey[1]
        WHERE c.contype = 'f' AND cardinality(c.conkey) = 1
          AND c.connamespace = current_schema()::regnamespace
        """
    ).fetchall()
    children: _Children = {}
    for parent, child, column, parent_column in rows:
        children.setdefault(parent, []).append((child, column, parent_column))
    return children


def _delete(
    conn: psycopg.Connection[Any],
    children: _Children,
    table: str,
    where: sql.Composable,
    params: tuple[Any, ...],
    report: PurgeReport,
    depth: int = 0,
) -> None:
    """Delete `table`'s rows matching `where`, after the rows of every table that references them."""
    if depth > 8:
        raise RuntimeError(f"foreign keys nest deeper than 8 tables below alert at {table}")
    for child, column, parent_column in children.get(table, []):
        if child == table:
            continue  # a row pointing at another of its own table: deleted with the batch
        child_where = sql.SQL("{} IN (SELECT {} FROM {} WHERE {})").format(
            sql.Identifier(column), sql.Identifier(parent_column), sql.Identifier(table), where
        )
        _delete(conn, children, child, child_where, params, report, depth + 1)
    cur = conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(table), where), params)
    report.add(table, cur.rowcount)
