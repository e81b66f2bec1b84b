"""What a Sentry reviewer sees: one event per rule, redacted, capped and titled for people."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from invariants.reporters.files import jsonable
from invariants.reports import Outcome, RuleReport
from invariants.rule import Severity

__all__ = [
    "MAX_EVENT_BYTES",
    "RunFacts",
    "default_columns",
    "error_event",
    "redact_sample",
    "rule_event",
]

# Size caps: Sentry and Bugsink refuse events over 1 MiB *after* the SDK has returned an
# event id, so an oversized event is lost silently. These keep every event far below that.
MAX_SAMPLE_ROWS = 10
MAX_VALUE_CHARS = 200
MAX_TEXT_CHARS = 8_000
MAX_FRAMES = 50
MAX_EVENT_BYTES = 100_000

_LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "info"}
_LOWER = {"error": "warning", "warning": "info", "info": "debug"}
_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')
_TYPE_NAME = re.compile(r"[A-Za-z_][\w.]*")


# -------------------------------------------------------------------------
# Events: what a reviewer sees
# -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFacts:
    """What every event of a run shares."""

    run_id: str
    trigger: str
    database: str
    dry_run: bool = False
    scope: tuple[str, str] | None = None
    environment: str | None = None
    release: str | None = None
    include_columns: frozenset[str] | None = None
    scope_keys: Mapping[str, str | None] = field(default_factory=dict)

    def allowed_columns(self, rule_id: str) -> frozenset[str]:
        """The sample columns of this rule that may leave: configured, else its keys."""
        if self.include_columns is not None:
            return self.include_columns
        return default_columns(self.scope_keys.get(rule_id))


def redact_sample(
    rows: Sequence[Mapping[str, Any]], allowed: Iterable[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Keep only allowed columns of at most ``MAX_SAMPLE_ROWS`` rows; name what was dropped.

    Personal data lives in ordinary columns (email, name, address); only keys leave.
    """
    allowed = set(allowed)
    kept: list[dict[str, Any]] = []
    dropped: set[str] = set()
    for row in rows[:MAX_SAMPLE_ROWS]:
        kept.append({k: _short(jsonable(v)) for k, v in row.items() if k in allowed})
        dropped.update(k for k in row if k not in allowed)
    if not any(kept):
        kept = []
    return kept, sorted(dropped)


def default_columns(scope_key: str | None) -> frozenset[str]:
    """The sample columns that may leave when ``include_columns`` is not configured."""
    return frozenset({"id", scope_key} if scope_key else {"id"})


def rule_event(report: RuleReport, run: RunFacts) -> dict[str, Any]:
    """The event of a violated or repaired rule; its fingerprint makes one issue per rule."""
    repaired = report.outcome is Outcome.REPAIRED
    verb = "repaired" if repaired else "violated"
    level = _LEVELS[report.severity]
    if repaired:
        level = _LOWER[level]
    event = _base_event(report, run, level)
    event["message"] = f"Invariant {verb}: {report.rule_id} ({report.count or 0} rows)"
    event["fingerprint"] = ["invariants", report.rule_id]
    return _capped(event)


def error_event(report: RuleReport, run: RunFacts) -> dict[str, Any]:
    """The exception event of a rule that could not run (its own issue, apart from violations).

    Only the report's one-line message and the traceback's frames are sent: the full
    exception text of a database error can quote row values.
    """
    event = _base_event(report, run, "error")
    kind, value = _split_message(report.message or "the rule failed")
    exception: dict[str, Any] = {
        "type": kind,
        "value": _short(value, MAX_TEXT_CHARS),
        "mechanism": {"type": "invariants", "handled": True},
    }
    frames = _frames(report.longrepr or "")
    if frames:
        exception["stacktrace"] = {"frames": frames}
    event["exception"] = {"values": [exception]}
    event["fingerprint"] = ["invariants", report.rule_id, "error"]
    return _capped(event)


