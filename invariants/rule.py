"""Invariant objects: the ``@invariant`` decorator, severities and argument injection."""

from __future__ import annotations

import enum
import functools
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["Rule", "Severity", "invariant"]

_ID_RE = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+$")


class Severity(enum.IntEnum):
    """How bad a violation is; values follow :mod:`logging` so they sort and compare."""

    INFO = 20
    WARNING = 30
    ERROR = 40

    @classmethod
    def parse(cls, value: str | Severity) -> Severity:
        """Turn ``"warning"`` (any case) into :attr:`WARNING`; a bad name raises ValueError."""
        if isinstance(value, Severity):
            return value
        try:
            return cls[str(value).upper()]
        except KeyError:
            choices = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown severity {value!r} (choose from {choices})") from None

    def __str__(self) -> str:
        return self.name.lower()


class Rule:
    """One invariant: a check naming the violating rows, and an optional repair.

    Built by :func:`invariant`; plugins expose them as module attributes or through the
    ``invariants_register_rules`` hook.
    """

    def __init__(
        self,
        check: Callable[..., Any],
        *,
        id: str,
        severity: Severity,
        tags: Iterable[str],
        scope_key: str | None,
        depends_on: Iterable[str],
        description: str | None,
        statement_timeout: float | None,
    ) -> None:
        if not _ID_RE.match(id):
            raise ValueError(
                f"invariant id {id!r} must be dotted lower-case words, e.g. 'billing.has_profile'"
            )
        self.id = id
        self.check_fn = check
        self.severity = severity
        self.tags = frozenset(tags)
        self.scope_key = scope_key
        self.depends_on = tuple(depends_on)
        self.description = description or _first_line(check.__doc__) or id
        self.statement_timeout = statement_timeout
        self.repair_fn: Callable[..., Any] | None = None
        self.python_check = inspect.isgeneratorfunction(check)
        self.__doc__ = check.__doc__
        self.__module__ = check.__module__
        self.__name__ = check.__name__

    def repair(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator attaching the repair; it returns the statements that restore the invariant."""
        if self.repair_fn is not None:
            raise ValueError(
                f"invariant {self.id} already has a repair ({self.repair_fn.__name__})"
            )
        self.repair_fn = fn
        return fn

    @property
    def plugin_name(self) -> str:
        """The top-level package that defined the rule, used when no plugin name is known."""
        return self.__module__.split(".")[0]

    def with_severity(self, severity: Severity) -> Rule:
        """A copy of this rule with another severity (config overrides)."""
        clone = object.__new__(Rule)
        clone.__dict__.update(self.__dict__)
        clone.severity = severity
        return clone

    def __repr__(self) -> str:
        return f"<Rule {self.id} severity={self.severity} scope_key={self.scope_key}>"


def invariant(
    id: str,
    *,
    severity: str | Severity = Severity.ERROR,
    tags: Iterable[str] = (),
    scope_key: str | None = None,
    depends_on: Iterable[str] = (),
    description: str | None = None,
    statement_timeout: float | None = None,
) -> Callable[[Callable[..., Any]], Rule]:
    """Declare an invariant on a function returning a ``Select`` of the violating rows.

    The docstring's first line is the description. A generator function instead yields
    violations as mappings from Python (the slow path, for rules SQL cannot express).
    ``scope_key`` names the column that identifies the entity a violation belongs to.
    """

    def decorate(fn: Callable[..., Any]) -> Rule:
        return Rule(
            fn,
            id=id,
            severity=Severity.parse(severity),
            tags=tags,
            scope_key=scope_key,
            depends_on=depends_on,
            description=description,
            statement_timeout=statement_timeout,
        )

    return decorate


def call_with_injection(fn: Callable[..., Any], available: Mapping[str, Any]) -> Any:
    """Call ``fn`` passing, by name, the arguments it asks for (pytest-fixture style)."""
    kwargs: dict[str, Any] = {}
    for name, param in _parameters(fn):
        if name in available:
            kwargs[name] = available[name]
        elif param.default is inspect.Parameter.empty and param.kind not in (
            param.VAR_POSITIONAL,
            param.VAR_KEYWORD,
        ):
            offered = ", ".join(sorted(available))
            raise TypeError(
                f"{fn.__qualname__}() asks for {name!r}, which is not injectable "
                f"(available: {offered})"
            )
    return fn(**kwargs)


@functools.lru_cache(maxsize=1024)
def _parameters(fn: Callable[..., Any]) -> tuple[tuple[str, inspect.Parameter], ...]:
    """A function's parameters, read once (signature inspection is slow on hot paths)."""
    return tuple(inspect.signature(fn).parameters.items())


def _first_line(doc: str | None) -> str:
    return inspect.cleandoc(doc).splitlines()[0] if doc and doc.strip() else ""
