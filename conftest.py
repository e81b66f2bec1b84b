"""Test fixtures: real databases (SQLite always; PostgreSQL and MariaDB on loopback).

Each test session creates one throw-away database per server and drops it at the end;
each test gets it empty. Without a server the tests for it skip with the reason, unless
``INVARIANTS_REQUIRE_SERVERS=1`` (set by ``.ci/run``), where a missing server fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from invariants.database import enable_sqlite_transactions

SERVERS = {
    "postgresql": os.environ.get(
        "INVARIANTS_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
    "mariadb": os.environ.get(
        "INVARIANTS_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/"
    ),
}
DIALECTS = ("sqlite", "postgresql", "mariadb")
REQUIRE_SERVERS = os.environ.get("INVARIANTS_REQUIRE_SERVERS") == "1"


def _unavailable(name: str, reason: str) -> None:
    message = f"{name} server not reachable at {SERVERS[name]}: {reason}"
    if REQUIRE_SERVERS:
        pytest.fail(f"{message} (INVARIANTS_REQUIRE_SERVERS=1: servers are required)")
    pytest.skip(message)


class ServerDatabase:
    """A throw-away database on one server, emptied between tests."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.admin = create_engine(SERVERS[name], isolation_level="AUTOCOMMIT")
        self.dbname = f"inv_test_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {self.dbname}"))
        self.url = make_url(SERVERS[name]).set(database=self.dbname).render_as_string(False)

    def reset(self) -> None:
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            if self.name == "postgresql":
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
            else:
                conn.execute(text(f"DROP DATABASE {self.dbname}"))
                conn.execute(text(f"CREATE DATABASE {self.dbname}"))
        engine.dispose()

    def drop(self) -> None:
        with self.admin.connect() as conn:
            if self.name == "postgresql":
                conn.execute(text(f"DROP DATABASE IF EXISTS {self.dbname} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {self.dbname}"))
        self.admin.dispose()


@pytest.fixture(scope="session")
def server_databases() -> Iterator[dict[str, ServerDatabase | str]]:
    """One throw-away database per reachable server (or the reason it is unreachable)."""
    made: dict[str, ServerDatabase | str] = {}
    for name in SERVERS:
        try:
            made[name] = ServerDatabase(name)
        except Exception as exc:
            made[name] = str(exc).splitlines()[0]
    yield made
    for db in made.values():
        if isinstance(db, ServerDatabase):
            db.drop()


@pytest.fixture(params=DIALECTS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, server_databases: dict) -> str:
    """An empty database of each dialect, as a URL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    db = server_databases[request.param]
    if isinstance(db, str):
        _unavailable(request.param, db)
    db.reset()
    return db.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty SQLite database file, as a URL."""
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on an empty database of each dialect."""
    eng = create_engine(db_url)
    if eng.dialect.name == "sqlite":
        enable_sqlite_transactions(eng)
    yield eng
    eng.dispose()
