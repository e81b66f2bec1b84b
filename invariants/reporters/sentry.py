"""The Sentry reporter: one issue per violated rule, and Crons check-ins for scheduled runs."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sentry_sdk
from sentry_sdk.scope import Scope
from sentry_sdk.transport import Transport
from sentry_sdk.utils import BadDsn, Dsn

from invariants.config import expand_env
from invariants.errors import UsageError
from invariants.hookspecs import hookimpl
from invariants.reporters.sentry_events import (
    MAX_EVENT_BYTES,
    RunFacts,
    error_event,
    redact_sample,
    rule_event,
)
from invariants.reports import Outcome, RuleReport, RunReport

if TYPE_CHECKING:
    import argparse

    from invariants.config import Config
    from invariants.session import Session

__all__ = [
    "MAX_EVENT_BYTES",
    "RunFacts",
    "SentryReporter",
    "SentrySettings",
    "error_event",
    "read_settings",
    "redact_sample",
    "rule_event",
]

log = logging.getLogger("invariants.sentry")

#: The keys of ``[tool.invariants.sentry]``; any other key is a usage error.
KNOWN_KEYS = frozenset(
    {
        "dsn",
        "environment",
        "release",
        "include_columns",
        "flush_timeout",
        "monitor",
        "schedule",
        "checkin_margin",
        "max_runtime",
    }
)
DEFAULT_FLUSH_TIMEOUT = 2.0
#: Triggers whose runs check in to a monitor named in the config file (see docs/sentry.md).
CRON_TRIGGERS = frozenset({"ci", "schedule"})

# -------------------------------------------------------------------------
# Settings
# -------------------------------------------------------------------------


@dataclass(frozen=True)
class SentrySettings:
    """The reporter's settings after the command line, environment and file are merged."""

    dsn: str | None = None  # "" means "off", even when the host application set up Sentry
    environment: str | None = None
    release: str | None = None
    include_columns: frozenset[str] | None = None
    flush_timeout: float = DEFAULT_FLUSH_TIMEOUT
    monitor: str | None = None
    monitor_from_cli: bool = False
    schedule: str | None = None
    checkin_margin: int | None = None
    max_runtime: int | None = None

    def monitor_config(self) -> dict[str, Any] | None:
        """The ``monitor_config`` a check-in carries (it creates or updates the monitor)."""
        if not self.schedule:
            return None
        cfg: dict[str, Any] = {"schedule": {"type": "crontab", "value": self.schedule}}
        if self.checkin_margin is not None:
            cfg["checkin_margin"] = self.checkin_margin
        if self.max_runtime is not None:
            cfg["max_runtime"] = self.max_runtime
        return cfg


def read_settings(config: Config, environ: Mapping[str, str] | None = None) -> SentrySettings:
    """Merge ``--sentry-*`` options > ``SENTRY_*`` variables > ``[tool.invariants.sentry]``.

    Unknown keys and wrong types are usage errors naming the key, like the rest of the config.
    """
    environ = os.environ if environ is None else environ
    table = dict(config.settings.sentry)
    source = config.settings.source or "settings"
    table_name = "[tool.invariants.sentry]" if source.endswith("pyproject.toml") else "[sentry]"
    where = f"{source}: {table_name}"
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise UsageError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(KNOWN_KEYS))})"
        )
    try:
        file_dsn = _text(table, "dsn")
        dsn = _first(
            config.getoption("sentry_dsn"),
            environ.get("SENTRY_DSN"),
            expand_env(file_dsn, environ) if file_dsn else None,
        )
        environment = _first(
            config.getoption("sentry_environment"),
            environ.get("SENTRY_ENVIRONMENT"),
            _text(table, "environment"),
        )
        release = _first(environ.get("SENTRY_RELEASE"), _text(table, "release"))
        cli_monitor = config.getoption("sentry_monitor")
        columns = table.get("include_columns")
        if columns is not None and (
            isinstance(columns, str)
            or not isinstance(columns, list | tuple)
            or not all(isinstance(c, str) for c in columns)
        ):
            raise ValueError("include_columns: expected a list of column names")
        settings = SentrySettings(
            dsn=dsn,
            environment=environment or None,
            release=release or None,
            include_columns=frozenset(columns) if columns is not None else None,
            flush_timeout=_number(table, "flush_timeout", float, DEFAULT_FLUSH_TIMEOUT),
            monitor=_first(cli_monitor, _text(table, "monitor")) or None,
            monitor_from_cli=bool(cli_monitor),
            schedule=_schedule(_text(table, "schedule")),
            checkin_margin=_number(table, "checkin_margin", int, None),
            max_runtime=_number(table, "max_runtime", int, None),
        )
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None
    if settings.dsn:
        try:
            Dsn(settings.dsn)
        except BadDsn as exc:
            raise UsageError(f"sentry DSN {_dsn_for_humans(settings.dsn)}: {exc}") from None
    return settings


