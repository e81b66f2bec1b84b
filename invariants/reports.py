"""Frozen results of a run: what a check found, what a repair did, per rule and per run."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from invariants.rule import Severity

__all__ = [
    "CheckResult",
    "Outcome",
    "RepairResult",
    "RuleReport",
    "RunReport",
    "StatementResult",
]


class Outcome(enum.StrEnum):
    """The end state of one rule in one run."""

    HELD = "held"
    VIOLATED = "violated"
    REPAIRED = "repaired"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    """How many rows violate a rule, and the first few of them."""

    count: int
    sample: tuple[Mapping[str, Any], ...] = ()
    sql: str | None = None


@dataclass(frozen=True)
class StatementResult:
    """One data-changing statement a repair ran (or planned), and the rows it touched."""

    sql: str
    table: str | None
    rowcount: int
    changes: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class RepairResult:
    """What a repair did: its statements, and the count left by the re-check."""

    statements: tuple[StatementResult, ...]
    remaining: int

    @property
    def rows_changed(self) -> int:
        """Rows touched by all statements (as the driver reports them)."""
        return sum(max(s.rowcount, 0) for s in self.statements)


@dataclass(frozen=True)
class RuleReport:
    """Everything a reporter needs to know about one rule's run."""

    rule_id: str
    description: str
    severity: Severity
    tags: frozenset[str]
    plugin: str
    outcome: Outcome
    duration: float
    count: int | None = None
    sample: tuple[Mapping[str, Any], ...] = ()
    sql: str | None = None
    repair: RepairResult | None = None
    message: str | None = None
    longrepr: str | None = None

    @property
    def failed(self) -> bool:
        """Violations remain, or the rule could not be run."""
        return self.outcome in (Outcome.VIOLATED, Outcome.ERROR)


@dataclass(frozen=True)
class RunReport:
    """The result of a whole run, handed to reporters at the end."""

    run_id: str
    started_at: datetime
    duration: float
    database: str
    trigger: str
    repair: bool
    scope: Mapping[str, str] | None
    reports: tuple[RuleReport, ...]
    exit_code: int = 0
    dry_run: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def counts(self) -> Counter[Outcome]:
        """How many rules ended in each outcome."""
        return Counter(r.outcome for r in self.reports)
