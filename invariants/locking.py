"""One repairer at a time: a database-level lock held for the whole repair transaction."""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, RootTransaction
from sqlalchemy.exc import OperationalError

from invariants.errors import InvariantsError
from invariants.exitcodes import ExitCode

__all__ = ["LOCK_NAME", "LockTimeout", "repair_transaction"]

LOCK_NAME = "invariants.repair"
#: PostgreSQL advisory locks take a number; this one is derived from the name.
LOCK_KEY = zlib.crc32(LOCK_NAME.encode())


class LockTimeout(InvariantsError):
    """Another repairer held the lock for longer than ``--lock-timeout``."""

    exit_code = ExitCode.LOCKED


@contextlib.contextmanager
def repair_transaction(conn: Connection, timeout: float) -> Iterator[RootTransaction]:
    """A transaction holding the repair lock; raise :class:`LockTimeout` after ``timeout`` s.

    PostgreSQL: a transaction-level advisory lock. MariaDB / MySQL: ``GET_LOCK``, released
    after the transaction ends. SQLite: ``BEGIN IMMEDIATE``, which makes the transaction the
    only writer from its start. The caller commits; anything left open is rolled back.
    """
    name = conn.dialect.name
    if name == "sqlite":
        raw: Any = conn.connection.driver_connection
        raw.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        conn.info["invariants.sqlite_begin"] = "BEGIN IMMEDIATE"
    held_mysql = False
    try:
        try:
            tx = conn.begin()
        except OperationalError as exc:
            if name == "sqlite" and "locked" in str(exc.orig).lower():
                raise LockTimeout(_busy(timeout)) from None
            raise
        try:
            if name == "postgresql":
                _postgresql_lock(conn, timeout)
            elif name in ("mysql", "mariadb"):
                held_mysql = _mysql_lock(conn, timeout)
            yield tx
        finally:
            if tx.is_active:
                tx.rollback()
    finally:
        conn.info.pop("invariants.sqlite_begin", None)
        if held_mysql and not conn.invalidated:
            conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})
            conn.rollback()


def _postgresql_lock(conn: Connection, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not conn.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({LOCK_KEY})").scalar():
        if time.monotonic() >= deadline:
            raise LockTimeout(_busy(timeout))
        time.sleep(0.1)


def _mysql_lock(conn: Connection, timeout: float) -> bool:
    got = conn.execute(
        text("SELECT GET_LOCK(:name, :timeout)"), {"name": LOCK_NAME, "timeout": timeout}
    ).scalar()
    if got != 1:
        raise LockTimeout(_busy(timeout))
    return True


def _busy(timeout: float) -> str:
    return (
        f"another invariant-run --repair holds the repair lock; gave up after {timeout:g}s "
        "(raise --lock-timeout to wait longer)"
    )
