"""The terminal reporter: a pytest-like line per rule, details on failures, one summary line."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from invariants.hookspecs import hookimpl
from invariants.reporters.files import check_writable, write_atomic
from invariants.reports import Outcome, RuleReport, RunReport
from invariants.rule import Rule

if TYPE_CHECKING:
    from invariants.config import Config
    from invariants.session import Session

__all__ = ["TerminalReporter", "format_value"]

_COLOURS = {
    Outcome.HELD: "32",
    Outcome.REPAIRED: "32",
    Outcome.VIOLATED: "31",
    Outcome.ERROR: "31;1",
    Outcome.SKIPPED: "33",
}
WIDTH = 80


def rows(n: int | None) -> str:
    """``1 row`` / ``3 rows``."""
    return f"{n} row" if n == 1 else f"{n} rows"


def format_value(value: Any) -> str:
    """A sample value as a short readable string."""
    if value is None:
        return "NULL"
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat()
    return str(value)


def format_row(row: Mapping[str, Any]) -> str:
    """A sample row as ``key=value`` pairs."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in row.items())


def format_change(change: Mapping[str, Any]) -> str:
    """One journalled change as ``key: column before -> after`` (only what differs)."""
    key = format_row(change.get("key") or {})
    before, after = change.get("before"), change.get("after")
    if before is None:
        return f"+ {key}: inserted"
    if after is None:
        return f"- {key}: deleted"
    diffs = [
        f"{col} {format_value(before.get(col))} -> {format_value(after.get(col))}"
        for col in after
        if before.get(col) != after.get(col)
    ]
    return f"~ {key}: {', '.join(diffs) or 'unchanged'}"


