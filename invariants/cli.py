"""``invariant-run``: the command line, a thin door into the same runner as every other."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from invariants import __version__
from invariants.api import make_config, parse_scope, run, selected_rules
from invariants.collect import collect_rules
from invariants.config import Config, config_file, load_settings
from invariants.errors import InvariantsError, UsageError
from invariants.exitcodes import ExitCode
from invariants.plugins import get_plugin_manager
from invariants.rule import Rule

__all__ = ["build_parser", "main"]

PROG = "invariant-run"


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every usage error is one line and code 4."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The options of a check / repair run (plugins add theirs through a hook)."""
    parser = _Parser(
        prog=prog,
        description="Check (and repair) your database's invariants.",
        epilog="Subcommands: demo, plugins, restore RUN_ID, history. Exit codes: 0 ok, "
        "1 violations, 2 interrupted, 3 internal error, 4 usage error, 5 no rules, "
        "6 repair lock busy.",
    )
    parser.add_argument("rules", nargs="*", metavar="RULE", help="rule ids or globs to run")
    parser.add_argument("--db", dest="database_url", metavar="URL", help="SQLAlchemy database URL")
    parser.add_argument(
        "-k",
        dest="keyword",
        metavar="EXPR",
        help="only rules whose id or tags match the keyword expression",
    )
    parser.add_argument(
        "--tag",
        dest="tags",
        action="append",
        default=[],
        metavar="TAG",
        help="only rules with this tag (repeatable)",
    )
    parser.add_argument(
        "--scope", metavar="KEY=VALUE", help="check one entity only, e.g. --scope user_id=42"
    )
    parser.add_argument("--repair", action="store_true", help="repair what is violated")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="with --repair: show what would change, change nothing",
    )
    parser.add_argument("--force", action="store_true", help="repair past max_repair_rows limits")
    parser.add_argument(
        "--lock-timeout",
        type=_nonnegative_float,
        metavar="SECONDS",
        help="how long a repair waits for another repairer (default: 60)",
    )
    parser.add_argument(
        "-n",
        "--workers",
        type=_nonnegative_int,
        metavar="N",
        help="check independent rules at once on N connections (check-only runs)",
    )
    parser.add_argument(
        "--no-history", action="store_true", help="do not record this run in the run history"
    )
    parser.add_argument("--list", action="store_true", help="list the selected rules and exit")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more detail: sample rows (-v), SQL (-vv)",
    )
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less detail")
    parser.add_argument(
        "--format",
        choices=("text", "json", "junit"),
        default="text",
        help="report format (default: text)",
    )
    parser.add_argument("--output", metavar="FILE", help="write the report to FILE")
    parser.add_argument(
        "--fail-on",
        dest="fail_on",
        choices=("error", "warning", "info"),
        help="lowest severity whose violations fail the run (default: error)",
    )
    parser.add_argument(
        "--sample",
        type=_nonnegative_int,
        metavar="N",
        help="sample rows kept per rule (default: 10)",
    )
    parser.add_argument(
        "--now",
        type=_iso_datetime,
        metavar="ISO",
        help="evaluate rules as of this naive-UTC time (reproducible runs)",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show the traceback of an internal error"
    )
    _add_plugin_options(parser)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _add_plugin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p",
        dest="plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="load a plugin module; -p no:NAME blocks one",
    )
    parser.add_argument(
        "-c",
        "--config",
        dest="config_file",
        metavar="FILE",
        help="config file (default: nearest invariants.toml / pyproject.toml)",
    )


