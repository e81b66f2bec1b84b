"""The ``restore`` and ``history`` subcommands: undo a run, and show the runs so far."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from invariants.config import config_file, load_settings
from invariants.database import connect_check, engine_from_url
from invariants.errors import UsageError
from invariants.exitcodes import ExitCode

__all__ = ["history_main", "restore_main"]


def _common(parser: argparse.ArgumentParser) -> None:
    from invariants.cli import _add_plugin_options

    parser.add_argument("--db", dest="database_url", metavar="URL", help="SQLAlchemy database URL")
    _add_plugin_options(parser)  # -p is accepted for symmetry with a run; -c names the config


def _engine(opts: argparse.Namespace, extra: dict | None = None):
    settings = load_settings(
        cli={"database_url": opts.database_url, **(extra or {})},
        path=config_file(opts.config_file),
    )
    if not settings.database_url:
        raise UsageError("no database given: pass --db URL or set INVARIANTS_DATABASE_URL")
    engine = engine_from_url(settings.database_url)
    connect_check(engine)
    return engine, settings


def restore_main(argv: Sequence[str]) -> int:
    """Put back what a repair run changed; stop on rows changed since, unless --force."""
    from invariants.cli import PROG, _nonnegative_float, _Parser
    from invariants.restore import RestoreConflict, restore_run

    parser = _Parser(prog=f"{PROG} restore", description="Undo the changes of a repair run.")
    parser.add_argument("run_id", metavar="RUN_ID", help="the run to undo (see history)")
    parser.add_argument("--rule", metavar="ID", help="only that rule's changes")
    parser.add_argument("--force", action="store_true", help="overwrite rows changed since")
    parser.add_argument("--dry-run", action="store_true", help="show what would be restored")
    parser.add_argument("--lock-timeout", type=_nonnegative_float, metavar="SECONDS")
    _common(parser)
    opts = parser.parse_args(argv)
    engine, settings = _engine(opts, {"lock_timeout": opts.lock_timeout})
    try:
        result = restore_run(
            engine,
            opts.run_id,
            rule=opts.rule,
            force=opts.force,
            dry_run=opts.dry_run,
            lock_timeout=settings.lock_timeout,
        )
    except RestoreConflict as exc:
        print(
            f"restore: {exc.count} rows changed since run {opts.run_id} repaired them; "
            "nothing was restored:"
        )
        for row in exc.sample:
            print(f"  {row['table_name']} {row['pk']}  ({row['action']} by {row['rule_id']})")
        print("re-run with --force to overwrite them with the journalled values")
        return ExitCode.VIOLATIONS
    finally:
        engine.dispose()
    verb = "would put back" if result.dry_run else "put back"
    print(
        f"restore {result.restore_id}: {verb} {result.rows} rows changed by run {opts.run_id} "
        f"(rules: {', '.join(sorted(result.rules))})"
    )
    for table, n in sorted(result.by_table.items()):
        print(f"  {n:>7}  {table}")
    if result.dry_run:
        print("dry run: nothing was changed")
    return ExitCode.OK


def history_main(argv: Sequence[str]) -> int:
    """Show recent runs, or one rule's trend across runs."""
    from invariants.cli import PROG, _nonnegative_int, _Parser
    from invariants.history import HistoryRow, read_history
    from invariants.reporters.files import jsonable

    parser = _Parser(prog=f"{PROG} history", description="Show the recorded runs.")
    parser.add_argument("--rule", metavar="ID", help="only this rule's trend")
    parser.add_argument(
        "--last", type=_nonnegative_int, default=10, metavar="N", help="how many runs (default: 10)"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    _common(parser)
    opts = parser.parse_args(argv)
    engine, _ = _engine(opts)
    try:
        from sqlalchemy import inspect

        with engine.connect() as conn:
            rows: Sequence[HistoryRow] = []
            if "invariants_runs" in inspect(conn).get_table_names():
                rows = read_history(conn, rule=opts.rule, last=opts.last)
    finally:
        engine.dispose()
    if opts.format == "json":
        document = [{k: jsonable(v) for k, v in vars(r).items()} for r in rows]
        json.dump({"schema_version": 1, "runs": document}, sys.stdout, indent=2)
        print()
        return ExitCode.OK
    if not rows:
        print("no runs recorded yet")
        return ExitCode.OK
    current = None
    for row in rows:
        if row.run_id != current:
            current = row.run_id
            what = (
                "restore of " + row.restores
                if row.restores
                else ("repair" if row.repair else "check")
            )
            print(
                f"{row.started_at:%Y-%m-%d %H:%M:%S}  run {row.run_id}  {row.trigger:<8} "
                f"{what:<28} exit {row.exit_code}"
            )
        if row.rule_id:
            changed = f", {row.rows_changed} changed" if row.rows_changed else ""
            count = "-" if row.count is None else row.count
            print(f"    {row.rule_id:<50} {row.outcome:<9} {count} rows{changed}")
    return ExitCode.OK
