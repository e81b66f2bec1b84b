"""invariants: pytest-style consistency rules for application databases, with safe repairs."""

from __future__ import annotations

from invariants.api import configure, run
from invariants.exitcodes import ExitCode
from invariants.hookspecs import hookimpl
from invariants.reports import CheckResult, Outcome, RepairResult, RuleReport, RunReport
from invariants.rule import Rule, Severity, invariant

__version__ = "0.1.0"


__all__ = [
    "CheckResult",
    "ExitCode",
    "Outcome",
    "RepairResult",
    "Rule",
    "RuleReport",
    "RunReport",
    "Severity",
    "__version__",
    "configure",
    "hookimpl",
    "invariant",
    "run",
]
