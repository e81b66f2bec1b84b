"""One run of the selected rules: check, repair, re-check, report; the pipeline every door uses."""

from __future__ import annotations

import itertools
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import visitors

from invariants.database import first_line, is_timeout
from invariants.errors import DatabaseError, InvariantsError
from invariants.exitcodes import ExitCode
from invariants.history import record_run
from invariants.journal import ensure_tables
from invariants.locking import repair_transaction
from invariants.reports import CheckResult, Outcome, RepairResult, RuleReport, RunReport
from invariants.rule import Rule, Severity, call_with_injection
from invariants.runner import check_statement, count_violations

if TYPE_CHECKING:
    from invariants.config import Config

__all__ = ["RunContext", "Session", "utcnow"]


def utcnow() -> datetime:
    """Now as a naive UTC datetime, the form rules compare against."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class RunContext:
    """What a check or repair may know about the run it is part of."""

    config: Config
    now: datetime
    scope: tuple[str, str] | None = None
    sample_size: int = 10
    run_id: str = ""
    force: bool = False
    _sequence: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def next_seq(self) -> int:
        """The next statement number of this run (orders the journal)."""
        return next(self._sequence)

    def timeout_for(self, rule: Rule) -> float | None:
        """The statement timeout that applies to ``rule``, in seconds."""
        return self.config.timeout_for(rule.id, rule.statement_timeout)

    def injectables(self, conn: Connection) -> dict[str, Any]:
        """The arguments checks and repairs may ask for by name."""
        return {
            "now": self.now,
            "config": self.config,
            "conn": conn,
            "connection": conn,
            "dialect": conn.dialect.name,
            "scope": dict([self.scope]) if self.scope else None,
        }


class Session:
    """Runs rules against one engine through the check and repair hooks."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        rules: list[Rule],
        *,
        repair: bool = False,
        dry_run: bool = False,
        force: bool = False,
        scope: tuple[str, str] | None = None,
        now: datetime | None = None,
        trigger: str = "cli",
        run_id: str | None = None,
        history: bool = True,
        workers: int = 1,
    ) -> None:
        self.config = config
        self.engine = engine
        self.rules = rules
        self.repair = repair
        self.dry_run = dry_run and repair
        self.force = force
        self.scope = scope
        self.trigger = trigger
        self.history = history
        self.workers = workers
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.context = RunContext(
            config=config,
            now=now or utcnow(),
            scope=scope,
            sample_size=config.settings.sample,
            run_id=self.run_id,
            force=force,
        )
        self.reports: list[RuleReport] = []
        self.rows_changed = 0
        self.warnings: list[str] = []
        self._catalog_lock = threading.Lock()
        self._started = datetime.now(UTC)
        self._clock = time.perf_counter()

    @property
    def hook(self) -> Any:
        return self.config.hook

    def run(self) -> RunReport:
        """Run every rule and hand the reports to the reporters; returns the run's report."""
        self._started, self._clock = datetime.now(UTC), time.perf_counter()
        self.hook.invariants_sessionstart(session=self)
        try:
            with self.engine.connect() as conn:
                if self.repair:
                    self._run_repairing(conn)
                else:
                    self._run_checking(conn)
                    if self.history and self.scope is None:
                        self._record_history_apart(conn)
        except DBAPIError as exc:
            raise DatabaseError(
                f"lost the database connection: {first_line(exc.orig or exc)}"
            ) from exc
        report = self._run_report()
        self.hook.invariants_sessionfinish(session=self, run=report)
        return report

    def _run_report(self) -> RunReport:
        report = RunReport(
            run_id=self.run_id,
            started_at=self._started,
            duration=time.perf_counter() - self._clock,
            database=self.engine.url.render_as_string(hide_password=True),
            trigger=self.trigger,
            repair=self.repair,
            scope=dict([self.scope]) if self.scope else None,
            reports=tuple(self.reports),
            dry_run=self.dry_run,
            warnings=tuple(self.warnings),
        )
        return _with_exit_code(report, self.config.settings.fail_on)

    def _run_checking(self, conn: Connection) -> None:
        workers = min(self.workers, len(self.rules))
        if workers <= 1:
            tx = conn.begin()  # one read-only transaction; a failed rule gets a fresh one
            try:
                for index, rule in enumerate(self.rules, 1):
                    self.hook.invariants_rule_start(rule=rule, index=index, total=len(self.rules))
                    report = self._run_rule(rule, conn)
                    if report.outcome is Outcome.ERROR or not tx.is_active:
                        tx.rollback()
                        tx = conn.begin()
                    self._finish(report)
            finally:
                tx.rollback()
            return
        with conn.begin() as tx:
            for rule in self.rules:  # read the catalog once, before the threads share it
                self._skip_reason(rule, conn)
            tx.rollback()
        with ThreadPoolExecutor(workers, thread_name_prefix="invariants") as pool:
            for report in pool.map(self._check_on_own_connection, self.rules):
                self._finish(report)

    def _check_on_own_connection(self, rule: Rule) -> RuleReport:
        """One rule on a connection of its own, for ``--workers`` runs."""
        with self.engine.connect() as conn, conn.begin() as tx:
            report = self._run_rule(rule, conn)
            tx.rollback()
            return report

    def _run_repairing(self, conn: Connection) -> None:
        with repair_transaction(conn, self.config.settings.lock_timeout) as tx:
            ensure_tables(conn)
            self._repair_all(conn)
            if self.dry_run:
                tx.rollback()
                return
            if self.history:
                record_run(conn, self._run_report())
            tx.commit()

    def _repair_all(self, conn: Connection) -> None:
        failed: set[str] = set()
        for index, rule in enumerate(self.rules, 1):
            self.hook.invariants_rule_start(rule=rule, index=index, total=len(self.rules))
            blocked = [d for d in rule.depends_on if d in failed]
            savepoint = conn.begin_nested()
            report = self._run_rule(rule, conn, repair=not blocked)
            if report.outcome is Outcome.REPAIRED:
                savepoint.commit()
                self.rows_changed += report.repair.rows_changed if report.repair else 0
            else:
                savepoint.rollback()
            if report.outcome is Outcome.ERROR:
                failed.add(rule.id)
            if blocked and report.outcome is Outcome.VIOLATED:
                report = replace(report, message=f"not repaired: {blocked[0]} failed")
            if self.dry_run and report.outcome is Outcome.REPAIRED:
                changed = report.repair.rows_changed if report.repair else 0
                report = replace(
                    report,
                    outcome=Outcome.VIOLATED,
                    message=f"dry run: would change {changed} rows",
                )
            self._finish(report)

    def _record_history_apart(self, conn: Connection) -> None:
        """History of a check-only run, in its own short transaction; failure only warns."""
        try:
            with conn.begin():
                ensure_tables(conn)
                record_run(conn, self._run_report())
        except DBAPIError as exc:
            self.warnings.append(f"run history not recorded: {first_line(exc.orig or exc)}")

    def _finish(self, report: RuleReport) -> None:
        self.reports.append(report)
        self.hook.invariants_rule_report(report=report)

    def _run_rule(self, rule: Rule, conn: Connection, repair: bool = False) -> RuleReport:
        """Check one rule (and repair it when asked), turning its failure into an ERROR."""
        clock = time.perf_counter()
        check: CheckResult | None = None

        def report(outcome: Outcome, **extra: Any) -> RuleReport:
            found: dict[str, Any] = {}
            if check:
                found = {"count": check.count, "sample": check.sample, "sql": check.sql}
            return RuleReport(
                rule_id=rule.id,
                description=rule.description,
                severity=rule.severity,
                tags=rule.tags,
                plugin=self.config.rule_plugins.get(rule.id, rule.plugin_name),
                outcome=outcome,
                duration=time.perf_counter() - clock,
                **found,
                **extra,
            )

        skip = self._skip_reason(rule, conn)
        if skip:
            return report(Outcome.SKIPPED, message=skip)
        try:
            check = self.hook.invariants_run_check(rule=rule, conn=conn, context=self.context)
            assert check is not None, "no plugin implemented invariants_run_check"
            if check.count == 0:
                return report(Outcome.HELD)
            if not (repair and rule.repair_fn):
                return report(Outcome.VIOLATED)
            result = self._repair(rule, conn)
        except RepairLimitExceeded as exc:
            return report(Outcome.VIOLATED, message=str(exc))
        except InvariantsError:
            raise
        except Exception as exc:
            if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                raise
            return report(
                Outcome.ERROR, message=_error_message(exc), longrepr=traceback.format_exc()
            )
        if result.remaining:
            message = f"repair did not restore the invariant ({result.remaining} rows remain)"
            return report(Outcome.ERROR, repair=result, message=message)
        return report(Outcome.REPAIRED, repair=result)

    def _repair(self, rule: Rule, conn: Connection) -> RepairResult:
        violations = None
        if not rule.python_check:
            violations = check_statement(rule, conn, self.context).subquery("violations")
        result = self.hook.invariants_run_repair(
            rule=rule, conn=conn, violations=violations, context=self.context
        )
        assert result is not None, "no plugin implemented invariants_run_repair"
        self._check_limits(rule, result.rows_changed)
        remaining = count_violations(rule, conn, self.context)
        return RepairResult(statements=result.statements, remaining=remaining)

    def _check_limits(self, rule: Rule, changed: int) -> None:
        """Refuse a repair past the blast-radius limits unless forced (its savepoint rolls back)."""
        settings = self.config.settings
        if self.force:
            return
        if changed > settings.max_repair_rows:
            raise RepairLimitExceeded(
                f"not repaired: would change {changed} rows, over max_repair_rows="
                f"{settings.max_repair_rows}; check the sample, then re-run with --force"
            )
        if self.rows_changed + changed > settings.max_repair_rows_per_run:
            raise RepairLimitExceeded(
                f"not repaired: the run would change {self.rows_changed + changed} rows, over "
                f"max_repair_rows_per_run={settings.max_repair_rows_per_run}; re-run with --force"
            )

    def _skip_reason(self, rule: Rule, conn: Connection) -> str | None:
        if self.scope and rule.scope_key != self.scope[0]:
            return f"no scope key {self.scope[0]!r}"
        if rule.python_check:
            return None
        missing = self._missing_tables(rule, conn)
        if missing:
            return f"table {', '.join(sorted(missing))} not in this database"
        return None

    def _missing_tables(self, rule: Rule, conn: Connection) -> set[str]:
        """Tables the rule's check reads that the database does not have.

        Tables found once are remembered on the config (per database), so a host that
        runs scoped checks per request reads the catalog only until every table is seen.
        """
        cache = self.config.cache.setdefault(("tables", str(self.engine.url)), {})
        key = ("reads", rule.id, conn.dialect.name)
        if key not in cache:
            try:
                stmt = call_with_injection(rule.check_fn, self.context.injectables(conn))
            except Exception:
                return set()
            cache[key] = {t for t in visitors.iterate(stmt) if isinstance(t, Table)}
        seen: set[tuple[str | None, str]] = cache.setdefault("seen", set())
        unseen = {t for t in cache[key] if (t.schema, t.name) not in seen}
        if not unseen:
            return set()
        inspector = inspect(conn)
        with self._catalog_lock:
            for schema in {t.schema for t in unseen}:
                names = inspector.get_table_names(schema=schema)
                names += inspector.get_view_names(schema=schema)
                seen.update((schema, n) for n in names)
        return {t.fullname for t in unseen if (t.schema, t.name) not in seen}


class RepairLimitExceeded(Exception):
    """A repair would change more rows than the configured limits allow."""


def _error_message(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and is_timeout(exc):
        return f"statement timeout: {first_line(exc.orig or exc)}"
    if isinstance(exc, DBAPIError):
        return f"{type(exc.orig or exc).__name__}: {first_line(exc.orig or exc)}"
    return f"{type(exc).__name__}: {first_line(exc)}"


def _with_exit_code(run: RunReport, fail_on: Severity) -> RunReport:
    code = ExitCode.OK
    if run.reports and all(r.outcome is Outcome.SKIPPED for r in run.reports):
        code = ExitCode.NO_RULES
    for r in run.reports:
        if r.outcome is Outcome.ERROR or (r.outcome is Outcome.VIOLATED and r.severity >= fail_on):
            code = ExitCode.VIOLATIONS
    return replace(run, exit_code=int(code))
