"""Run history: each run's counts per rule, kept beside the journal for trends and restore."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from invariants.journal import run_rules, runs
from invariants.reports import RunReport

__all__ = ["HistoryRow", "read_history", "record_run"]


def record_run(conn: Connection, report: RunReport, restores: str | None = None) -> None:
    """Store one run and its per-rule results (inside the caller's transaction)."""
    changed = sum(r.repair.rows_changed for r in report.reports if r.repair and not report.dry_run)
    conn.execute(
        insert(runs).values(
            run_id=report.run_id,
            trigger=report.trigger,
            started_at=report.started_at.replace(tzinfo=None),
            duration=report.duration,
            repair=report.repair,
            dry_run=report.dry_run,
            scope=",".join(f"{k}={v}" for k, v in (report.scope or {}).items()) or None,
            exit_code=report.exit_code,
            rows_changed=changed,
            restores=restores,
        )
    )
    rows = [
        {
            "run_id": report.run_id,
            "rule_id": r.rule_id,
            "outcome": str(r.outcome),
            "severity": str(r.severity),
            "count": r.count,
            "rows_changed": r.repair.rows_changed if r.repair else 0,
            "duration": r.duration,
            "message": r.message,
        }
        for r in report.reports
    ]
    if rows:
        conn.execute(insert(run_rules), rows)


@dataclass(frozen=True)
class HistoryRow:
    """One rule's result in one past run."""

    run_id: str
    started_at: Any
    trigger: str
    repair: bool
    restores: str | None
    exit_code: int
    rule_id: str | None
    outcome: str | None
    count: int | None
    rows_changed: int


def read_history(
    conn: Connection, *, rule: str | None = None, last: int = 10
) -> Sequence[HistoryRow]:
    """The last ``last`` runs (newest first), each with its per-rule rows."""
    recent = select(runs.c.run_id).order_by(runs.c.started_at.desc()).limit(last)
    run_ids = list(conn.execute(recent).scalars())
    if not run_ids:
        return []
    query = (
        select(
            runs.c.run_id,
            runs.c.started_at,
            runs.c.trigger,
            runs.c.repair,
            runs.c.restores,
            runs.c.exit_code,
            run_rules.c.rule_id,
            run_rules.c.outcome,
            run_rules.c.count,
            run_rules.c.rows_changed,
        )
        .select_from(runs.outerjoin(run_rules, run_rules.c.run_id == runs.c.run_id))
        .where(runs.c.run_id.in_(run_ids))
        .order_by(runs.c.started_at.desc(), run_rules.c.rule_id)
    )
    if rule:
        query = query.where(run_rules.c.rule_id == rule)
    return [HistoryRow(*row) for row in conn.execute(query)]  # type: ignore[call-arg]
