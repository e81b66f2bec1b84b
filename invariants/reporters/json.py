"""The JSON reporter: one document per run, in the versioned schema ``schemas/run-v1.json``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from invariants.hookspecs import hookimpl
from invariants.reporters.files import check_writable, emit, jsonable
from invariants.reports import RuleReport, RunReport

if TYPE_CHECKING:
    from invariants.config import Config
    from invariants.session import Session

__all__ = ["SCHEMA_ID", "SCHEMA_VERSION", "run_to_dict"]

SCHEMA_VERSION = 1
SCHEMA_ID = "https://invariants.dev/schemas/run-v1.json"


def rule_to_dict(report: RuleReport) -> dict[str, Any]:
    """One rule's report in the JSON schema."""
    repair = None
    if report.repair is not None:
        repair = {
            "rows_changed": report.repair.rows_changed,
            "remaining": report.repair.remaining,
            "statements": [
                {
                    "table": s.table,
                    "rowcount": s.rowcount,
                    "sql": s.sql,
                    "changes": [
                        {k: _jsonable_tree(v) for k, v in change.items()} for change in s.changes
                    ],
                }
                for s in report.repair.statements
            ],
        }
    return {
        "id": report.rule_id,
        "description": report.description,
        "plugin": report.plugin,
        "severity": str(report.severity),
        "tags": sorted(report.tags),
        "outcome": str(report.outcome),
        "count": report.count,
        "sample": [{k: jsonable(v) for k, v in row.items()} for row in report.sample],
        "duration": round(report.duration, 6),
        "sql": report.sql,
        "message": report.message,
        "traceback": report.longrepr,
        "repair": repair,
    }


def run_to_dict(run: RunReport) -> dict[str, Any]:
    """A whole run in the JSON schema (version :data:`SCHEMA_VERSION`)."""
    return {
        "$schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "invariants", "version": _version()},
        "run_id": run.run_id,
        "started_at": run.started_at.isoformat(),
        "duration": round(run.duration, 6),
        "database": run.database,
        "trigger": run.trigger,
        "repair": run.repair,
        "dry_run": run.dry_run,
        "scope": dict(run.scope) if run.scope else None,
        "exit_code": run.exit_code,
        "summary": {str(outcome): n for outcome, n in sorted(run.counts.items())},
        "rules": [rule_to_dict(r) for r in run.reports],
    }


def _jsonable_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable_tree(v) for k, v in value.items()}
    return jsonable(value)


def _version() -> str:
    from invariants import __version__

    return __version__


class JSONReporter:
    """Writes the run's document at the end, to ``--output`` or standard output."""

    def __init__(self, config: Config) -> None:
        self.config = config

    @hookimpl
    def invariants_sessionfinish(self, session: Session, run: RunReport) -> None:
        emit(self.config, json.dumps(run_to_dict(run), indent=2, sort_keys=False) + "\n")


@hookimpl
def invariants_configure(config: Config) -> None:
    """Active with ``--format json``."""
    if config.getoption("format") == "json":
        if config.getoption("output"):
            check_writable(config.getoption("output"))
        config.pluginmanager.register(JSONReporter(config), "jsonreporter")
