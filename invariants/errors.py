"""Exceptions that end a run with one clear line and a known exit code."""

from __future__ import annotations

from invariants.exitcodes import ExitCode

__all__ = ["DatabaseError", "InvariantsError", "NoRulesError", "UsageError"]


class InvariantsError(Exception):
    """Base of the errors the CLI turns into a single line and an exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL_ERROR


class UsageError(InvariantsError):
    """Bad command line, configuration or plugin: the user has to change something."""

    exit_code = ExitCode.USAGE_ERROR


class DatabaseError(InvariantsError):
    """The database cannot be reached or used at all (not a single rule's failure)."""

    exit_code = ExitCode.INTERNAL_ERROR


class NoRulesError(InvariantsError):
    """Nothing was selected to run."""

    exit_code = ExitCode.NO_RULES
