"""``invariant-run demo``: a billing database with the original system's drift, then a check."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import inspect

from invariants.errors import UsageError
from invariants.exitcodes import ExitCode

__all__ = ["DEFAULT_URL", "demo_main"]

DEFAULT_URL = "sqlite:///demo.db"
_TABLES = ("users", "profiles", "subscriptions", "payments")


def _parser() -> argparse.ArgumentParser:
    from invariants.cli import PROG, _Parser

    parser = _Parser(
        prog=f"{PROG} demo",
        description="Create a billing database with drift in it, then check it.",
    )
    parser.add_argument(
        "--db",
        default=DEFAULT_URL,
        metavar="URL",
        help=f"where to create the demo data (default: {DEFAULT_URL})",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=3000,
        metavar="N",
        help="how many users to create (default: 3000)",
    )
    parser.add_argument(
        "--reset", action="store_true", help="drop existing billing tables at --db first"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


def demo_main(argv: Sequence[str]) -> int:
    """Build the demo database and run the checks on it, as a first run would."""
    from invariants_billing.demo import drop, populate

    from invariants.cli import main as cli_main
    from invariants.database import connect_check, engine_from_url
    from invariants.session import utcnow

    opts = _parser().parse_args(argv)
    if opts.users < 10:
        raise UsageError("--users must be at least 10")
    url = opts.db
    if url == DEFAULT_URL:
        Path("demo.db").unlink(missing_ok=True)
    engine = engine_from_url(url, create=True)
    try:
        connect_check(engine)
        with engine.begin() as conn:
            existing = set(inspect(conn).get_table_names()) & set(_TABLES)
            if existing and not opts.reset:
                raise UsageError(
                    f"{url}: tables {', '.join(sorted(existing))} exist already; "
                    "pass --reset to drop and recreate them"
                )
            if existing:
                drop(conn)
            drift = populate(conn, users=opts.users, now=utcnow())
    finally:
        engine.dispose()
    shown = engine.url.render_as_string(hide_password=True)
    print(f"demo: created {opts.users} users in {shown} with drift of {len(drift)} kinds:")
    for rule_id, n in drift.items():
        print(f"  {n:>5}  {rule_id}")
    print()
    code = cli_main(["--db", url, "-p", "no:sentry", *(["-v"] * opts.verbose)])
    print()
    if code == ExitCode.VIOLATIONS:
        print("Next, preview the repair (nothing changes), then run it:")
        print(f"  invariant-run --db {shown} --repair --dry-run")
        print(f"  invariant-run --db {shown} --repair")
    sys.stdout.flush()
    return ExitCode.OK if code in (ExitCode.OK, ExitCode.VIOLATIONS) else code
