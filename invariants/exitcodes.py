"""The process exit codes of ``invariant-run``, shaped after pytest's."""

from __future__ import annotations

import enum

__all__ = ["ExitCode"]


class ExitCode(enum.IntEnum):
    """What a run's exit status means; documented in the README."""

    #: every selected rule held, or was repaired
    OK = 0
    #: violations (or rule errors) at or above ``--fail-on`` remain
    VIOLATIONS = 1
    #: interrupted by the user (Ctrl-C) or a signal
    INTERRUPTED = 2
    #: the tool could not do its work: database unreachable, internal failure
    INTERNAL_ERROR = 3
    #: bad command line or configuration, broken plugin, duplicate rule id
    USAGE_ERROR = 4
    #: no rule was selected, or none could run against this database
    NO_RULES = 5
    #: another repairer holds the repair lock past ``--lock-timeout``
    LOCKED = 6