def _first(*values: str | None) -> str | None:
    """The first value that was given at all ("" counts: it turns the DSN off)."""
    return next((v for v in values if v is not None), None)


def _text(table: Mapping[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key}: expected a string, got {value!r}")
    return value


def _number(table: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = table.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{key}: expected a positive number, got {value!r}")
    if kind is int and value != int(value):
        raise ValueError(f"{key}: expected whole minutes, got {value!r}")
    return kind(value)


def _schedule(value: str | None) -> str | None:
    if value is None:
        return None
    if not (value.startswith("@") or len(value.split()) == 5):
        raise ValueError(f"schedule: expected a crontab line like '0 3 * * *', got {value!r}")
    return value


def _dsn_for_humans(dsn: str) -> str:
    """A DSN without its key, for messages and the terminal header."""
    try:
        parsed = Dsn(dsn)
    except BadDsn:
        return "(unparsable DSN)"
    return f"{parsed.scheme}://{parsed.netloc}/{parsed.project_id}"


# -------------------------------------------------------------------------
# The plugin
# -------------------------------------------------------------------------


class SentryReporter:
    """Sends a run's violations and check-ins to Sentry, never failing the run itself.

    With a DSN of its own it uses a private :class:`sentry_sdk.Client` and a fresh
    :class:`~sentry_sdk.scope.Scope` per event, so the host application's global Sentry
    setup is neither replaced nor mixed into our events. Without one it reports through
    the host's already initialised client.
    """

    def __init__(
        self,
        config: Config,
        settings: SentrySettings,
        *,
        private: bool = True,
        transport: Transport | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self._transport = transport
        self.client: sentry_sdk.Client | None = self._new_client() if private else None
        self.run: RunFacts | None = None
        self._deferred: list[dict[str, Any]] = []
        self._pending = False
        self._monitor: str | None = None
        self._check_in_id: str | None = None
        self._started = 0.0

    @classmethod
    def create(
        cls, config: Config, settings: SentrySettings, transport: Transport | None = None
    ) -> SentryReporter | None:
        """A reporter when there is somewhere to report to, else None (the plugin stays idle).

        ``transport`` replaces the HTTP transport of the private client (tests use it).
        """
        if settings.dsn == "":
            return None
        if settings.dsn or transport is not None:
            return cls(config, settings, transport=transport)
        if sentry_sdk.get_client().is_active():
            return cls(config, settings, private=False)
        return None

    def _new_client(self) -> sentry_sdk.Client:
        """A client of our own: no integrations, so nothing in the process is patched."""
        return sentry_sdk.Client(
            dsn=self.settings.dsn,
            transport=self._transport,
            environment=self.settings.environment,
            release=self.settings.release,
            default_integrations=False,
            auto_enabling_integrations=False,
            shutdown_timeout=self.settings.flush_timeout,
        )

    # -- hooks ---------------------------------------------------------------

    @hookimpl
    def invariants_report_header(self, config: Config) -> str:
        """Say where alerts go, so a surprise DSN is noticed at once."""
        where = (
            _dsn_for_humans(self.settings.dsn)
            if self.settings.dsn
            else "the application's Sentry client"
        )
        extra = f", environment {self.settings.environment}" if self.settings.environment else ""
        return f"sentry: {where}{extra}"

    @hookimpl
    def invariants_sessionstart(self, session: Session) -> None:
        """Remember the run's facts and open the Crons check-in of a monitored run."""
        self._guard(self._start, session)

    @hookimpl
    def invariants_rule_report(self, report: RuleReport) -> None:
        """Send violations and errors as they happen; repairs wait until they are committed."""
        self._guard(self._report, report)

    @hookimpl
    def invariants_sessionfinish(self, session: Session, run: RunReport) -> None:
        """Send the committed repairs, close the check-in, flush (bounded), free the client.

        Embedding code calls ``invariants.run`` without ``invariants_unconfigure``; closing
        here keeps its long-lived process from gathering one sender thread per run.
        """
        self._guard(self._finish, run)
        if self.client is not None:
            self._guard(self._flush)
            self._guard(self.client.close, 0)

    @hookimpl
    def invariants_unconfigure(self, config: Config) -> None:
        """Close a check-in a crashed run left open, flush what is left, drop the client."""
        if self._check_in_id is not None:
            self._guard(self._check_in, "error")
        self._guard(self._flush)
        if self.client is not None:
            self._guard(self.client.close, 0)

    # -- work ----------------------------------------------------------------

    def _start(self, session: Session) -> None:
        if self.client is not None and self.client.transport is None:
            self.client = self._new_client()  # a second run on the same configuration
        self.run = RunFacts(
            run_id=session.run_id,
            trigger=session.trigger,
            database=session.engine.url.render_as_string(hide_password=True),
            dry_run=session.dry_run,
            scope=session.scope,
            environment=self.settings.environment,
            release=self.settings.release,
            include_columns=self.settings.include_columns,
            scope_keys={r.id: r.scope_key for r in session.rules},
        )
        self._started = time.monotonic()
        monitor = self.settings.monitor
        if monitor and (
            self.settings.monitor_from_cli
            or (session.trigger in CRON_TRIGGERS and session.scope is None)
        ):
            self._monitor = monitor
            self._check_in_id = uuid.uuid4().hex
            self._check_in("in_progress")

    def _report(self, report: RuleReport) -> None:
        if self.run is None:
            return
        if report.outcome is Outcome.ERROR:
            self._send(error_event(report, self.run))
        elif report.outcome is Outcome.VIOLATED:
            self._send(rule_event(report, self.run))
        elif report.outcome is Outcome.REPAIRED:
            self._deferred.append(rule_event(report, self.run))

    def _finish(self, run: RunReport) -> None:
        deferred, self._deferred = self._deferred, []
        for event in deferred:
            self._send(event)
        if self._check_in_id is not None:
            self._check_in("ok" if run.exit_code == 0 else "error")

    def _check_in(self, status: str) -> None:
        """One Crons check-in; the final one carries the duration and ends the check-in."""
        event: dict[str, Any] = {
            "type": "check_in",
            "monitor_slug": self._monitor,
            "check_in_id": self._check_in_id,
            "status": status,
        }
        if status != "in_progress":
            event["duration"] = round(time.monotonic() - self._started, 3)
            self._check_in_id = None
        config = self.settings.monitor_config()
        if config:
            event["monitor_config"] = config
        if self.settings.environment:
            event["environment"] = self.settings.environment
        if self.settings.release:
            event["release"] = self.settings.release
        self._send(event)

    def _send(self, event: dict[str, Any]) -> None:
        if self.client is not None:
            self.client.capture_event(event, scope=Scope())  # type: ignore[arg-type]
        else:
            with sentry_sdk.new_scope() as scope:
                # The host's scopes apply, but ours win on the keys we set.
                for key, value in event.get("tags", {}).items():
                    scope.set_tag(key, value)
                if "level" in event:
                    scope.set_level(event["level"])
                sentry_sdk.capture_event(event)  # type: ignore[arg-type]
        self._pending = True

    def _flush(self) -> None:
        """Wait at most ``flush_timeout`` for delivery; a slow Sentry only costs that wait."""
        if not self._pending:
            return
        self._pending = False
        timeout = self.settings.flush_timeout
        clock = time.monotonic()
        if self.client is not None:
            self.client.flush(timeout=timeout)
        else:
            sentry_sdk.flush(timeout=timeout)
        if time.monotonic() - clock >= timeout * 0.95:
            log.warning(
                "sentry: events not delivered within %.1f s (server slow or unreachable); "
                "the run's result is unchanged",
                timeout,
            )

    def _guard(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn``; a failure to report is logged, never raised into the run."""
        try:
            fn(*args)
        except Exception as exc:
            log.warning(
                "sentry: reporting failed (%s: %s); the run goes on", type(exc).__name__, exc
            )


@hookimpl
def invariants_addoption(parser: argparse.ArgumentParser) -> None:
    """The command-line side of the Sentry settings."""
    group = parser.add_argument_group("sentry")
    group.add_argument(
        "--sentry-dsn",
        metavar="DSN",
        help="send violations to this Sentry DSN (default: SENTRY_DSN, [sentry] dsn; '' for off)",
    )
    group.add_argument(
        "--sentry-environment",
        metavar="NAME",
        help="the Sentry environment of the events (default: SENTRY_ENVIRONMENT, config)",
    )
    group.add_argument(
        "--monitor",
        dest="sentry_monitor",
        metavar="SLUG",
        help="check in to this Sentry Crons monitor at the start and end of the run",
    )


@hookimpl
def invariants_configure(config: Config) -> None:
    """Active when a DSN is configured or the host application already set up Sentry."""
    reporter = SentryReporter.create(config, read_settings(config))
    if reporter is not None:
        config.pluginmanager.register(reporter, "sentryreporter")
