"""Settings from ``[tool.invariants]``, the environment and the command line, merged in order."""

from __future__ import annotations

import argparse
import os
import string
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from invariants.errors import UsageError
from invariants.rule import Severity

if TYPE_CHECKING:
    from invariants.plugins import InvariantsPluginManager

__all__ = ["Config", "Settings", "config_file", "find_config_file", "load_settings", "redact_url"]

ENV_PREFIX = "INVARIANTS_"


@dataclass(frozen=True)
class Settings:
    """The run's settings after every source is merged (CLI > environment > file > defaults)."""

    database_url: str | None = None
    plugins: tuple[str, ...] = ()
    select: tuple[str, ...] = ()
    deselect: tuple[str, ...] = ()
    severity: Mapping[str, Severity] = field(default_factory=dict)
    sample: int = 10
    statement_timeout: float | None = 300.0
    timeouts: Mapping[str, float] = field(default_factory=dict)
    fail_on: Severity = Severity.ERROR
    max_repair_rows: int = 10_000
    max_repair_rows_per_run: int = 50_000
    lock_timeout: float = 60.0
    workers: int = 1
    sentry: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None


_LISTS = {"plugins", "select", "deselect"}
_ENV_KEYS = (
    "database_url",
    "plugins",
    "sample",
    "statement_timeout",
    "fail_on",
    "max_repair_rows",
    "max_repair_rows_per_run",
    "lock_timeout",
    "workers",
)


def config_file(option: str | None) -> Path | None:
    """The ``-c FILE`` path, checked to exist; None when the option was not given."""
    if not option:
        return None
    path = Path(option)
    if not path.is_file():
        raise UsageError(f"config file {option} does not exist")
    return path


def find_config_file(start: Path | None = None) -> Path | None:
    """The nearest ``invariants.toml``, or ``pyproject.toml`` with ``[tool.invariants]``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "invariants.toml"
        if candidate.is_file():
            return candidate
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and "invariants" in _read_toml(pyproject).get("tool", {}):
            return pyproject
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None


def read_file_settings(path: Path) -> dict[str, Any]:
    """The raw invariants table of a config file (``[tool.invariants]`` in pyproject)."""
    data = _read_toml(path)
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("invariants", {})
    if not isinstance(data, dict):
        raise UsageError(f"{path}: [tool.invariants] must be a table")
    return data


def env_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings from ``INVARIANTS_*`` variables; lists are comma separated."""
    raw: dict[str, Any] = {}
    for key in _ENV_KEYS:
        value = environ.get(ENV_PREFIX + key.upper())
        if value is not None and value != "":
            raw[key] = (
                [p.strip() for p in value.split(",") if p.strip()] if key in _LISTS else value
            )
    return raw


def load_settings(
    *,
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    path: Path | None = None,
    discover: bool = True,
) -> Settings:
    """Merge the sources into one :class:`Settings`; unknown keys raise naming the key."""
    environ = os.environ if environ is None else environ
    if path is None and discover:
        path = find_config_file()
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if path is not None:
        layers.append((str(path), read_file_settings(path)))
    layers.append(("environment", env_settings(environ)))
    layers.append(("command line", {k: v for k, v in (cli or {}).items() if v is not None}))
    settings = Settings(source=str(path) if path else None)
    for origin, raw in layers:
        settings = _apply(settings, raw, origin, environ)
    return settings


_KNOWN = {f.name for f in fields(Settings)} - {"source"}


def _apply(
    settings: Settings, raw: Mapping[str, Any], origin: str, environ: Mapping[str, str]
) -> Settings:
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _KNOWN:
            hint = f" (did you mean {key.replace('-', '_')!r}?)" if "-" in key else ""
            raise UsageError(f"{origin}: unknown config key {key!r}{hint}")
        try:
            changes[key] = _coerce(key, value, environ)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{origin}: {key}: {exc}") from None
    if "plugins" in changes:
        changes["plugins"] = (*settings.plugins, *changes["plugins"])
    return replace(settings, **changes)


def _coerce(key: str, value: Any, environ: Mapping[str, str]) -> Any:
    if key == "database_url":
        return expand_env(str(value), environ)
    if key in _LISTS:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise TypeError("expected a list of strings")
        return tuple(str(v) for v in value)
    if key == "severity":
        if not isinstance(value, Mapping):
            raise TypeError("expected a table of rule id = level")
        return {str(k): Severity.parse(v) for k, v in value.items()}
    if key == "timeouts":
        if not isinstance(value, Mapping):
            raise TypeError("expected a table of rule id = seconds")
        return {str(k): _positive(float, v) for k, v in value.items()}
    if key == "fail_on":
        return Severity.parse(value)
    if key == "sentry":
        if not isinstance(value, Mapping):
            raise TypeError("expected a table ([tool.invariants.sentry])")
        return dict(value)
    if key == "workers":
        return _positive(int, value)
    if key in ("sample", "max_repair_rows", "max_repair_rows_per_run"):
        return _positive(int, value, allow_zero=True)
    if key == "statement_timeout":
        number = _positive(float, value, allow_zero=True)
        return number or None
    if key == "lock_timeout":
        return _positive(float, value, allow_zero=True)
    return value


def _positive(kind: type, value: Any, allow_zero: bool = False) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None
    if number < 0 or (number == 0 and not allow_zero):
        raise ValueError(f"expected a positive number, got {value!r}")
    return number


def expand_env(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``$VAR`` / ``${VAR}``; an unset variable is an error naming it."""
    try:
        return string.Template(text).substitute(environ)
    except KeyError as exc:
        raise ValueError(f"environment variable {exc.args[0]} is not set") from None
    except ValueError:
        raise ValueError("a '$' that starts no variable name (write $$ for a dollar)") from None


def redact_url(url: str | None) -> str:
    """The URL with its password hidden, safe to print or send."""
    if not url:
        return "(none)"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


class Config:
    """The run's configuration: settings, parsed options and the plugin manager."""

    def __init__(
        self,
        settings: Settings,
        pluginmanager: InvariantsPluginManager,
        options: argparse.Namespace | None = None,
    ) -> None:
        self.settings = settings
        self.pluginmanager = pluginmanager
        self.option = options or argparse.Namespace()
        self.hook = pluginmanager.hook
        self.rule_plugins: dict[str, str] = {}
        self.cache: dict[Any, Any] = {}
        self.stdout: TextIO = sys.stdout

    def getoption(self, name: str, default: Any = None) -> Any:
        """A command-line option by its dest name, or ``default`` when not given."""
        value = getattr(self.option, name, None)
        return default if value is None else value

    def timeout_for(self, rule_id: str, declared: float | None) -> float | None:
        """The statement timeout for a rule: config per rule > the rule's own > global."""
        if rule_id in self.settings.timeouts:
            return self.settings.timeouts[rule_id]
        return declared if declared is not None else self.settings.statement_timeout
