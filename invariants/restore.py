"""``restore RUN_ID``: put back exactly what a repair run changed, from its journal."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    MetaData,
    Numeric,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import NoSuchTableError

from invariants.errors import UsageError
from invariants.journal import ensure_tables, journal, json_object, key_columns, row_matches_entry
from invariants.locking import repair_transaction

__all__ = ["RestoreConflict", "RestoreResult", "restore_run"]

PAGE = 500


class RestoreConflict(Exception):
    """Rows changed again since the repair; restoring them would lose those changes."""

    def __init__(self, count: int, sample: Sequence[dict[str, Any]]) -> None:
        super().__init__(f"{count} rows changed since the repair")
        self.count = count
        self.sample = sample


@dataclass
class RestoreResult:
    """What a restore put back (or would, in a dry run)."""

    run_id: str
    restore_id: str
    rows: int = 0
    by_table: dict[str, int] = field(default_factory=dict)
    rules: set[str] = field(default_factory=set)
    dry_run: bool = False
    duration: float = 0.0


def restore_run(
    engine: Engine,
    run_id: str,
    *,
    rule: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    lock_timeout: float = 60.0,
) -> RestoreResult:
    """Undo a run's journalled changes in one transaction, newest change first."""
    result = RestoreResult(run_id=run_id, restore_id=uuid.uuid4().hex[:12], dry_run=dry_run)
    clock = time.perf_counter()
    with engine.connect() as conn, repair_transaction(conn, lock_timeout) as tx:
        ensure_tables(conn)
        selected = _selection(run_id, rule)
        _check_selection(conn, run_id, rule, selected)
        tables = _reflect(conn, selected)
        if not force:
            _check_conflicts(conn, selected, tables)
        for batch in _batches(conn, selected):
            _apply(conn, tables[batch[0]["table_name"]], batch, result)
        conn.execute(update(journal).where(*selected).values(restored_by=result.restore_id))
        result.duration = time.perf_counter() - clock
        if dry_run:
            tx.rollback()
        else:
            _record(conn, result)
            tx.commit()
    return result


def _selection(run_id: str, rule: str | None) -> list[Any]:
    where = [journal.c.run_id == run_id, journal.c.restored_by.is_(None)]
    if rule:
        where.append(journal.c.rule_id == rule)
    return where


def _check_selection(conn: Connection, run_id: str, rule: str | None, selected: list[Any]) -> None:
    if conn.execute(select(func.count()).where(*selected)).scalar_one():
        return
    restored_by = conn.execute(
        select(journal.c.restored_by).where(journal.c.run_id == run_id).limit(1)
    ).scalar()
    what = f"run {run_id}" + (f" rule {rule}" if rule else "")
    if restored_by:
        raise UsageError(f"{what} was already restored (by restore run {restored_by})")
    raise UsageError(f"{what} has no journalled changes (see invariant-run history)")


def _reflect(conn: Connection, selected: list[Any]) -> dict[str, Table]:
    names = conn.execute(select(journal.c.table_name).where(*selected).distinct()).scalars()
    meta = MetaData()
    tables = {}
    for name in names:
        schema, _, table = name.rpartition(".")
        try:
            tables[name] = Table(table, meta, schema=schema or None, autoload_with=conn)
        except NoSuchTableError:
            raise UsageError(f"cannot restore: table {name} no longer exists") from None
    return tables


