"""The repair journal: every row a repair touches, before and after, in the repaired database.

Rows are journalled set-based (``INSERT INTO journal SELECT ... FROM target``) in the same
transaction as the change, so a repair and its record commit or vanish together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement, Delete, Insert, Update

__all__ = [
    "JOURNAL_VERSION",
    "JournalRefused",
    "ensure_tables",
    "execute_journalled",
    "journal",
    "run_rules",
    "runs",
]

JOURNAL_VERSION = 1
MAX_KEY_COLUMNS = 3

metadata = MetaData()
_Id = BigInteger().with_variant(Integer, "sqlite")

meta = Table(
    "invariants_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)

runs = Table(
    "invariants_runs",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("trigger", String(32), nullable=False),
    Column("started_at", DateTime, nullable=False, index=True),
    Column("duration", Float, nullable=False),
    Column("repair", Boolean, nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("scope", String(255)),
    Column("exit_code", Integer, nullable=False),
    Column("rows_changed", Integer, nullable=False),
    Column("restores", String(32)),
)

run_rules = Table(
    "invariants_run_rules",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("rule_id", String(200), primary_key=True),
    Column("outcome", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("count", Integer),
    Column("rows_changed", Integer, nullable=False),
    Column("duration", Float, nullable=False),
    Column("message", Text),
)

journal = Table(
    "invariants_journal",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    Column("rule_id", String(200), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("table_name", String(200), nullable=False),
    Column("action", String(8), nullable=False),
    Column("k1", String(255), nullable=False),
    Column("k2", String(255)),
    Column("k3", String(255)),
    Column("pk", Text, nullable=False),
    Column("before", Text),
    Column("after", Text),
    Column("restored_by", String(32)),
    Index("ix_invariants_journal_run", "run_id", "seq"),
    Index("ix_invariants_journal_row", "table_name", "k1"),
)


class JournalRefused(Exception):
    """A repair statement whose rows cannot be journalled; it is never executed."""


def ensure_tables(conn: Connection) -> None:
    """Create the journal and history tables on first use, and check their version."""
    metadata.create_all(conn, checkfirst=True)
    found = conn.execute(select(meta.c.value).where(meta.c.key == "journal_version")).scalar()
    if found is None:
        conn.execute(insert(meta).values(key="journal_version", value=str(JOURNAL_VERSION)))
    elif int(found) > JOURNAL_VERSION:
        raise JournalRefused(
            f"the journal tables are version {found}, newer than this invariants "
            f"({JOURNAL_VERSION}); upgrade invariants"
        )


def json_object(conn: Connection, columns: Sequence[ColumnElement[Any]]) -> ColumnElement[Any]:
    """A SQL expression building a JSON object text of ``columns``, in the dialect's own way."""
    args: list[ColumnElement[Any]] = []
    for column in columns:
        name = str(column.key).replace("'", "''")
        args += [literal_column(f"'{name}'"), column]
    name = conn.dialect.name
    if name == "postgresql":
        return cast(func.json_build_object(*args), Text)
    if name == "sqlite":
        return func.json_object(*args)
    return func.JSON_OBJECT(*args)


def key_columns(table: Table) -> list[Column[Any]]:
    """The primary-key columns that identify a journalled row; refuse what has none."""
    pk = list(table.primary_key.columns)
    if not pk:
        raise JournalRefused(
            f"table {table.name} has no primary key, so its rows cannot be journalled"
        )
    if len(pk) > MAX_KEY_COLUMNS:
        raise JournalRefused(
            f"table {table.name} has a {len(pk)}-column primary key; "
            f"the journal keeps at most {MAX_KEY_COLUMNS}"
        )
    return pk


def _key_text(pk: Sequence[Column[Any]]) -> list[ColumnElement[Any]]:
    parts: list[ColumnElement[Any]] = [cast(c, String(255)) for c in pk]
    return parts + [literal(None, String(255))] * (MAX_KEY_COLUMNS - len(parts))


def _entry_columns(run_id: str, rule_id: str, seq: int, table: Table, action: str) -> list[Any]:
    return [
        literal(run_id, String(32)),
        literal(rule_id, String(200)),
        literal(seq, Integer),
        literal(table.fullname, String(200)),
        literal(action, String(8)),
    ]


_ENTRY = ["run_id", "rule_id", "seq", "table_name", "action", "k1", "k2", "k3", "pk", "before"]


def record_before(
    conn: Connection, stmt: Update | Delete, run_id: str, rule_id: str, seq: int
) -> int:
    """Journal the rows an update or delete is about to change; returns how many."""
    table: Table = stmt.table  # type: ignore[assignment]
    pk = key_columns(table)
    action = "update" if isinstance(stmt, Update) else "delete"
    source = select(
        *_entry_columns(run_id, rule_id, seq, table, action),
        *_key_text(pk),
        json_object(conn, pk),
        json_object(conn, list(table.columns)),
    ).select_from(table)
    if stmt.whereclause is not None:
        source = source.where(stmt.whereclause)
    if conn.dialect.name != "sqlite":  # SQLite: the repair already is the only writer
        source = source.with_for_update(of=table)  # no one changes them before the statement
    return conn.execute(insert(journal).from_select(_ENTRY, source)).rowcount