def _base_event(report: RuleReport, run: RunFacts, level: str) -> dict[str, Any]:
    repaired = report.outcome is Outcome.REPAIRED
    tags = {
        "invariant.rule": report.rule_id,
        "invariant.plugin": report.plugin,
        "invariant.severity": str(report.severity),
        "invariant.outcome": str(report.outcome),
        "invariant.trigger": run.trigger,
        "invariant.repaired": "yes" if repaired else "no",
    }
    event: dict[str, Any] = {
        "level": level,
        "logger": "invariants",
        "transaction": report.rule_id,
        "tags": {k: _tag_value(v) for k, v in tags.items()},
        "contexts": {"invariant": _context(report, run)},
    }
    if run.environment:
        event["environment"] = run.environment
    if run.release:
        event["release"] = run.release
    return event


def _context(report: RuleReport, run: RunFacts) -> dict[str, Any]:
    """The "invariant" context: the facts and the next commands, no personal data."""
    sample, dropped = redact_sample(report.sample, run.allowed_columns(report.rule_id))
    db = shlex.quote(run.database)
    rule = shlex.quote(report.rule_id)
    ctx: dict[str, Any] = {
        "rule": report.rule_id,
        "description": _short(report.description, MAX_VALUE_CHARS * 2),
        "outcome": str(report.outcome),
        "count": report.count,
        "duration": round(report.duration, 3),
        "run_id": run.run_id,
        "trigger": run.trigger,
        "database": run.database,
        "sample": sample,
        "sample_columns_withheld": dropped,
        "sql": _short(report.sql, MAX_TEXT_CHARS) if report.sql else None,
        "check_again": f"invariant-run {rule} --db {db} -v",
    }
    key = run.scope_keys.get(report.rule_id)
    if key and sample and sample[0].get(key) is not None:
        one = shlex.quote(f"{key}={sample[0][key]}")
        ctx["check_one"] = f"invariant-run {rule} --db {db} --scope {one} -v"
    if run.scope:
        ctx["scope"] = f"{run.scope[0]}={run.scope[1]}"
    if report.message:
        ctx["note"] = _short(report.message, MAX_TEXT_CHARS)
    if report.outcome is Outcome.VIOLATED:
        ctx["repair_dry_run"] = f"invariant-run {rule} --db {db} --repair --dry-run"
    if report.outcome is Outcome.REPAIRED and report.repair is not None:
        ctx["rows_changed"] = report.repair.rows_changed
        if not run.dry_run:
            ctx["restore"] = f"invariant-run restore {run.run_id} --db {db}"
            ctx["restore_rule"] = f"{ctx['restore']} --rule {rule}"
    return ctx


def _capped(event: dict[str, Any]) -> dict[str, Any]:
    """Shed the bulky parts until the event is well under Sentry's 1 MiB limit."""
    ctx = event["contexts"]["invariant"]
    for shed in ("sample", "sql", "stacktrace"):
        if _size(event) <= MAX_EVENT_BYTES:
            break
        if shed == "stacktrace" and "exception" in event:
            event["exception"]["values"][0].pop("stacktrace", None)
        elif ctx.get(shed):
            ctx[shed] = None
            ctx.setdefault("trimmed", []).append(shed)
    return event


def _size(event: Mapping[str, Any]) -> int:
    return len(json.dumps(event, default=str).encode())


def _short(value: Any, limit: int = MAX_VALUE_CHARS) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


def _tag_value(value: str) -> str:
    """Tag values are one line of at most 200 characters."""
    return _short(" ".join(str(value).split()), 200)


def _split_message(message: str) -> tuple[str, str]:
    """``"OperationalError: no such table"`` into its type and value, for the issue title."""
    head, sep, rest = message.partition(": ")
    if sep and _TYPE_NAME.fullmatch(head):
        return head, rest
    return "RuleError", message


def _frames(longrepr: str) -> list[dict[str, Any]]:
    """The frames of the last traceback in ``longrepr``: file, line, function, code line."""
    lines = longrepr.rsplit("Traceback (most recent call last):", 1)[-1].splitlines()
    frames: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        match = _FRAME.match(line)
        if not match:
            continue
        path = match["path"]
        frame: dict[str, Any] = {
            "filename": PurePath(path).name,
            "abs_path": path,
            "lineno": int(match["line"]),
            "function": match["func"],
            "in_app": "site-packages" not in path and not path.startswith("<"),
        }
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if following.startswith("    ") and not _FRAME.match(following):
            frame["context_line"] = _short(following.strip())
        frames.append(frame)
    return frames[-MAX_FRAMES:]
