"""Every hook of invariants: the specification plugins implement, and its reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from sqlalchemy.engine import Connection
    from sqlalchemy.sql import FromClause

    from invariants.config import Config
    from invariants.reports import CheckResult, RepairResult, RuleReport, RunReport
    from invariants.rule import Rule
    from invariants.session import RunContext, Session

hookspec = pluggy.HookspecMarker("invariants")
hookimpl = pluggy.HookimplMarker("invariants")


# -------------------------------------------------------------------------
# Initialisation: options and configuration
# -------------------------------------------------------------------------


@hookspec(historic=True)
def invariants_addoption(parser: argparse.ArgumentParser) -> None:
    """Add command-line options to ``invariant-run``.

    :param parser: the argument parser; add options with ``parser.add_argument_group``.

    Historic: plugins registered late still see the parser. Return value ignored.
    """


@hookspec
def invariants_configure(config: Config) -> None:
    """Called once the configuration is final and every plugin is registered.

    :param config: the run's :class:`~invariants.config.Config`.

    Use it to register further plugins or to validate plugin settings. Return value ignored.
    """


@hookspec
def invariants_unconfigure(config: Config) -> None:
    """Called before the process (or the embedding call) ends; release what configure took.

    :param config: the run's configuration.

    Return value ignored.
    """


# -------------------------------------------------------------------------
# Collection: which rules exist, which run
# -------------------------------------------------------------------------


@hookspec
def invariants_register_rules(register: Callable[[Rule], None], config: Config) -> None:
    """Register rules, for plugins that build them at run time.

    :param register: call ``register(rule)`` once per :class:`~invariants.Rule`; an id
        already registered by another plugin stops the run with both plugins named.
    :param config: the run's configuration.

    Rules defined as module attributes of a plugin module are registered without this hook.
    Return value ignored.
    """


@hookspec
def invariants_collection_modifyitems(config: Config, rules: list[Rule]) -> None:
    """Filter or reorder the selected rules in place, after ``-k``, ``--tag`` and config.

    :param config: the run's configuration.
    :param rules: the selected rules; mutate the list (dependency order is restored after).

    Return value ignored.
    """


# -------------------------------------------------------------------------
# Running: checking and repairing (wrap these to time, trace or lock)
# -------------------------------------------------------------------------


@hookspec
def invariants_sessionstart(session: Session) -> None:
    """Called after the database is reached and before the first rule runs.

    :param session: the run's :class:`~invariants.session.Session` (config, engine, rules).

    Return value ignored.
    """


@hookspec
def invariants_rule_start(rule: Rule, index: int, total: int) -> None:
    """Called just before a rule runs (progress displays listen here).

    :param rule: the rule about to run.
    :param index: its position in the run, from 1.
    :param total: how many rules the run has.

    Return value ignored.
    """


@hookspec(firstresult=True)
def invariants_run_check(rule: Rule, conn: Connection, context: RunContext) -> CheckResult | None:
    """Run one rule's check: count its violations and fetch a bounded sample.

    :param rule: the rule to check.
    :param conn: the connection, inside the rule's transaction or savepoint.
    :param context: now, scope, sample size and timeout for this run.

    Stops at the first non-None result. Return a
    :class:`~invariants.reports.CheckResult`; None lets the next implementation decide.
    Raise to make the rule an ERROR outcome.
    """


@hookspec(firstresult=True)
def invariants_run_repair(
    rule: Rule, conn: Connection, violations: FromClause | None, context: RunContext
) -> RepairResult | None:
    """Run one rule's repair and re-check it, inside the rule's savepoint.

    :param rule: the violated rule, which has a repair.
    :param conn: the connection, inside the savepoint the runner rolls back on failure.
    :param violations: the check as a subquery (scoped), or None for Python-path rules.
    :param context: now, scope, sample size and timeout for this run.

    Stops at the first non-None result. Return a :class:`~invariants.reports.RepairResult`
    whose ``remaining`` is the re-check's count; None lets the next implementation decide.
    """


@hookspec
def invariants_rule_report(report: RuleReport) -> None:
    """Called once per rule when its outcome is final (the place reporters listen).

    :param report: the frozen :class:`~invariants.reports.RuleReport`.

    Return value ignored.
    """


@hookspec
def invariants_sessionfinish(session: Session, run: RunReport) -> None:
    """Called when every rule has run, before the exit code is returned.

    :param session: the run's session.
    :param run: the frozen :class:`~invariants.reports.RunReport` with every rule report.

    Reporters write their document here. Return value ignored.
    """


# -------------------------------------------------------------------------
# Reporting: the terminal header and listing
# -------------------------------------------------------------------------


@hookspec
def invariants_report_header(config: Config) -> list[str] | str | None:
    """Lines shown under the terminal header, before the first rule.

    :param config: the run's configuration.

    Return a line, a list of lines, or None for nothing.
    """


@hookspec(firstresult=True)
def invariants_report_rule_line(report: RuleReport, verbose: int) -> str | None:
    """The one terminal line that shows a rule's outcome.

    :param report: the rule's report.
    :param verbose: the ``-v`` count (negative for ``-q``).

    Return the line. Stops at the first non-None result; None keeps the default line.
    """


def _all_hooks() -> dict[str, Any]:
    """Every hook defined here, by name (used by the docs test)."""
    return {k: v for k, v in globals().items() if k.startswith("invariants_")}