def _check_conflicts(conn: Connection, selected: list[Any], tables: dict[str, Table]) -> None:
    """Stop when a row's current state is not what the repair left (someone changed it)."""
    latest = journal.alias("latest")
    newest_per_row = (
        select(func.max(latest.c.id))
        .where(
            latest.c.run_id == journal.c.run_id,
            latest.c.table_name == journal.c.table_name,
            latest.c.k1 == journal.c.k1,
            func.coalesce(latest.c.k2, "") == func.coalesce(journal.c.k2, ""),
            func.coalesce(latest.c.k3, "") == func.coalesce(journal.c.k3, ""),
        )
        .scalar_subquery()
    )
    count, sample = 0, []
    for name, table in tables.items():
        current = (
            select(json_object(conn, list(table.columns)))
            .where(row_matches_entry(table))
            .scalar_subquery()
        )
        missing = literal("<missing>")
        changed = (
            select(journal.c.rule_id, journal.c.table_name, journal.c.pk, journal.c.action)
            .where(*selected, journal.c.table_name == name, journal.c.id == newest_per_row)
            .where(func.coalesce(current, missing) != func.coalesce(journal.c.after, missing))
        )
        count += conn.execute(select(func.count()).select_from(changed.subquery())).scalar_one()
        sample += [dict(r._mapping) for r in conn.execute(changed.limit(20))]
    if count:
        raise RestoreConflict(count, sample[:20])


def _batches(conn: Connection, selected: list[Any]) -> Iterator[list[dict[str, Any]]]:
    """Journal entries newest first, in pages, grouped into runs of one table and action."""
    last_id = None
    while True:
        query = select(
            journal.c.id,
            journal.c.table_name,
            journal.c.action,
            journal.c.pk,
            journal.c.before,
            journal.c.rule_id,
        ).where(*selected)
        if last_id is not None:
            query = query.where(journal.c.id < last_id)
        page = [
            dict(r._mapping) for r in conn.execute(query.order_by(journal.c.id.desc()).limit(PAGE))
        ]
        if not page:
            return
        last_id = page[-1]["id"]
        group = [page[0]]
        for entry in page[1:]:
            if (entry["table_name"], entry["action"]) == (
                group[0]["table_name"],
                group[0]["action"],
            ):
                group.append(entry)
            else:
                yield group
                group = [entry]
        yield group


def _apply(
    conn: Connection, table: Table, batch: list[dict[str, Any]], result: RestoreResult
) -> None:
    """Undo one group of same-table, same-action journal entries with one executemany."""
    pk = key_columns(table)
    action = batch[0]["action"]
    keys = [{f"k_{c.key}": _to_python(c, json.loads(e["pk"])[c.key]) for c in pk} for e in batch]
    match = and_(*(c == bindparam(f"k_{c.key}") for c in pk))
    if action == "insert":
        conn.execute(delete(table).where(match), keys)
    elif action == "update":
        others = [c for c in table.columns if c not in pk]
        values = [
            {
                **key,
                **{f"v_{c.key}": _to_python(c, json.loads(e["before"]).get(c.key)) for c in others},
            }
            for key, e in zip(keys, batch, strict=True)
        ]
        conn.execute(
            update(table).where(match).values({c.key: bindparam(f"v_{c.key}") for c in others}),
            values,
        )
    else:
        rows = [
            {c.key: _to_python(c, json.loads(e["before"]).get(c.key)) for c in table.columns}
            for e in batch
        ]
        conn.execute(insert(table), rows)
    result.rows += len(batch)
    result.by_table[table.fullname] = result.by_table.get(table.fullname, 0) + len(batch)
    result.rules.update(e["rule_id"] for e in batch)


def _to_python(column: Any, value: Any) -> Any:
    """A JSON value from the journal, back in the Python type the column binds."""
    if value is None:
        return None
    kind = column.type
    if isinstance(kind, DateTime) and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if isinstance(kind, Date) and isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    if isinstance(kind, Boolean):
        return bool(value)
    if isinstance(kind, Numeric) and not isinstance(value, bool):
        return decimal.Decimal(str(value)) if kind.asdecimal else value
    return value


def _record(conn: Connection, result: RestoreResult) -> None:
    from invariants.journal import runs

    conn.execute(
        insert(runs).values(
            run_id=result.restore_id,
            trigger="restore",
            started_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
            duration=result.duration,
            repair=False,
            dry_run=False,
            scope=None,
            exit_code=0,
            rows_changed=result.rows,
            restores=result.run_id,
        )
    )
