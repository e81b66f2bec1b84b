"""The embedding API: build a configuration and run rules from Python, as every door does."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from sqlalchemy.engine import Engine

from invariants.collect import collect_rules, order_by_dependencies, select_rules
from invariants.config import Config, Settings, load_settings
from invariants.database import connect_check, engine_from_url
from invariants.errors import NoRulesError, UsageError
from invariants.plugins import InvariantsPluginManager, get_plugin_manager
from invariants.reports import RunReport
from invariants.rule import Rule
from invariants.session import Session

__all__ = ["configure", "make_config", "parse_scope", "run", "selected_rules"]


def configure(
    *,
    plugins: Iterable[str | ModuleType | object] = (),
    blocked: Iterable[str] = (),
    overrides: Mapping[str, Any] | None = None,
    options: argparse.Namespace | None = None,
    config_path: Path | None = None,
    discover: bool = True,
    environ: Mapping[str, str] | None = None,
    entrypoints: bool = True,
    stdout: TextIO | None = None,
) -> Config:
    """Load settings and plugins into a :class:`Config`, and call ``invariants_configure``.

    ``overrides`` are settings that win over the environment and config file, as the
    command line's do.
    """
    settings = load_settings(cli=overrides, environ=environ, path=config_path, discover=discover)
    pm = get_plugin_manager(
        plugins=[*settings.plugins, *plugins], blocked=blocked, entrypoints=entrypoints
    )
    return make_config(settings, pm, options, stdout)


def make_config(
    settings: Settings,
    pm: InvariantsPluginManager,
    options: argparse.Namespace | None = None,
    stdout: TextIO | None = None,
) -> Config:
    """Wrap settings and plugins in a :class:`Config` and let plugins configure themselves."""
    config = Config(settings, pm, options)
    config.stdout = stdout or sys.stdout
    pm.hook.invariants_configure(config=config)
    return config


def parse_scope(text: str | None) -> tuple[str, str] | None:
    """``"user_id=42"`` as ``("user_id", "42")``; anything else is a usage error."""
    if not text:
        return None
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise UsageError(f"--scope {text!r}: expected KEY=VALUE, e.g. --scope user_id=42")
    return key.strip(), value.strip()


def selected_rules(
    config: Config,
    *,
    patterns: Sequence[str] = (),
    keyword: str | None = None,
    tags: Sequence[str] = (),
    scope: tuple[str, str] | None = None,
) -> list[Rule]:
    """Collect, select, apply severity overrides and order the rules a run executes."""
    settings = config.settings
    known = collect_rules(config)
    for rule_id in settings.severity:
        if rule_id not in known:
            raise UsageError(f"config severity: unknown invariant {rule_id!r}")
    chosen = select_rules(
        known.values(),
        patterns=patterns,
        select=settings.select,
        deselect=settings.deselect,
        keyword=keyword,
        tags=tags,
    )
    chosen = [
        r.with_severity(settings.severity[r.id]) if r.id in settings.severity else r for r in chosen
    ]
    config.hook.invariants_collection_modifyitems(config=config, rules=chosen)
    if not chosen:
        raise NoRulesError(
            f"no invariant selected (of {len(known)} known; see invariant-run --list)"
        )
    if scope is not None and not any(r.scope_key == scope[0] for r in chosen):
        keys = sorted({r.scope_key for r in chosen if r.scope_key})
        have = f"selected rules scope by: {', '.join(keys)}" if keys else "no rule has a scope key"
        raise UsageError(f"--scope {scope[0]}=...: no selected invariant has that key ({have})")
    return order_by_dependencies(chosen, known)


def run(
    db: str | Engine | None = None,
    *,
    repair: bool = False,
    dry_run: bool = False,
    force: bool = False,
    history: bool = True,
    workers: int | None = None,
    scope: str | tuple[str, str] | None = None,
    select: Sequence[str] = (),
    keyword: str | None = None,
    tags: Sequence[str] = (),
    now: datetime | None = None,
    trigger: str = "api",
    config: Config | None = None,
    **configure_kwargs: Any,
) -> RunReport:
    """Run the selected rules against ``db`` (URL or engine) and return the run's report.

    This is what every door calls: the CLI, start-up hooks, the scheduler and the tests.
    """
    config = config or configure(**configure_kwargs)
    scope_pair = parse_scope(scope) if isinstance(scope, str) else scope
    rules = selected_rules(config, patterns=select, keyword=keyword, tags=tags, scope=scope_pair)
    if isinstance(db, Engine):
        engine = db
    else:
        url = db or config.settings.database_url
        if not url:
            raise UsageError("no database given: pass --db URL or set INVARIANTS_DATABASE_URL")
        engine = engine_from_url(url)
    try:
        if engine is not db:  # a URL of ours: fail early and clearly when it is unreachable
            connect_check(engine)
        session = Session(
            config,
            engine,
            rules,
            repair=repair,
            dry_run=dry_run,
            force=force,
            scope=scope_pair,
            now=now,
            trigger=trigger,
            history=history,
        )
        return session.run()
    finally:
        if engine is not db:
            engine.dispose()
