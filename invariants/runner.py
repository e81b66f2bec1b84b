"""The built-in check and repair implementations: set-based SQL, bounded samples, scoping."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ClauseElement, Executable, FromClause, Select
from sqlalchemy.sql.elements import Label

from invariants.database import statement_timeout
from invariants.errors import UsageError
from invariants.hookspecs import hookimpl
from invariants.journal import changes_sample, execute_journalled
from invariants.reports import CheckResult, RepairResult, StatementResult
from invariants.rule import Rule, call_with_injection

if TYPE_CHECKING:
    from invariants.session import RunContext

__all__ = ["check_statement", "compile_sql", "count_violations"]

_TOTAL = "__invariants_total__"


def check_statement(rule: Rule, conn: Connection, context: RunContext) -> Select[Any]:
    """The rule's check as a Select, filtered in SQL to the run's scope when there is one."""
    stmt = call_with_injection(rule.check_fn, context.injectables(conn))
    if not isinstance(stmt, Select):
        raise TypeError(
            f"check of {rule.id} returned {type(stmt).__name__}; expected a SQLAlchemy Select "
            "(or write it as a generator to yield violations from Python)"
        )
    if context.scope is None:
        return stmt
    key, raw = context.scope
    if key not in stmt.selected_columns:
        raise TypeError(f"check of {rule.id} declares scope_key {key!r} but selects no such column")
    column = stmt.selected_columns[key]
    value = _coerce_scope(key, raw, column.type)
    if _is_plain(stmt) and not stmt._group_by_clauses and stmt._having_criteria == ():
        return stmt.where(_unlabel(column) == value)  # filter where the rows are read
    sub = stmt.subquery("scoped")
    return select(sub).where(sub.c[key] == value)


def _is_plain(stmt: Select[Any]) -> bool:
    """No DISTINCT, LIMIT or OFFSET: a filter or a window added to it keeps its meaning."""
    return not stmt._distinct and stmt._limit_clause is None and stmt._offset_clause is None


def _unlabel(column: Any) -> Any:
    return column.element if isinstance(column, Label) else column


def _coerce_scope(key: str, raw: str, type_: Any) -> Any:
    try:
        python_type = type_.python_type
    except NotImplementedError:
        return raw
    if python_type is str or isinstance(raw, python_type):
        return raw
    try:
        return python_type(raw)
    except (TypeError, ValueError):
        raise UsageError(f"--scope {key}={raw}: not a valid {python_type.__name__}") from None


def count_violations(rule: Rule, conn: Connection, context: RunContext) -> int:
    """Only the number of violating rows (the re-check after a repair)."""
    if rule.python_check:
        return sum(1 for _ in _python_violations(rule, conn, context))
    sub = check_statement(rule, conn, context).subquery("violations")
    with statement_timeout(conn, context.timeout_for(rule)):
        return int(conn.execute(select(func.count()).select_from(sub)).scalar_one())


def _sample_and_count(stmt: Select[Any], conn: Connection, size: int) -> tuple[int, list[dict]]:
    """Count and sample in one round trip: the total rides along each sampled row."""
    if size == 0:
        count = select(func.count()).select_from(stmt.subquery("violations"))
        return int(conn.execute(count).scalar_one()), []
    total_column = func.count().over().label(_TOTAL)
    if _is_plain(stmt):
        query = stmt.add_columns(total_column).limit(size)
    else:
        query = select(stmt.subquery("violations"), total_column).limit(size)
    rows = conn.execute(query).mappings().all()
    if not rows:
        return 0, []
    total = int(rows[0][_TOTAL])
    return total, [{k: v for k, v in row.items() if k != _TOTAL} for row in rows]


def _python_violations(
    rule: Rule, conn: Connection, context: RunContext
) -> Iterable[Mapping[str, Any]]:
    """Violations yielded by a Python-path rule, filtered to the scope (the slow path)."""
    produced = call_with_injection(rule.check_fn, context.injectables(conn))
    if context.scope is None:
        return produced
    key, raw = context.scope
    return (v for v in produced if str(v.get(key)) == str(raw))


def compile_sql(stmt: ClauseElement | Executable, conn: Connection) -> str:
    """The statement's SQL for people to read, with values inlined where the dialect can."""
    assert isinstance(stmt, ClauseElement)
    try:
        return str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    except Exception:
        return str(stmt.compile(dialect=conn.dialect))


@hookimpl(trylast=True)
def invariants_run_check(rule: Rule, conn: Connection, context: RunContext) -> CheckResult:
    """Count the violations and keep at most ``context.sample_size`` of them."""
    if rule.python_check:
        with statement_timeout(conn, context.timeout_for(rule)):
            violations = iter(_python_violations(rule, conn, context))
            sample = [dict(v) for v in itertools.islice(violations, context.sample_size)]
            count = len(sample) + sum(1 for _ in violations)
        return CheckResult(count=count, sample=tuple(sample), sql=None)
    stmt = check_statement(rule, conn, context)
    with statement_timeout(conn, context.timeout_for(rule)):
        count, sample = _sample_and_count(stmt, conn, context.sample_size)
    sql = compile_sql(stmt, conn) if count else None  # held rules need no SQL shown
    return CheckResult(count=count, sample=tuple(sample), sql=sql)


@hookimpl(trylast=True)
def invariants_run_repair(
    rule: Rule, conn: Connection, violations: FromClause | None, context: RunContext
) -> RepairResult:
    """Ask the rule for its statements and execute each with its journal entries."""
    assert rule.repair_fn is not None
    planned = call_with_injection(
        rule.repair_fn, {**context.injectables(conn), "violations": violations}
    )
    results = []
    with statement_timeout(conn, context.timeout_for(rule)):
        for stmt in normalise_statements(rule, planned):
            seq = context.next_seq()
            table, changed = execute_journalled(conn, stmt, context.run_id, rule.id, seq)
            results.append(
                StatementResult(
                    sql=compile_sql(stmt, conn),
                    table=table,
                    rowcount=changed,
                    changes=tuple(changes_sample(conn, context.run_id, seq, context.sample_size)),
                )
            )
    return RepairResult(statements=tuple(results), remaining=-1)


def normalise_statements(rule: Rule, planned: Any) -> list[Executable]:
    """A repair's return value as a list of statements; anything else is the rule's bug."""
    if planned is None:
        return []
    items = [planned] if isinstance(planned, Executable) else list(planned)
    for item in items:
        if not isinstance(item, Executable) or isinstance(item, Select):
            raise TypeError(
                f"repair of {rule.id} returned {type(item).__name__}; expected SQLAlchemy "
                "insert / update / delete statements"
            )
    return items
