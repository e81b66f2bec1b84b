"""Engines from URLs with clear errors, dialect quirks, and per-statement timeouts."""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from invariants.config import redact_url
from invariants.errors import DatabaseError, UsageError

__all__ = ["connect_check", "engine_from_url", "statement_timeout"]

_DRIVER_HINTS = {
    "postgresql": "pip install 'invariants[postgresql]'",
    "mysql": "pip install 'invariants[mysql]'",
    "mariadb": "pip install 'invariants[mysql]'",
}
CONNECT_TIMEOUT = 10


def parse_url(url: str) -> URL:
    """Parse a database URL, or fail with one line saying what is wrong with it."""
    try:
        return make_url(url)
    except ArgumentError:
        raise UsageError(
            f"not a database URL: {redact_url(url)!s} (expected e.g. sqlite:///app.db or "
            "postgresql+psycopg://user@host/db)"
        ) from None


def engine_from_url(url: str, *, create: bool = False) -> Engine:
    """An engine for ``url``; SQLite gets real transactions and savepoints.

    A SQLite file that does not exist is an error unless ``create`` is true, so a typo in
    a path never leaves an empty database behind.
    """
    parsed = _installed_driver(parse_url(url))
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if parsed.drivername.partition("+")[2] in ("psycopg", "psycopg2", "pymysql"):
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    database = parsed.database or ""
    if backend == "sqlite" and not create and _is_missing_file(database):
        raise DatabaseError(f"cannot open database: SQLite file {database!r} does not exist")
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError:
        raise UsageError(
            f"unknown database dialect {parsed.drivername!r} in {redact_url(url)} "
            "(known: sqlite, postgresql, mysql, mariadb)"
        ) from None
    except ImportError as exc:
        hint = _DRIVER_HINTS.get(backend, "install its DBAPI driver")
        raise UsageError(
            f"the driver for {parsed.drivername!r} is not installed ({exc.name}): {hint}"
        ) from None
    if backend == "sqlite":
        enable_sqlite_transactions(engine)
    return engine


_FALLBACK_DRIVERS = {
    "postgresql": ("psycopg2", "postgresql+psycopg", "psycopg"),
    "mysql": ("MySQLdb", "mysql+pymysql", "pymysql"),
    "mariadb": ("mariadb", "mariadb+pymysql", "pymysql"),
}


def _installed_driver(url: URL) -> URL:
    """A bare ``postgresql://`` or ``mysql://`` uses the driver we install when theirs is absent."""
    if url.drivername not in _FALLBACK_DRIVERS:
        return url
    default, replacement, module = _FALLBACK_DRIVERS[url.drivername]
    if importlib.util.find_spec(default) is None and importlib.util.find_spec(module) is not None:
        return url.set(drivername=replacement)
    return url


def _is_missing_file(database: str) -> bool:
    if database in ("", ":memory:") or database.startswith("file:"):
        return False
    return not Path(database).is_file()


def enable_sqlite_transactions(engine: Engine) -> None:
    """Let SQLAlchemy, not pysqlite, emit BEGIN, so savepoints and rollbacks are exact."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = conn.info.get("invariants.sqlite_begin", "BEGIN")
        conn.exec_driver_sql(mode)


def connect_check(engine: Engine) -> None:
    """Open one connection now, so an unreachable database fails before any rule runs."""
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        raise DatabaseError(
            f"cannot connect to {redact_url(str(engine.url.render_as_string(False)))}: "
            f"{first_line(exc.orig or exc)}"
        ) from None


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


@contextlib.contextmanager
def statement_timeout(conn: Connection, seconds: float | None) -> Iterator[None]:
    """Stop statements running longer than ``seconds``, by whatever means the dialect has."""
    if not seconds:
        yield
        return
    name = conn.dialect.name
    if name == "postgresql":
        tx, millis = conn.get_transaction(), int(seconds * 1000)
        done = conn.info.get("invariants.statement_timeout")
        if done is None or done[0] is not tx or done[1] != millis:  # SET LOCAL lasts the tx
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {millis}")
            conn.info["invariants.statement_timeout"] = (tx, millis)
        yield
    elif name in ("mysql", "mariadb"):
        if getattr(conn.dialect, "is_mariadb", False):
            setting, value = "max_statement_time", f"{seconds:.3f}"
        else:
            setting, value = "max_execution_time", str(int(seconds * 1000))
        conn.exec_driver_sql(f"SET SESSION {setting} = {value}")
        try:
            yield
        finally:
            if not conn.invalidated:
                conn.exec_driver_sql(f"SET SESSION {setting} = 0")
    elif name == "sqlite":
        raw: Any = conn.connection.driver_connection
        deadline = time.monotonic() + seconds
        raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            yield
        except Exception as exc:
            # Ctrl-C inside the handler makes sqlite report "interrupted" and drop the
            # KeyboardInterrupt; an interruption before the deadline can only be that.
            if "interrupted" in str(exc) and time.monotonic() < deadline:
                raise KeyboardInterrupt from None
            raise
        finally:
            raw.set_progress_handler(None, 0)
    else:
        yield


def is_timeout(exc: BaseException) -> bool:
    """True when a database error says the statement ran out of time."""
    text = str(getattr(exc, "orig", exc)).lower()
    return any(
        marker in text
        for marker in (
            "statement timeout",
            "max_statement_time",
            "max_execution_time",
            "interrupted",
        )
    )