def _nonnegative(kind: type, noun: str) -> Callable[[str], Any]:
    """An argparse type accepting numbers of ``kind`` that are 0 or more."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
        return value

    return parse


_nonnegative_int = _nonnegative(int, "a whole number")
_nonnegative_float = _nonnegative(float, "a number")


def _iso_datetime(text: str) -> object:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date-time: {text!r}") from None


def _preparse(argv: Sequence[str]) -> argparse.Namespace:
    """The options needed before plugins load: -p and --config."""
    pre = _Parser(add_help=False)
    _add_plugin_options(pre)
    known, _ = pre.parse_known_args(argv)
    return known


def load(argv: Sequence[str], parser_factory: Callable[[], argparse.ArgumentParser]) -> Config:
    """Parse ``argv`` in two passes (plugins first, then their options) into a Config."""
    pre = _preparse(argv)
    blocked = [p[3:] for p in pre.plugins if p.startswith("no:")]
    wanted = [p for p in pre.plugins if not p.startswith("no:")]
    config_path = config_file(pre.config_file)
    early = load_settings(path=config_path)
    pm = get_plugin_manager(plugins=[*early.plugins, *wanted], blocked=blocked)
    parser = parser_factory()
    pm.hook.invariants_addoption.call_historic(kwargs={"parser": parser})
    options = parser.parse_args(argv)
    keys = ("database_url", "sample", "fail_on", "lock_timeout", "workers")
    cli = {key: getattr(options, key, None) for key in keys}
    return make_config(load_settings(cli=cli, path=config_path), pm, options)


def _run(argv: Sequence[str]) -> int:
    config = load(argv, build_parser)
    opts = config.option
    try:
        scope = parse_scope(opts.scope)
        if opts.list:
            rules = selected_rules(
                config, patterns=opts.rules, keyword=opts.keyword, tags=opts.tags, scope=scope
            )
            _print_list(config, rules)
            return ExitCode.OK
        if opts.dry_run and not opts.repair:
            raise UsageError("--dry-run goes with --repair (a plain run changes nothing anyway)")
        report = run(
            repair=opts.repair,
            dry_run=opts.dry_run,
            force=opts.force,
            history=not opts.no_history,
            scope=scope,
            select=opts.rules,
            keyword=opts.keyword,
            tags=opts.tags,
            now=opts.now,
            trigger="ci" if os.environ.get("CI") else "cli",
            config=config,
        )
        return report.exit_code
    finally:
        config.hook.invariants_unconfigure(config=config)


def _print_list(config: Config, rules: Sequence[Rule]) -> None:
    out = config.stdout
    for rule in rules:
        repair = "repair" if rule.repair_fn else "check-only"
        deps = f" after {', '.join(rule.depends_on)}" if rule.depends_on else ""
        scope = f" scope={rule.scope_key}" if rule.scope_key else ""
        tags = f" [{', '.join(sorted(rule.tags))}]" if rule.tags else ""
        print(f"{rule.id}  {rule.severity}  {repair}{scope}{tags}{deps}", file=out)
        if config.option.verbose:
            print(f"    {rule.description}", file=out)
    print(f"\n{len(rules)} rules selected", file=out)


def _plugins(argv: Sequence[str]) -> int:
    def parser() -> argparse.ArgumentParser:
        listing = _Parser(prog=f"{PROG} plugins", description="List the registered plugins.")
        _add_plugin_options(listing)
        return listing

    config = load(argv, parser)
    collect_rules(config)
    rules = Counter(config.rule_plugins.values())
    for name, origin, version, hooks in config.pluginmanager.plugin_listing():
        print(f"{name:<12} {version:<8} {origin}", file=config.stdout)
        print(f"    hooks: {', '.join(hooks) or '-'}", file=config.stdout)
        if rules[name]:
            print(f"    rules: {rules[name]}", file=config.stdout)
    return ExitCode.OK


def _demo(argv: Sequence[str]) -> int:
    from invariants.demo import demo_main

    return demo_main(argv)


def _restore(argv: Sequence[str]) -> int:
    from invariants.maintenance import restore_main

    return restore_main(argv)


def _history(argv: Sequence[str]) -> int:
    from invariants.maintenance import history_main

    return history_main(argv)


SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "demo": _demo,
    "plugins": _plugins,
    "restore": _restore,
    "history": _history,
}


def _split_subcommand(
    argv: list[str],
) -> tuple[Callable[[Sequence[str]], int] | None, list[str]]:
    """Find a subcommand among the arguments (``--db URL history`` works like ``history``).

    A word right after an option is that option's value unless the option is a known flag,
    so ``--sentry-environment demo`` never runs the demo.
    """
    flags = _flags()
    previous = ""
    for i, arg in enumerate(argv):
        takes_value = previous.startswith("-") and "=" not in previous and previous not in flags
        if not arg.startswith("-") and not takes_value:
            command = SUBCOMMANDS.get(arg)
            return (command, argv[:i] + argv[i + 1 :]) if command else (None, argv)
        previous = arg
    return None, argv


def _flags() -> set[str]:
    """The option strings of the run parser that take no value."""
    return {
        flag
        for action in build_parser()._actions
        if action.nargs == 0
        for flag in action.option_strings
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``invariant-run``; returns the exit code (see :class:`ExitCode`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command, argv = _split_subcommand(argv)
    try:
        return int(command(argv) if command else _run(argv))
    except InvariantsError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return int(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if "--traceback" in argv:
            traceback.print_exc()
        else:
            print(f"{PROG}: (run again with --traceback for details)", file=sys.stderr)
        return int(ExitCode.INTERNAL_ERROR)