class TerminalReporter:
    """Writes the run to a text stream as it happens."""

    def __init__(self, config: Config, out: TextIO, path: str | None = None) -> None:
        self.config = config
        self.out = out
        self.path = path
        self.verbosity = config.getoption("verbose", 0) - config.getoption("quiet", 0)
        self.colour = _wants_colour(out)
        self.failures: list[RuleReport] = []
        self.dry_run = False
        self.progress = _wants_progress(out) and self.verbosity >= 0
        self._progress_shown = False
        self._started = time.perf_counter()

    def write(self, line: str = "") -> None:
        if self._progress_shown:
            self.out.write("\r\x1b[2K")
            self._progress_shown = False
        self.out.write(line + "\n")
        self.out.flush()

    @hookimpl
    def invariants_rule_start(self, rule: Rule, index: int, total: int) -> None:
        """On an interactive terminal, show which rule runs and for how long the run has."""
        if not self.progress:
            return
        elapsed = time.perf_counter() - self._started
        self.out.write(f"\r\x1b[2K[{index}/{total}] {rule.id}  ({elapsed:.1f}s)")
        self.out.flush()
        self._progress_shown = True

    def paint(self, text: str, outcome: Outcome) -> str:
        return f"\x1b[{_COLOURS[outcome]}m{text}\x1b[0m" if self.colour else text

    def rule(self, title: str, fill: str = "=") -> str:
        text = f" {title} " if title else ""
        side = max(3, (WIDTH - len(text)) // 2)
        return f"{fill * side}{text}{fill * side}"

    @hookimpl
    def invariants_sessionstart(self, session: Session) -> None:
        self.dry_run = session.dry_run
        if self.verbosity < 0:
            return
        mode = "check and repair" if session.repair else "check"
        if session.dry_run:
            mode = "repair dry run"
        self.write(self.rule(f"invariant-run: {mode}"))
        self.write(f"database: {session.engine.url.render_as_string(hide_password=True)}")
        if session.scope:
            self.write(f"scope: {session.scope[0]}={session.scope[1]}")
        for lines in self.config.hook.invariants_report_header(config=self.config):
            for line in [lines] if isinstance(lines, str) else lines:
                self.write(line)
        self.write(f"selected {len(session.rules)} rules  (run {session.run_id})")
        self.write()

    @hookimpl(trylast=True)
    def invariants_report_rule_line(self, report: RuleReport, verbose: int) -> str:
        label = str(report.outcome).upper()
        detail = ""
        if report.outcome is Outcome.VIOLATED:
            note = f"; {report.message}" if report.message else ""
            detail = f" ({rows(report.count)}{note})"
        elif report.outcome is Outcome.REPAIRED and report.repair is not None:
            detail = f" ({rows(report.count)}, {report.repair.rows_changed} changed)"
        elif report.message:
            detail = f" ({report.message})"
        head = f"{report.rule_id} "
        tail = f" {label}{detail}"
        if verbose > 0:
            tail += f"  [{report.severity}, {report.duration:.2f}s]"
        dots = "." * max(2, WIDTH - len(head) - len(label) - len(detail) - 2)
        return head + dots + self.paint(tail, report.outcome)

    @hookimpl
    def invariants_rule_report(self, report: RuleReport) -> None:
        if report.failed:
            self.failures.append(report)
        if self.verbosity < 0 and not report.failed:
            return
        line = self.config.hook.invariants_report_rule_line(report=report, verbose=self.verbosity)
        self.write(line)
        if self.verbosity > 0:
            self._details(report, indent="    ")
        elif self.dry_run and report.repair is not None:
            self._plan(report, indent="    ")

    def _plan(self, report: RuleReport, indent: str) -> None:
        """The statements a repair ran (or would run), with a few before/after rows."""
        assert report.repair is not None
        verb = "would change" if self.dry_run else "changed"
        for stmt in report.repair.statements:
            self.write(f"{indent}{verb} {rows(stmt.rowcount)} in {stmt.table}")
            if self.verbosity > 1:
                self.write(f"{indent}  sql: {' '.join(stmt.sql.split())}")
            for change in stmt.changes[:3]:
                self.write(f"{indent}  {format_change(change)}")
            if stmt.rowcount > 3 and stmt.changes:
                self.write(f"{indent}  ... and {stmt.rowcount - min(3, len(stmt.changes))} more")

    def _details(self, report: RuleReport, indent: str) -> None:
        if report.sample and report.outcome is not Outcome.HELD:
            shown = len(report.sample)
            self.write(f"{indent}sample ({shown} of {report.count}):")
            for row in report.sample:
                self.write(f"{indent}  {format_row(row)}")
        if report.repair is not None:
            self._plan(report, indent)
        if self.verbosity > 1 and report.sql:
            self.write(f"{indent}sql: {' '.join(report.sql.split())}")

    @hookimpl
    def invariants_sessionfinish(self, session: Session, run: RunReport) -> None:
        errors = [r for r in self.failures if r.outcome is Outcome.ERROR]
        if errors and self.verbosity >= 0:
            self.write()
            self.write(self.rule("ERRORS"))
            for report in errors:
                self.write(self.rule(report.rule_id, "_"))
                self.write(report.longrepr.rstrip() if report.longrepr else str(report.message))
        violated = [r for r in self.failures if r.outcome is Outcome.VIOLATED]
        if violated and self.verbosity == 0:
            self.write()
            self.write(self.rule("short invariant summary"))
            for report in violated:
                first = format_row(report.sample[0]) if report.sample else ""
                self.write(f"VIOLATED {report.rule_id} - {rows(report.count)}, e.g. {first}")
        self.write(self.rule(self._summary(run)))
        if any(r.outcome is Outcome.VIOLATED for r in run.reports) and not run.repair:
            fixable = [r for r in violated if _has_repair(session, r.rule_id)]
            if fixable:
                scope = "".join(f" --scope {k}={v}" for k, v in (run.scope or {}).items())
                self.write(f"to repair: invariant-run --db {run.database}{scope} --repair")
        for warning in run.warnings:
            self.write(f"warning: {warning}")
        if run.dry_run:
            self.write("dry run: nothing was changed")
        elif run.repair and any(r.outcome is Outcome.REPAIRED for r in run.reports):
            self.write(
                f"undo this repair with: invariant-run restore {run.run_id} --db {run.database}"
            )
        if self.path is not None:
            write_atomic(self.path, self.out.getvalue())  # type: ignore[attr-defined]

    def _summary(self, run: RunReport) -> str:
        counts = run.counts
        order = (Outcome.VIOLATED, Outcome.ERROR, Outcome.REPAIRED, Outcome.HELD, Outcome.SKIPPED)
        parts = [f"{counts[o]} {o}" for o in order if counts[o]]
        return f"{', '.join(parts) or 'no rules'} in {run.duration:.2f}s"


def _has_repair(session: Session, rule_id: str) -> bool:
    return any(r.id == rule_id and r.repair_fn for r in session.rules)


def _wants_progress(out: TextIO) -> bool:
    """Progress lines only on an interactive terminal, never in CI or into files."""
    if os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(out, "isatty", lambda: False)())


def _wants_colour(out: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return bool(getattr(out, "isatty", lambda: False)())


@hookimpl
def invariants_configure(config: Config) -> None:
    """Register the reporter for command-line runs whose report is text or goes to a file."""
    fmt = config.getoption("format")
    output = config.getoption("output")
    if fmt is None:
        return
    if fmt == "text" and output:
        check_writable(output)
        reporter = TerminalReporter(config, io.StringIO(), path=output)
    elif fmt == "text" or output:
        reporter = TerminalReporter(config, config.stdout)
    else:
        return
    config.pluginmanager.register(reporter, "terminalreporter")