def record_inserted(
    conn: Connection,
    table: Table,
    keys: Sequence[Sequence[Any]],
    run_id: str,
    rule_id: str,
    seq: int,
) -> None:
    """Journal the keys of rows an insert created (from its RETURNING rows)."""
    pk = key_columns(table)
    rows = []
    for key in keys:
        texts = [str(v) for v in key] + [None] * (MAX_KEY_COLUMNS - len(pk))
        rows.append(
            {
                "run_id": run_id,
                "rule_id": rule_id,
                "seq": seq,
                "table_name": table.fullname,
                "action": "insert",
                "k1": texts[0],
                "k2": texts[1],
                "k3": texts[2],
                "pk": _json_key(pk, key),
                "before": None,
            }
        )
    for start in range(0, len(rows), 1000):
        conn.execute(insert(journal), rows[start : start + 1000])


def _json_key(pk: Sequence[Column[Any]], key: Sequence[Any]) -> str:
    import json

    from invariants.reporters.files import jsonable

    return json.dumps({c.key: jsonable(v) for c, v in zip(pk, key, strict=True)})


def row_matches_entry(table: Table, entry: Table = journal) -> ColumnElement[bool]:
    """Join condition between a target table's row and its journal entry, by typed key."""
    pk = key_columns(table)
    parts = [entry.c.k1, entry.c.k2, entry.c.k3]
    return and_(*(c == cast(part, c.type) for c, part in zip(pk, parts, strict=False)))


def record_after(conn: Connection, table: Table, run_id: str, seq: int) -> None:
    """Store the after image of every row statement ``seq`` touched (NULL once deleted)."""
    image = (
        select(json_object(conn, list(table.columns)))
        .where(row_matches_entry(table))
        .scalar_subquery()
    )
    conn.execute(
        update(journal).where(journal.c.run_id == run_id, journal.c.seq == seq).values(after=image)
    )


def only_journalled(stmt: Update | Delete, run_id: str, seq: int) -> Update | Delete:
    """The update or delete restricted to exactly the rows journalled for it.

    Its own WHERE already chose those rows (and they are locked since), so it is replaced
    by the journal's keys: nothing escapes the record, and the planner is not asked to
    combine the repair's subqueries with a journal it has no statistics for.
    """
    table: Table = stmt.table  # type: ignore[assignment]
    stmt = stmt._generate()
    stmt._where_criteria = ()
    pk = key_columns(table)
    parts = [journal.c.k1, journal.c.k2, journal.c.k3][: len(pk)]
    keys = select(*(cast(part, c.type) for c, part in zip(pk, parts, strict=True))).where(
        journal.c.run_id == run_id, journal.c.seq == seq
    )
    target = pk[0] if len(pk) == 1 else tuple_(*pk)
    return stmt.where(target.in_(keys))  # a semi-join: the database hashes the journalled keys


def changes_sample(conn: Connection, run_id: str, seq: int, limit: int) -> list[dict[str, Any]]:
    """A few journalled changes of one statement: key, before and after, for previews."""
    import json

    rows = conn.execute(
        select(journal.c.pk, journal.c.before, journal.c.after)
        .where(journal.c.run_id == run_id, journal.c.seq == seq)
        .order_by(journal.c.id)
        .limit(limit)
    ).all()
    return [
        {
            "key": json.loads(pk),
            "before": json.loads(before) if before else None,
            "after": json.loads(after) if after else None,
        }
        for pk, before, after in rows
    ]


def execute_journalled(
    conn: Connection, stmt: Any, run_id: str, rule_id: str, seq: int
) -> tuple[str | None, int]:
    """Run one repair statement with its journal entries; returns (table, rows changed)."""
    if isinstance(stmt, Update | Delete):
        table = stmt.table
        if not isinstance(table, Table):
            raise JournalRefused(f"cannot journal a statement on {table!r}: not a table")
        record_before(conn, stmt, run_id, rule_id, seq)
        changed = conn.execute(only_journalled(stmt, run_id, seq)).rowcount
        record_after(conn, table, run_id, seq)
        return table.fullname, changed
    if isinstance(stmt, Insert):
        table = stmt.table
        if not isinstance(table, Table):
            raise JournalRefused(f"cannot journal an insert into {table!r}: not a table")
        pk = key_columns(table)
        if not conn.dialect.insert_returning:
            raise JournalRefused(
                f"{conn.dialect.name} cannot report the keys of inserted rows (RETURNING), "
                "so inserts cannot be journalled here"
            )
        keys = conn.execute(stmt.returning(*pk)).all()
        record_inserted(conn, table, keys, run_id, rule_id, seq)
        record_after(conn, table, run_id, seq)
        return table.fullname, len(keys)
    raise JournalRefused(
        f"a repair statement of type {type(stmt).__name__} cannot be journalled; "
        "return SQLAlchemy insert / update / delete statements"
    )
