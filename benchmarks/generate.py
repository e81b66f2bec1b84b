"""Generate the billing database at N users with a known amount of each kind of drift.

Drift is chosen by the user id's residues, so every count is known in advance and the
same at every size. PostgreSQL is loaded with COPY, the others with batched inserts.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

from invariants_billing.models import Base
from sqlalchemy import insert
from sqlalchemy.engine import Connection, Engine

from invariants.database import engine_from_url

NOW = datetime(2026, 6, 1, 12, 0, 0)
DAY = timedelta(days=1)
BATCH = 20_000


def drift_counts(users: int) -> dict[str, int]:
    """How many violations of each rule :func:`generate` makes for ``users`` users."""
    ids = range(1, users + 1)
    return {
        "billing.profile_exists": sum(1 for g in ids if _no_profile(g)),
        "billing.subscription_not_active_past_expiry": sum(1 for g in ids if _stale(g)),
        "billing.premium_has_active_subscription": sum(
            1 for g in ids if not _no_profile(g) and (_stale(g) or _premium_without_sub(g))
        ),
        "billing.active_subscription_grants_premium": sum(
            1 for g in ids if not _no_profile(g) and _premium_lost(g)
        ),
        "billing.premium_until_matches_subscriptions": sum(
            1 for g in ids if not _no_profile(g) and _until_off(g)
        ),
        "billing.approved_payment_has_subscription": sum(
            1 for g in ids if _has_sub(g) and _orphan_payment(g)
        ),
    }


def _has_sub(g: int) -> bool:
    return g % 5 < 3


def _active(g: int) -> bool:
    return g % 5 < 2


def _stale(g: int) -> bool:  # expired, still marked active
    return g % 50 == 7


def _no_profile(g: int) -> bool:
    return g % 33 == 0


def _premium_lost(g: int) -> bool:
    return _active(g) and g % 25 == 1


def _until_off(g: int) -> bool:
    return _active(g) and g % 50 == 5


def _premium_without_sub(g: int) -> bool:
    return g % 100 == 3


def _orphan_payment(g: int) -> bool:
    return g % 100 == 11


def _expiry(g: int) -> datetime:
    if _active(g):
        return NOW + (g % 365 + 1) * DAY
    return NOW - (g % 300 + 1) * DAY


def rows(users: int) -> dict[str, Iterator[tuple]]:
    """Row generators per table, in column order."""

    def users_() -> Iterator[tuple]:
        for g in range(1, users + 1):
            yield (g, f"user{g}@example.com", NOW - (g % 1500 + 30) * DAY)

    def subscriptions() -> Iterator[tuple]:
        for g in range(1, users + 1):
            if _has_sub(g):
                status = "active" if _active(g) or _stale(g) else "expired"
                yield (g, g, status, _expiry(g) - 30 * DAY, _expiry(g))

    def profiles() -> Iterator[tuple]:
        for g in range(1, users + 1):
            if _no_profile(g):
                continue
            premium, until = _active(g), _expiry(g) if _active(g) else None
            if _premium_lost(g):
                premium, until = False, None
            elif _until_off(g):
                until = _expiry(g) - 3 * DAY
            elif _stale(g):
                premium, until = True, _expiry(g)
            elif _premium_without_sub(g) and not _has_sub(g):
                premium, until = True, NOW + 30 * DAY
            yield (g, g, premium, until)

    def payments() -> Iterator[tuple]:
        for g in range(1, users + 1):
            if _has_sub(g):
                sub = None if _orphan_payment(g) else g
                yield (g, g, sub, "approved", "9.90", _expiry(g) - 30 * DAY)

    return {
        "users": users_(),
        "subscriptions": subscriptions(),
        "profiles": profiles(),
        "payments": payments(),
    }


def generate(engine: Engine, users: int) -> float:
    """Drop, create and fill the billing tables; returns the seconds it took."""
    clock = time.perf_counter()
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
        Base.metadata.create_all(conn)
        for table, source in rows(users).items():
            if conn.dialect.name == "postgresql":
                _copy(conn, table, source)
            else:
                _batched(conn, table, source)
        if conn.dialect.name == "postgresql":
            for table in ("users", "subscriptions", "profiles", "payments"):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 1) FROM {table}))"
                )
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - clock


def _copy(conn: Connection, table: str, source: Iterator[tuple]) -> None:
    columns = [c.name for c in Base.metadata.tables[table].columns]
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        buffer = io.StringIO()
        for n, row in enumerate(source, 1):
            buffer.write("\t".join(r"\N" if v is None else str(v) for v in row) + "\n")
            if n % BATCH == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())


def _batched(conn: Connection, table: str, source: Iterator[tuple]) -> None:
    target = Base.metadata.tables[table]
    names = [c.name for c in target.columns]
    batch: list[dict] = []
    for row in source:
        batch.append(dict(zip(names, row, strict=True)))
        if len(batch) == BATCH:
            conn.execute(insert(target), batch)
            batch = []
    if batch:
        conn.execute(insert(target), batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--db", required=True, help="database URL (its billing tables are replaced)"
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    opts = parser.parse_args()
    engine = engine_from_url(opts.db, create=True)
    seconds = generate(engine, opts.users)
    print(f"generated {opts.users} users in {seconds:.1f}s; drift: {drift_counts(opts.users)}")


if __name__ == "__main__":
    main()
